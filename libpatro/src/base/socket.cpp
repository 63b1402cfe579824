#include "socket.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ids.hpp"
#include "patro/error.hpp"

#if defined(__SANITIZE_THREAD__)
#define PATRO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PATRO_TSAN 1
#endif
#endif

#ifdef PATRO_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
#endif

namespace patro::detail {

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, const Limits& limits) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, limits.high_water_mark);
  s.set(zmq::sockopt::rcvhwm, limits.high_water_mark);
  s.set(zmq::sockopt::maxmsgsize, limits.socket_message_cap());
  if (type == zmq::socket_type::router) {
    s.set(zmq::sockopt::router_mandatory, 1);
    s.set(zmq::sockopt::router_handover, 1);
  } else if (type == zmq::socket_type::dealer) {
    char id[kRoutingIdSize] = {'p'};
    const uint64_t r = random_id();
    std::memcpy(id + 1, &r, sizeof r);
    s.set(zmq::sockopt::routing_id, std::string_view(id, sizeof id));
  }
  return s;
}

void set_curve_server(zmq::socket_t& s, const CurveKeyPair& keys, const std::string& zap_domain) {
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  s.set(zmq::sockopt::zap_domain, zap_domain);
}

std::string zap_curve_key(const Multipart& request) {
  if (request.size() < 7 || request[5].to_string_view() != "CURVE" || request[6].size() != 32)
    return {};
  char z85[41] = {};
  zmq_z85_encode(z85, static_cast<const uint8_t*>(request[6].data()), 32);
  return z85;
}

void zap_answer(zmq::socket_t& rep, Multipart& request, bool ok, const std::string& text,
                const std::string& user) {
  Multipart out;
  out.push_back(zmq::message_t(std::string_view("1.0")));
  out.push_back(request.size() >= 2 ? std::move(request[1]) : zmq::message_t());
  out.push_back(zmq::message_t(std::string_view(ok ? "200" : "400")));
  out.push_back(zmq::message_t(std::string_view(ok ? "OK" : text)));
  out.push_back(zmq::message_t(std::string_view(ok ? user : std::string())));
  out.push_back(zmq::message_t());
  send_multipart(rep, out, false);
}

void set_curve_client(zmq::socket_t& s, const CurveOptions& options, const CurveKeyPair& keys) {
  s.set(zmq::sockopt::curve_serverkey, options.broker_key);
  s.set(zmq::sockopt::curve_publickey, keys.public_key);
  s.set(zmq::sockopt::curve_secretkey, keys.secret_key);
}

CurveOptions resolve_curve(const CurveOptions& options) {
  CurveOptions out = options;
  if (out.broker_key.empty())
    if (const char* env = std::getenv("PATRO_BROKER_KEY"); env != nullptr && *env != '\0')
      out.broker_key = read_public_key(env);
  if (!out.enabled()) return out;
  if (!is_curve_key(out.broker_key))
    throw Error(Errc::invalid_argument, "the broker key '" + out.broker_key +
                                            "' is not a Z85 CURVE public key (40 characters)");
  if (out.keys.empty()) out.keys = curve_key_from_environment();
  if (out.keys.empty()) out.keys = curve_keypair();
  return out;
}

namespace {
std::atomic<uint64_t> watch_count{0};
}  // namespace

zmq::socket_t monitor_socket(zmq::context_t& ctx, zmq::socket_t& s, int events) {
  const std::string address = "inproc://patro-monitor-" + std::to_string(::getpid()) + "-" +
                              std::to_string(watch_count.fetch_add(1));
  if (zmq_socket_monitor(s.handle(), address.c_str(), events) != 0)
    throw Error(Errc::os_failure,
                std::string("cannot monitor a socket: ") + zmq_strerror(zmq_errno()));
  zmq::socket_t out(ctx, zmq::socket_type::pair);
  out.set(zmq::sockopt::linger, 0);
  out.connect(address);
  return out;
}

HandshakeWatch::HandshakeWatch(zmq::context_t& ctx, zmq::socket_t& s)
    : watched_(&s),
      events_(monitor_socket(ctx, s,
                             ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED)) {}

HandshakeWatch::~HandshakeWatch() {
  if (watched_->handle() != nullptr) zmq_socket_monitor(watched_->handle(), nullptr, 0);
}

