#include "connection_cap.hpp"

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "os_failure.hpp"
#include "patro/error.hpp"
#include "socket.hpp"

namespace patro::detail {
namespace {

constexpr int kEvents = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPT_FAILED;

// Whether descriptor fd is a connection accepted on our port (libzmq may have closed the one the
// event named, and the number gone to another file, by the time we read the event).
bool accepted_on(int fd, int port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return false;
  if (a.ss_family == AF_INET)
    return port >= 0 && ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port) == port;
  if (a.ss_family == AF_INET6)
    return port >= 0 && ntohs(reinterpret_cast<sockaddr_in6*>(&a)->sin6_port) == port;
  return a.ss_family == AF_UNIX && port < 0;
}

}  // namespace

ConnectionCap::ConnectionCap(zmq::context_t& ctx, zmq::socket_t& front, zmq::socket_t& back,
                             size_t max)
    : front_events_(monitor_socket(ctx, front, kEvents)),
      back_events_(monitor_socket(ctx, back, kEvents)),
      max_(max),
      server_reserve_(max >= 2 ? std::max<size_t>(max / 8, 1) : 0),  // a cap of 1 shares it
      front_watched_(&front),
      back_watched_(&back) {
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd_ < 0) throw os_failure("eventfd", errno);
}

ConnectionCap::~ConnectionCap() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  ::close(stop_fd_);
  // The monitors stop before their PAIRs close: libzmq then has no event left to send.
  for (zmq::socket_t* s : {front_watched_, back_watched_})
    if (s->handle() != nullptr) zmq_socket_monitor(s->handle(), nullptr, 0);
}

void ConnectionCap::start(int front_port, int back_port) {
  front_port_ = front_port;
  back_port_ = back_port;
  thread_ = std::thread([this] { main(); });
}

void ConnectionCap::main() {
  zmq::pollitem_t items[] = {{front_events_.handle(), 0, ZMQ_POLLIN, 0},
                             {back_events_.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, stop_fd_, ZMQ_POLLIN, 0}};
  Multipart event;
  for (;;) {
    try {
      zmq::poll(items, 3, std::chrono::milliseconds(-1));
      if (items[2].revents & ZMQ_POLLIN) return;
      for (int i = 0; i < 256 && recv_multipart(front_events_, event, true); ++i)
        if (!event.empty())
          on_event(event[0], front_port_, max_ > server_reserve_ ? max_ - server_reserve_ : 0,
                   "client");
      for (int i = 0; i < 256 && recv_multipart(back_events_, event, true); ++i)
        if (!event.empty()) on_event(event[0], back_port_, max_, "server");
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      if (e.num() != EINTR) PATRO_LOG(error, "broker") << "connection watch: " << e.what();
    } catch (const std::exception& e) {
      PATRO_LOG(error, "broker") << "connection watch: " << e.what() << "; going on";
    }
  }
}

void ConnectionCap::on_event(const zmq::message_t& m, int port, size_t limit, const char* which) {
  if (m.size() < 6) return;
  uint16_t event = 0;
  uint32_t value = 0;
  std::memcpy(&event, m.data(), sizeof event);
  std::memcpy(&value, static_cast<const char*>(m.data()) + 2, sizeof value);
  switch (event) {
    case ZMQ_EVENT_ACCEPTED: {
      const uint64_t open = open_.fetch_add(1, std::memory_order_relaxed) + 1;
      if (open <= limit) return;
      refused_.fetch_add(1, std::memory_order_relaxed);
      PATRO_LOG_LIMITED(warn, "broker", refusals_)
          << "closed a connection to the " << which << " port: " << open - 1
          << " are open, the most the broker keeps there (--max-connections " << max_
          << (limit < max_ ? ", less the eighth kept for servers)" : ")");
      const int fd = static_cast<int>(value);
      if (accepted_on(fd, port)) ::shutdown(fd, SHUT_RDWR);
      return;
    }
    case ZMQ_EVENT_DISCONNECTED:
      if (open_.load(std::memory_order_relaxed) > 0) open_.fetch_sub(1, std::memory_order_relaxed);
      return;
    case ZMQ_EVENT_ACCEPT_FAILED:
      PATRO_LOG_LIMITED(warn, "broker", accept_failures_)
          << "cannot accept a connection on the " << which
          << " port: " << std::strerror(static_cast<int>(value));
      return;
    default:
      return;
  }
}

}  // namespace patro::detail
