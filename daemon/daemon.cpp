#include "daemon.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <patro/error.hpp>
#include <patro/logging.hpp>

#ifdef PATRO_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace patro::daemon {

namespace {
constexpr const char* kLevelNames = "fatal, error, warn, info, verbose, debug or trace";
}  // namespace

std::string configure_logging(const std::string& level_name, const std::string& log_file) {
  LogLevel level = LogLevel::info;
  if (!level_name.empty()) {
    auto parsed = parse_log_level(level_name);
    if (!parsed) return "--log-level: '" + level_name + "' is not a level (" + kLevelNames + ")";
    level = *parsed;
  } else if (debug_requested()) {
    level = LogLevel::trace;  // PATRO_DEBUG=1: the wire trace
  } else if (const char* env = std::getenv("PATRO_LOG_LEVEL"); env != nullptr && *env != '\0') {
    auto parsed = parse_log_level(env);
    if (!parsed)
      return "PATRO_LOG_LEVEL='" + std::string(env) + "' is not a level (" + kLevelNames + ")";
    level = *parsed;
  }
  // A daemon refuses bad selections at start, as it refuses a bad level (a program that embeds
  // Patro reports them once and selects every component).
  if (const char* env = std::getenv("PATRO_LOG_SELECTIONS"); env != nullptr) {
    try {
      set_log_selections(env);
    } catch (const std::exception& e) {
      return std::string("PATRO_LOG_SELECTIONS='") + env + "': " + e.what();
    }
  }
  set_log_level(level);
  if (!log_file.empty()) {
    try {
      set_log_file(log_file);
    } catch (const std::exception& e) {
      return e.what();
    }
  }
  return {};
}

void raise_descriptor_limit(const std::string& component) {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur >= r.rlim_max) return;
  const rlim_t was = r.rlim_cur;
  r.rlim_cur = r.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &r) != 0)
    write_log(LogLevel::warn, component,
              "cannot raise the descriptor limit from " + std::to_string(was) + ": " +
                  std::strerror(errno));
}

void notify(const std::string& state) {
#ifdef PATRO_HAVE_SYSTEMD
  (void)sd_notify(0, state.c_str());
#else
  // The protocol without libsystemd: one datagram to $NOTIFY_SOCKET ('@' is the abstract
  // namespace).
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  ::close(fd);
#endif
}

namespace {
[[noreturn]] void bad_endpoint(const std::string& endpoint, const std::string& why) {
  throw Error(Errc::invalid_argument, "--metrics " + endpoint + ": " + why);
}
}  // namespace

MetricsServer::MetricsServer(const std::string& endpoint, std::function<std::string()> render)
    : render_(std::move(render)) {
  // tcp://HOST:PORT (IPv4 or a name; [v6] in brackets); "*" or 0 picks a free port.
  std::string rest = endpoint.rfind("tcp://", 0) == 0 ? endpoint.substr(6) : endpoint;
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) bad_endpoint(endpoint, "want tcp://HOST:PORT");
  std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (port == "*") port = "0";
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) > 65535)
    bad_endpoint(endpoint, "'" + port + "' is not a port (0-65535, or * for a free one)");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "*") host = "0.0.0.0";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0)
    bad_endpoint(endpoint, ::gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && listen_fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 16) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  if (listen_fd_ < 0) bad_endpoint(endpoint, why);
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&bound), &blen);
  char name[INET6_ADDRSTRLEN] = "?";
  int bound_port = 0;
  if (bound.ss_family == AF_INET6) {
    const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&bound);
    ::inet_ntop(AF_INET6, &a6->sin6_addr, name, sizeof name);
    bound_port = ntohs(a6->sin6_port);
    endpoint_ = "tcp://[" + std::string(name) + "]:" + std::to_string(bound_port);
  } else {
    const auto* a4 = reinterpret_cast<const sockaddr_in*>(&bound);
    ::inet_ntop(AF_INET, &a4->sin_addr, name, sizeof name);
    bound_port = ntohs(a4->sin_port);
    endpoint_ = "tcp://" + std::string(name) + ":" + std::to_string(bound_port);
  }
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    const int error_number = errno;
    ::close(listen_fd_);
    throw Error(Errc::os_failure, std::string("eventfd: ") + std::strerror(error_number));
  }
  thread_ = std::thread([this] { serve(); });
}

MetricsServer::~MetricsServer() {
  const uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  ::close(stop_fd_);
  ::close(listen_fd_);
}

void MetricsServer::serve() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    answer(fd);
    ::close(fd);
  }
}

void MetricsServer::answer(int fd) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  std::string request;
  // The request head, at most 8 KiB, within the deadline.
  while (request.find("\r\n\r\n") == std::string::npos &&
         request.find("\n\n") == std::string::npos && request.size() < 8192) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return;
    char buf[2048];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  const size_t line_end = request.find_first_of("\r\n");
  const std::string line = request.substr(0, line_end);
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  const bool head = line.rfind("HEAD ", 0) == 0;
  if (line.rfind("GET ", 0) != 0 && !head) {
    status = "405 Method Not Allowed";
    type = "text/plain";
    body = "GET /metrics\n";
  } else {
    const size_t sp = line.find(' ', 4);
    std::string path = line.substr(
        head ? 5 : 4, sp == std::string::npos ? std::string::npos : sp - (head ? 5 : 4));
    path = path.substr(0, path.find('?'));
    if (path == "/metrics") {
      try {
        body = render_();
      } catch (const std::exception& e) {
        status = "500 Internal Server Error";
        type = "text/plain";
        body = std::string(e.what()) + "\n";
      }
    } else {
      status = "404 Not Found";
      type = "text/plain";
      body = "metrics are at /metrics\n";
    }
  }
  std::string reply = "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
                      "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n";
  if (!head) reply += body;
  size_t done = 0;
  while (done < reply.size() && Clock::now() < deadline) {
    const ssize_t n = ::send(fd, reply.data() + done, reply.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void metric(std::string& out, const std::string& name, const char* type, const std::string& help,
            double value, const std::string& labels) {
  if (!help.empty()) out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  char num[64];
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15)
    std::snprintf(num, sizeof num, " %.0f\n", value);
  else
    std::snprintf(num, sizeof num, " %.9g\n", value);
  out += num;
}

}  // namespace patro::daemon
