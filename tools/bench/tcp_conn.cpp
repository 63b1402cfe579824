#include "tcp_conn.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace patro::bench {
namespace {

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

std::runtime_error socket_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw socket_error("socket");
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const auto e = socket_error("a free port on 127.0.0.1");
    ::close(fd);
    throw e;
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::runtime_error TcpConn::error(const std::string& what) const {
  return std::runtime_error(name_ + ": " + what);
}
std::runtime_error TcpConn::sys_error(const std::string& what) const {
  return error(what + ": " + std::strerror(errno));
}

TcpConn::TcpConn(std::string name, uint16_t port, std::chrono::milliseconds timeout)
    : name_(std::move(name)) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw sys_error("socket");
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000);
  const int one = 1;
  const sockaddr_in a = loopback(port);
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      ::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    const auto e = sys_error("connect to 127.0.0.1:" + std::to_string(port));
    ::close(fd_);
    throw e;
  }
}

TcpConn::~TcpConn() {
  if (fd_ >= 0) ::close(fd_);
}

void TcpConn::write_all(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) throw error("write timed out");
    if (n <= 0) throw sys_error("write");
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

void TcpConn::fill() {
  if (pos_ > 0 && pos_ == buffer_.size()) {
    buffer_.clear();
    pos_ = 0;
  } else if (pos_ > 65536) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      return;
    }
    if (n == 0) throw error("connection closed");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) throw error("read timed out");
    throw sys_error("read");
  }
}

std::string TcpConn::read_line(size_t max_bytes) {
  size_t scanned = 0;  // unread bytes already searched (offsets from pos_: fill() may compact)
  for (;;) {
    const size_t at = buffer_.find("\r\n", pos_ + scanned);
    const size_t unread = buffer_.size() - pos_;
    if (at == std::string::npos ? unread > max_bytes + 1 : at - pos_ > max_bytes)
      throw error("a reply line longer than " + std::to_string(max_bytes) + " bytes");
    if (at != std::string::npos) {
      std::string line = buffer_.substr(pos_, at - pos_);
      pos_ = at + 2;
      return line;
    }
    scanned = unread > 0 ? unread - 1 : 0;  // a "\r" may end what has arrived
    fill();
  }
}

std::string TcpConn::read_exact(size_t n) {
  while (buffer_.size() - pos_ < n) fill();
  std::string out = buffer_.substr(pos_, n);
  pos_ += n;
  return out;
}

}  // namespace patro::bench
