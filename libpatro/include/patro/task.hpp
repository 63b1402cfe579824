// C++20 coroutines over Patro's futures: `co_await` on a patro::Future gives the call's result (or
// throws its error) without blocking a thread, and patro::Task<T> is the coroutine type to write
// such code in.
//
//   patro::Task<int64_t> total(patro::Proxy p) {
//     int64_t sum = 0;
//     for (int i = 0; i < 3; ++i) sum += (co_await p["k" +
//     std::to_string(i)].async_get()).as<int64_t>(); co_return sum;
//   }
//   int64_t t = patro::run_sync(total(p));    // or co_await total(p) inside another Task
//
// Where a coroutine resumes: under run_sync, a coroutine that awaits a call alone on run_sync's
// thread is resumed there: run_sync waits for that answer itself, driving the connection as
// Future::get does (no then-continuation, no hand-off to another thread). Otherwise (several
// calls awaited at once on that thread, or a coroutine resumed elsewhere) where the awaited
// future's then-continuation runs. On a connection made with ClientOptions::continuations =
// event_loop that is the program's loop (the thread that calls patro::run_ready), and nowhere
// else; otherwise the thread that received the answer (a caller waiting on the connection, or its
// heartbeat thread), or at once if the answer is already there. Each awaited call keeps its own
// deadline (ClientOptions::call_timeout): past it the coroutine resumes and co_await throws
// Error(timeout).
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "patro/future.hpp"

namespace patro {

namespace detail {
// run_sync's thread waits for the calls its coroutines await there itself: each such co_await
// leaves the future and the coroutine here (in the awaiting frame's own awaiter, alive while it
// is suspended) instead of a then-continuation; run_sync waits for the answer, driving the
// connection, and resumes the coroutine on its own thread. One per run_sync, found through a
// thread_local while it runs (a nested run_sync has its own).
class SyncDriver {
 public:
  struct Wait {
    const void* future;                                         // the awaiter's Future<T>
    void (*wait)(const void* future);                           // future.wait()
    void (*then)(const void* future, std::coroutine_handle<>);  // resume h where it is answered
    std::coroutine_handle<> h;
  };
  /// The driver of run_sync on this thread, if one runs here.
  static SyncDriver*& current() noexcept {
    static thread_local SyncDriver* driver = nullptr;
    return driver;
  }
  void add(const Wait& w) { waits_.push_back(w); }
  /// Until done: a lone awaited call is waited for here and its coroutine resumed here; several
  /// at once go back to then-continuations (each resumes where its answer arrives, as without
  /// run_sync, so that none waits behind another's answer); with none, it sleeps until done.
  void run(const std::atomic<bool>& done) {
    while (!done.load(std::memory_order_acquire)) {
      if (waits_.size() == 1) {
        const Wait w = waits_.front();
        waits_.clear();
        try {
          w.wait(w.future);
        } catch (...) {
          w.then(w.future, w.h);  // its answer (an error) will come another way
          continue;
        }
        w.h.resume();
      } else if (!waits_.empty()) {
        const std::vector<Wait> all = std::exchange(waits_, {});
        for (const Wait& w : all) w.then(w.future, w.h);
      } else {
        done.wait(false, std::memory_order_acquire);
      }
    }
    // Done, with coroutines it did not wait for still awaiting here (started ones the task did
    // not await): they resume where their answers arrive.
    while (!waits_.empty())
      for (const Wait& w : std::exchange(waits_, {})) w.then(w.future, w.h);
  }

