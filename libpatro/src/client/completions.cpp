#include "completions.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <exception>

#include "log.hpp"
#include "os_failure.hpp"

namespace patro::detail {

Completions::Completions() {
  fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd_ < 0) throw os_failure("eventfd", errno);
}

Completions::~Completions() {
  ::close(fd_);
}

void Completions::signal() noexcept {
  const uint64_t one = 1;
  (void)!::write(fd_, &one, sizeof one);
}

void Completions::post(const std::vector<SlotPtr>& ready) {
  if (ready.empty()) return;
  {
    MutexLock lock(mu_);
    for (const SlotPtr& s : ready) {
      for (auto& f : s->callbacks) queue_.push_back(std::move(f));
      s->callbacks.clear();
    }
    signal();  // under the lock: see run()
  }
}

void Completions::post(std::function<void()> f) {
  {
    MutexLock lock(mu_);
    queue_.push_back(std::move(f));
    signal();
  }
}

size_t Completions::run() {
  std::deque<std::function<void()>> now;
  {
    MutexLock lock(mu_);
    // The fd is read and written under the lock that guards the queue, so it is readable exactly
    // while something waits.
    uint64_t n;
    (void)!::read(fd_, &n, sizeof n);
    now.swap(queue_);
  }
  for (auto& f : now) {
    try {
      f();
    } catch (const std::exception& e) {
      PATRO_LOG(warn, "client") << "a then-callback threw: " << e.what();
    }
  }
  return now.size();
}

size_t Completions::waiting() {
  MutexLock lock(mu_);
  return queue_.size();
}

}  // namespace patro::detail
