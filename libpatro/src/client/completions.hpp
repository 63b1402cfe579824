// The continuations a connection hands to the program's own event loop
// (ClientOptions::continuations = event_loop): a queue and an eventfd that is readable while the
// queue holds any. The threads that receive answers post the continuations; the loop's thread,
// woken by the fd, runs them (run()), so none runs on a thread of Patro's or on another caller's.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <vector>

#include "event_fd.hpp"
#include "mutex.hpp"
#include "request_table.hpp"

namespace patro::detail {

class Completions {
 public:
  Completions() = default;
  Completions(const Completions&) = delete;
  Completions& operator=(const Completions&) = delete;

  /// Queues the callbacks of answered slots (RequestTable::take_ready), in their order.
  void post(const std::vector<SlotPtr>& ready) PATRO_EXCLUDES(mu_);
  /// Queues one continuation.
  void post(std::function<void()> f) PATRO_EXCLUDES(mu_);
  /// Readable while continuations wait (level-triggered until run() takes them).
  int fd() const noexcept { return fd_.fd(); }
  /// Runs the continuations queued now, in the calling thread (those they queue wait for the
  /// next call); how many ran. An exception one throws is logged and dropped.
  size_t run() PATRO_EXCLUDES(mu_);

 private:
  EventFd fd_;  // signalled and drained under mu_
  Mutex mu_;
  std::deque<std::function<void()>> queue_ PATRO_GUARDED_BY(mu_);
};

}  // namespace patro::detail