 private:
  std::vector<Wait> waits_;
};

// Suspends h on f: with run_sync's driver on this thread, left for it; otherwise resumed by a
// then-continuation.
template <class T>
void await_future(const Future<T>& f, std::coroutine_handle<> h) {
  auto then = [](const void* p, std::coroutine_handle<> resume) {
    // A copy: the continuation may run at once and resume (and end) the coroutine whose frame
    // holds the awaiter's future.
    const Future<T> f2 = *static_cast<const Future<T>*>(p);
    f2.then([resume](const Future<T>&) { resume.resume(); });
  };
  if (SyncDriver* d = SyncDriver::current()) {
    d->add({&f, [](const void* p) { static_cast<const Future<T>*>(p)->wait(); }, then, h});
    return;
  }
  then(&f, h);
}
}  // namespace detail

/// co_await future: suspends until the answer is here, resumes as the header says, and gives
/// future.get() (throwing the call's error).
template <class T>
auto operator co_await(const Future<T>& future) {
  struct Awaiter {
    Future<T> f;
    bool await_ready() const { return f.ready(); }
    void await_suspend(std::coroutine_handle<> h) const { detail::await_future(f, h); }
    T await_resume() const { return f.get(); }
  };
  return Awaiter{future};
}

/// co_await with_deadline(future, 50ms): as co_await future, but the call's deadline becomes at
/// most `limit` from when it is awaited; past it the call is cancelled at the server (one that has
/// not started never runs) and co_await throws Error(Errc::timeout). An answer that came in time
/// is given as usual. Future::expire_after is the same without a coroutine.
template <class T>
auto with_deadline(const Future<T>& future, std::chrono::milliseconds limit) {
  struct Awaiter {
    Future<T> f;
    std::chrono::milliseconds limit;
    bool await_ready() const { return f.ready(); }
    void await_suspend(std::coroutine_handle<> h) const {
      (void)f.expire_after(limit);
      detail::await_future(f, h);
    }
    T await_resume() const { return f.get(); }
  };
  return Awaiter{future, limit};
}

namespace detail {
// What run_sync waits on; shared, so that the finishing coroutine may signal it after the waiter
// already destroyed the task.
// (An atomic's wait, not a mutex: <mutex> here would let argument-dependent lookup find std::lock
// for a program's unqualified patro::lock calls.)
struct TaskSignal {
  std::atomic<bool> done{false};
};

// At a task's end: resumes the coroutine that awaited it, or tells run_sync. Either may destroy
// this frame at once, so nothing of it is touched after (what is needed is copied first), and the
// awaiting coroutine is resumed by a call rather than a returned handle.
template <class Promise>
struct TaskFinal {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<Promise> h) const noexcept {
    Promise& p = h.promise();
    const std::coroutine_handle<> next = p.continuation;
    if (const std::shared_ptr<TaskSignal> s = p.signal) {
      s->done.store(true, std::memory_order_release);
      s->done.notify_all();
    } else if (next) {
      next.resume();
    }
  }
  void await_resume() const noexcept {}
};

template <class T>
struct TaskValue {
  std::optional<T> value;
  void return_value(T v) { value.emplace(std::move(v)); }
  T take() { return std::move(*value); }
};
template <>
struct TaskValue<void> {
  void return_void() {}
  void take() {}
};
}  // namespace detail

/// A coroutine that gives a T (or nothing, T = void). It starts when awaited (co_await task, in
/// another coroutine), when run_sync runs it, or with start(); it owns its frame, and runs to its
/// end only while someone resumes it (awaited futures do). An exception it lets out is thrown by
/// co_await task, run_sync or result().
template <class T = void>
class [[nodiscard]] Task {
 public:
  struct promise_type : detail::TaskValue<T> {
    std::coroutine_handle<> continuation;
    std::exception_ptr error;
    std::shared_ptr<detail::TaskSignal> signal;
    Task get_return_object() {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    detail::TaskFinal<promise_type> final_suspend() noexcept { return {}; }
    void unhandled_exception() { error = std::current_exception(); }
  };

  Task(Task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  /// Starts it in this thread: it runs until its first co_await that must wait.
  void start() { h_.resume(); }
  /// Whether it ran to its end.
  bool done() const noexcept { return h_ && h_.done(); }
  /// Its result once done(); throws what it let out.
  T result() {
    if (h_.promise().error) std::rethrow_exception(h_.promise().error);
    return h_.promise().take();
  }

  // co_await task: runs it, and resumes the awaiting coroutine when it ends.
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> awaiting) {
    h_.promise().continuation = awaiting;
    h_.resume();
  }
  T await_resume() { return result(); }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : h_(h) {}
  template <class U>
  friend U run_sync(Task<U> task);
  std::coroutine_handle<promise_type> h_;
};

/// Runs task to its end, this thread waiting meanwhile, and gives its result (or throws what it
/// let out). For a program's main and for tests. While one call is awaited on this thread, this
/// thread waits for its answer itself (driving the connection as Future::get does) and resumes
/// the coroutine here; with several awaited at once, or a coroutine resumed on another thread,
/// they resume where their then-continuations run, so not on the loop of a connection made with
/// continuations = event_loop whose continuations only that loop runs.
template <class T>
T run_sync(Task<T> task) {
  auto signal = std::make_shared<detail::TaskSignal>();
  task.h_.promise().signal = signal;
  detail::SyncDriver driver;
  struct Installed {
    detail::SyncDriver* outer;
    ~Installed() { detail::SyncDriver::current() = outer; }
  } installed{std::exchange(detail::SyncDriver::current(), &driver)};
  task.start();
  driver.run(signal->done);
  return task.result();
}

}  // namespace patro
