#include "io_loop.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "os_failure.hpp"

namespace patro::detail {

IoLoop::IoLoop(Mutex& state_mu) : state_mu_(state_mu) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw os_failure("eventfd", errno);
}

IoLoop::~IoLoop() {
  ::close(wake_fd_);
}

void IoLoop::wake() noexcept {
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void IoLoop::drain_wake() noexcept {
  uint64_t n;
  (void)!::read(wake_fd_, &n, sizeof n);
}

}  // namespace patro::detail
