#include "socket.hpp"

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
#endif

namespace patro::detail {

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, const Limits& limits) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, limits.high_water_mark);
  s.set(zmq::sockopt::rcvhwm, limits.high_water_mark);
  s.set(zmq::sockopt::maxmsgsize, limits.socket_message_cap());
  if (type == zmq::socket_type::router) s.set(zmq::sockopt::router_mandatory, 1);
  return s;
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