std::optional<std::string> HandshakeWatch::wait(std::chrono::milliseconds timeout, bool curve) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int resets = 0;  // handshakes a plaintext client saw broken off
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !poll_in(events_, left)) return std::nullopt;
    Multipart ev;
    if (!recv_multipart(events_, ev, true) || ev.empty() || ev[0].size() < 6) continue;
    uint16_t event;
    uint32_t value;
    std::memcpy(&event, ev[0].data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev[0].data()) + 2, 4);
    switch (event) {
      case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
        return std::nullopt;
      case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        return "the broker refused this key (status " + std::to_string(value) +
               "): it is not on the broker's allow list for this port";
      case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: {
        // NO_DETAIL carries an errno: the connection broke during the handshake. Once, that is
        // a broker that died or restarted meanwhile (ZeroMQ reconnects by itself, so a plaintext
        // client waits on); twice in a row, it is a broker that drops our greeting: a CURVE
        // broker resets a plaintext client before its own greeting is read (the mechanism
        // mismatch libzmq would report otherwise). Under CURVE a broker that cannot decrypt our
        // hello also just drops the connection, so there it is most likely the key. PROTOCOL
        // carries a ZMTP error.
        const bool reset = event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && !curve;
        if (reset && ++resets < 2) continue;
        if (reset)
          return std::string("the broker broke off the handshake twice in a row (") +
                 std::strerror(static_cast<int>(value)) +
                 "): it most likely requires CURVE: give its public key (--broker-key, "
                 "PATRO_BROKER_KEY, or a config that carries it) and a key pair it allows "
                 "(--curve-key or PATRO_CURVE_KEY); or it is full (its --max-connections)";
        char code[32];
        std::snprintf(code, sizeof code, "0x%x", static_cast<unsigned>(value));
        const bool mismatch = value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH;
        if (mismatch && curve)
          return std::string("the broker does not use CURVE, but a broker key was given");
        if (mismatch)
          return std::string(
                     "the broker requires CURVE: give its public key (--broker-key, "
                     "PATRO_BROKER_KEY, or a config that carries it) and a key pair it "
                     "allows (--curve-key or PATRO_CURVE_KEY) (handshake error ") +
                 code + ")";
        if (!curve)
          return std::string("the handshake with the broker failed (ZMTP error ") + code + ")";
        return std::string("the CURVE handshake failed (error ") + code +
               "): is the broker key right?";
      }
      case ZMQ_EVENT_DISCONNECTED:
        if (curve)
          return std::string(
              "the broker closed the connection during the CURVE handshake: is the broker key "
              "right?");
        continue;
      default:
        continue;
    }
  }
}

DisconnectWatch::DisconnectWatch(zmq::context_t& ctx, zmq::socket_t& s)
    : watched_(&s), events_(monitor_socket(ctx, s, ZMQ_EVENT_DISCONNECTED)) {}

DisconnectWatch::~DisconnectWatch() {
  if (watched_->handle() != nullptr) zmq_socket_monitor(watched_->handle(), nullptr, 0);
}

bool DisconnectWatch::disconnected() {
  bool lost = false;
  Multipart ev;
  for (int n = 0; n < 64 && recv_multipart(events_, ev, true); ++n) {
    uint16_t event = 0;
    if (!ev.empty() && ev[0].size() >= 2) std::memcpy(&event, ev[0].data(), 2);
    lost = lost || event == ZMQ_EVENT_DISCONNECTED;
  }
  return lost;
}

bool recv_multipart(zmq::socket_t& s, Multipart& out, bool dontwait) {
  out.clear();
  const auto flags = dontwait ? zmq::recv_flags::dontwait : zmq::recv_flags::none;
  for (;;) {
    zmq::message_t msg;
    auto r = s.recv(msg, out.empty() ? flags : zmq::recv_flags::none);
    if (!r) {
      if (out.empty()) return false;
      continue;  // cannot happen for the rest of a multipart message; retry on EINTR
    }
#ifdef PATRO_TSAN
    __tsan_acquire(msg.data());
#endif
    const bool more = msg.more();
    out.push_back(std::move(msg));
    if (!more) return true;
  }
}

bool send_multipart(zmq::socket_t& s, Multipart& frames, bool dontwait) {
  const size_t n = frames.size();
  for (size_t i = 0; i < n; ++i) {
    auto flags = i + 1 < n ? zmq::send_flags::sndmore : zmq::send_flags::none;
    if (dontwait) flags = flags | zmq::send_flags::dontwait;
#ifdef PATRO_TSAN
    __tsan_release(frames[i].data());
#endif
    try {
      if (!s.send(frames[i], flags)) return false;  // EAGAIN: nothing of the message was queued
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) return false;
      throw;
    }
  }
  return true;
}

std::string message_property(const zmq::message_t& m, const char* name) {
#ifdef PATRO_TSAN
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
#endif
  const char* v = zmq_msg_gets(const_cast<zmq_msg_t*>(m.handle()), name);
  std::string copy = v ? std::string(v) : std::string();
#ifdef PATRO_TSAN
  AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
#endif
  return copy;
}

#ifdef PATRO_TSAN
namespace {
char reply_marks[4096];  // one sync address per request id (collisions only add order)
}
void annotate_sent(uint64_t request_id) noexcept {
  __tsan_release(&reply_marks[request_id % sizeof reply_marks]);
}
void annotate_received(uint64_t request_id) noexcept {
  __tsan_acquire(&reply_marks[request_id % sizeof reply_marks]);
}
#else
void annotate_sent(uint64_t) noexcept {}
void annotate_received(uint64_t) noexcept {}
#endif

bool poll_in(zmq::socket_t& s, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  try {
    return zmq::poll(&item, 1, timeout) > 0 && (item.revents & ZMQ_POLLIN);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

}  // namespace patro::detail
