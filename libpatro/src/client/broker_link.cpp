#include "broker_link.hpp"

#include <algorithm>

#include "endpoint.hpp"
#include "log.hpp"

namespace patro::detail {

Multipart control_frames(Command command, uint64_t id, const flatbuffers::FlatBufferBuilder& fb) {
  Multipart m;
  m.push_back(header_frame(command));
  m.push_back(u64_frame(id));
  m.push_back(body_frame(fb));
  return m;
}

flatbuffers::FlatBufferBuilder hello_body(uint64_t client_id) {
  flatbuffers::FlatBufferBuilder fb(64);
  fb.Finish(
      wire::CreateControl(fb, wire::ControlBody::Hello, wire::CreateHello(fb, client_id).Union()),
      wire::ControlIdentifier());
  return fb;
}

std::chrono::milliseconds silence_allowed(bool several, bool beating,
                                          std::chrono::milliseconds window,
                                          std::chrono::milliseconds interval) noexcept {
  return several && beating ? std::min(window, interval * 7 / 4) : window;
}

BrokerLink::BrokerLink(zmq::context_t& ctx, std::vector<std::string> brokers,
                       const ClientOptions& options, const CurveOptions& curve, uint64_t client_id,
                       LinkTiming& timing)
    : ctx_(ctx),
      brokers_(std::move(brokers)),
      options_(options),
      curve_(curve),
      client_id_(client_id),
      timing_(timing) {}

BrokerLink::~BrokerLink() {
  drop_socket();
}

void BrokerLink::drop_socket() noexcept {
  watch_.reset();
  if (sock_.handle() == nullptr) return;
  sock_.set(zmq::sockopt::linger, 0);
  sock_.close();
}

void BrokerLink::new_socket() {
  watch_.reset();
  sock_ = make_socket(ctx_, zmq::socket_type::dealer, options_.limits);
  if (curve_.enabled()) set_curve_client(sock_, curve_, curve_.keys);
}

BrokerLink::Opened BrokerLink::open(size_t index, std::chrono::milliseconds budget) {
  const std::string& endpoint = brokers_.at(index);
  new_socket();
  const bool curve = curve_.enabled();
  std::optional<std::string> failure;
  try {
    // The handshake first: a refused key or a mismatched mechanism is a clear error at once, and
    // nothing of ours reaches the broker.
    HandshakeWatch watch(ctx_, sock_);
    sock_.connect(endpoint);
    failure = watch.wait(budget, curve);
  } catch (const zmq::error_t& e) {
    if (is_usage_errno(e.num()))
      throw Error(Errc::invalid_argument, bad_endpoint(endpoint, e.what()));
    return Opened{false, false, e.what()};
  }
  if (failure) {
    sock_.close();
    return Opened{
        false, true,
        *failure + (curve ? " (client key " + key_fingerprint(curve_.keys.public_key) + ")" : "")};
  }
  beats_.start(Clock::now(), options_.heartbeat.interval);
  return Opened{true, false, {}};
}

void BrokerLink::welcomed(size_t index, const wire::Welcome& welcome) {
  endpoint_ = brokers_.at(index);
  index_ = index;
  instance_ = welcome.instance();
  heard_version(welcome);
  server_endpoint_ = welcome.server_endpoint() ? welcome.server_endpoint()->str() : std::string();
  if (several()) watch_ = std::make_unique<DisconnectWatch>(ctx_, sock_);
  const uint32_t theirs = welcome.heartbeat_ms();
  if (theirs > 0 && theirs < timing_.heartbeat_ms.load()) timing_.heartbeat_ms = theirs;
  if (theirs > 0) timing_.interval_ms = theirs;
  if (theirs > 0 && welcome.liveness() > 0)
    timing_.window_ms = int64_t{theirs} * welcome.liveness();
  // The broker's faster interval applies now: the first heartbeat must not wait for ours, or a
  // broker with a shorter window drops this client during a long call.
  beats_.beat_within(Clock::now(), timing_.heartbeat());
}

std::string BrokerLink::move(std::optional<size_t> to, uint64_t rid, Clock::time_point now) {
  index_ = to.value_or((index_ + 1) % brokers_.size());
  std::string from = std::move(endpoint_);
  endpoint_ = brokers_[index_];
  drop_socket();
  new_socket();
  wire_version_ = kWireVersion;  // until its Welcome says more
  try {
    sock_.connect(endpoint_);
  } catch (const zmq::error_t& e) {
    PATRO_LOG(warn, "client") << "cannot connect to " << endpoint_ << ": " << e.what();
  }
  watch_ = std::make_unique<DisconnectWatch>(ctx_, sock_);
  // Its first heartbeat names it without counting as a restart (that would resend all again).
  instance_ = 0;
  beats_.start(now, std::chrono::milliseconds(0));  // our first beat at once
  Multipart hello = control_frames(Command::hello, rid, hello_body(client_id_));
  send(hello, true, "hello");
  return from;
}

void BrokerLink::close() noexcept {
  watch_.reset();
  if (sock_.handle() == nullptr) return;
  try {
    Multipart bye;
    bye.push_back(header_frame(Command::disconnect));
    send_multipart(sock_, bye, true);
    sock_.set(zmq::sockopt::linger, static_cast<int>(options_.limits.close_linger.count()));
    sock_.close();
  } catch (const zmq::error_t&) {
  }
}

bool send_logged(zmq::socket_t& s, Multipart& m, bool dontwait, const char* what) noexcept {
  try {
    if (send_multipart(s, m, dontwait)) return true;
    if (!dontwait) PATRO_LOG(warn, "client") << "a " << what << " was not sent";
  } catch (const zmq::error_t& e) {
    PATRO_LOG(warn, "client") << what << " failed: " << e.what();
  }
  return false;
}

bool BrokerLink::send(Multipart& m, bool dontwait, const char* what) noexcept {
  return send_logged(sock_, m, dontwait, what);
}

bool BrokerLink::receive(Multipart& m, Clock::time_point now, bool& was_silent) {
  if (!recv_multipart(sock_, m, true)) return false;
  was_silent = beats_.heard(now);
  return true;
}

bool BrokerLink::readable() {
  return (sock_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
}

void BrokerLink::beat(Clock::time_point now) {
  if (!beats_.beat_due(now, timing_.heartbeat())) return;
  Multipart hb;
  hb.push_back(header_frame(Command::heartbeat));
  hb.push_back(u64_frame(client_id_));
  try {
    send_multipart(sock_, hb, true);
  } catch (const zmq::error_t&) {
  }
}

void BrokerLink::locate(uint64_t server) {
  flatbuffers::FlatBufferBuilder fb(64);
  fb.Finish(
      wire::CreateControl(fb, wire::ControlBody::Locate, wire::CreateLocate(fb, server).Union()),
      wire::ControlIdentifier());
  Multipart m = control_frames(Command::locate, server, fb);
  try {
    send_multipart(sock_, m, true);
  } catch (const zmq::error_t& e) {
    PATRO_LOG(warn, "client") << "locate failed: " << e.what();
  }
}

void BrokerLink::heard_version(const wire::Welcome& welcome) noexcept {
  wire_version_ = welcome.wire_version() >= kEnvelopeVersion ? kEnvelopeVersion : kWireVersion;
}

BrokerLink::Instance BrokerLink::instance(uint64_t instance) noexcept {
  if (instance == 0 || instance == instance_) return Instance::same;
  const bool restarted = instance_ != 0;
  instance_ = instance;
  return restarted ? Instance::restarted : Instance::first;
}

std::optional<std::string> BrokerLink::overdue(Clock::time_point now) {
  const auto allowed =
      silence_allowed(several(), instance_ != 0, timing_.window(), timing_.interval());
  if (!beats_.overdue(now, allowed)) return std::nullopt;
  beats_.wait_again(now);  // each call after this gets its own full window
  return "the broker at " + endpoint_ + " has been silent for more than " +
         std::to_string(allowed.count()) + " ms";
}

BrokerLink::Clock::time_point BrokerLink::move_due() const noexcept {
  return beats_.last_heard() +
         silence_allowed(several(), instance_ != 0, timing_.window(), timing_.interval()) +
         std::chrono::milliseconds(1);
}

bool BrokerLink::dropped() {
  return watch_ && watch_->disconnected();
}

void BrokerLink::note_server(uint64_t server) {
  if (server == 0 || server == last_server_) return;
  last_server_ = server;
  servers_seen_.insert(server);
}

void BrokerLink::forget_server(uint64_t server) {
  servers_seen_.erase(server);
  if (last_server_ == server) last_server_ = 0;
}

std::optional<zmq::message_t> ask_broker(zmq::context_t& ctx, const std::string& endpoint,
                                         const ClientOptions& options, const CurveOptions& curve,
                                         Command command, uint64_t rid,
                                         const flatbuffers::FlatBufferBuilder& fb) {
  zmq::socket_t s = make_socket(ctx, zmq::socket_type::dealer, options.limits);
  if (curve.enabled()) set_curve_client(s, curve, curve.keys);
  try {
    s.connect(endpoint);
    Multipart m = control_frames(command, rid, fb);
    send_multipart(s, m, true);
    const auto deadline = std::chrono::steady_clock::now() + options.connect_timeout;
    Multipart reply;
    for (int n = 0; n < 64; ++n) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || !poll_in(s, left) || !recv_multipart(s, reply, true)) break;
      // [hdr][rid][body]; the broker's heartbeats ([hdr][instance]) are skipped.
      if (reply.size() == 3 && parse_u64(reply[1]) == rid) return std::move(reply[2]);
    }
  } catch (const zmq::error_t& e) {
    PATRO_LOG(debug, "client") << "asking the broker at " << endpoint << ": " << e.what();
  }
  return std::nullopt;
}

}  // namespace patro::detail
