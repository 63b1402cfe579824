// patro-bench's plain TCP connection to a peer server on loopback (beanstalkd, redis-server):
// blocking POSIX sockets with a timeout on every read and write, so that a peer that hangs or
// closes its end gives a clear error and never a hung bench. Bench-only code, not libpatro.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace patro::bench {

/// A free TCP port on 127.0.0.1 (bound to port 0 and released; the caller starts a server on it
/// and tries another if the server cannot bind it).
uint16_t free_loopback_port();

class TcpConn {
 public:
  /// Connects to 127.0.0.1:port; throws std::runtime_error if refused. Every later read or write
  /// that waits longer than timeout throws. name (the peer's) begins every error's message.
  TcpConn(std::string name, uint16_t port, std::chrono::milliseconds timeout);
  ~TcpConn();
  TcpConn(const TcpConn&) = delete;
  TcpConn& operator=(const TcpConn&) = delete;

  void write_all(std::string_view bytes);
  /// One line up to "\r\n" (not included), at most max_bytes long; throws on a longer line, a
  /// closed connection or the timeout.
  std::string read_line(size_t max_bytes = 4096);
  /// Exactly n bytes.
  std::string read_exact(size_t n);

 private:
  void fill();  // reads what has arrived (at least one byte) into buffer_
  std::runtime_error error(const std::string& what) const;
  std::runtime_error sys_error(const std::string& what) const;  // with errno's text

  std::string name_;
  int fd_ = -1;
  std::string buffer_;
  size_t pos_ = 0;  // start of the unread bytes in buffer_
};

}  // namespace patro::bench
