// A TCP port on 127.0.0.1 that the test process holds, so that no one else can take it: only
// bound (connections to it are refused) or listening (another bind fails: "in use").
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

namespace patro::test {

struct LoopbackPort {
  int fd = -1;
  std::string endpoint;  // tcp://127.0.0.1:PORT

  explicit LoopbackPort(bool listening = false) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        (listening && ::listen(fd, 1) != 0) ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(fd);
      throw std::runtime_error("cannot hold a port on 127.0.0.1");
    }
    endpoint = "tcp://127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  }
  ~LoopbackPort() { ::close(fd); }
  LoopbackPort(const LoopbackPort&) = delete;
  LoopbackPort& operator=(const LoopbackPort&) = delete;
};

}  // namespace patro::test
