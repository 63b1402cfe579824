#include "completions.hpp"

#include <exception>

#include "log.hpp"

namespace patro::detail {

void Completions::post(const std::vector<SlotPtr>& ready) {
  if (ready.empty()) return;
  {
    MutexLock lock(mu_);
    for (const SlotPtr& s : ready) {
      for (auto& f : s->callbacks) queue_.push_back(std::move(f));
      s->callbacks.clear();
    }
    fd_.signal();  // under the lock: see run()
  }
}

void Completions::post(std::function<void()> f) {
  {
    MutexLock lock(mu_);
    queue_.push_back(std::move(f));
    fd_.signal();
  }
}

size_t Completions::run() {
  std::deque<std::function<void()>> now;
  {
    MutexLock lock(mu_);
    // The fd is read and written under the lock that guards the queue, so it is readable exactly
    // while something waits.
    fd_.drain();
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

}  // namespace patro::detail
