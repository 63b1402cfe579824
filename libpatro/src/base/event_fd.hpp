// A non-blocking eventfd: a counter the kernel keeps, readable while it is above zero, so it sits
// in a poll beside sockets. signal() adds one; drain() reads (and so resets) it. Used where a
// thread must wake another's poll: the client's io loop and its queue of continuations for the
// program's own loop.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "os_failure.hpp"

namespace patro::detail {

class EventFd {
 public:
  EventFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw os_failure("eventfd", errno);
  }
  ~EventFd() { ::close(fd_); }
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;

  int fd() const noexcept { return fd_; }
  void signal() noexcept {
    const uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }
  void drain() noexcept {
    uint64_t n;
    (void)!::read(fd_, &n, sizeof n);
  }

 private:
  const int fd_;
};

}  // namespace patro::detail
