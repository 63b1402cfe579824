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
// Where a coroutine resumes: where the awaited future's then-continuation runs. On a connection
// made with ClientOptions::continuations = event_loop that is the program's loop (the thread that
// calls patro::run_ready), and nowhere else; otherwise the thread that received the answer (a
// caller waiting on the connection, or its heartbeat thread), or at once if the answer is already
// there. Each awaited call keeps its own deadline (ClientOptions::call_timeout): past it the
// coroutine resumes and co_await throws Error(timeout).
#pragma once

#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "patro/future.hpp"

namespace patro {

/// co_await future: suspends until the answer is here, resumes as the header says, and gives
/// future.get() (throwing the call's error).
template <class T>
auto operator co_await(const Future<T>& future) {
  struct Awaiter {
    Future<T> f;
    bool await_ready() const { return f.ready(); }
    void await_suspend(std::coroutine_handle<> h) const {
      // A copy on this frame: the continuation may run at once and resume (and end) the
      // coroutine whose frame holds this awaiter.
      const Future<T> f2 = f;
      f2.then([h](const Future<T>&) { h.resume(); });
    }
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
      const Future<T> f2 = f;  // as operator co_await: this frame may end once resumed
      (void)f2.expire_after(limit);
      f2.then([h](const Future<T>&) { h.resume(); });
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
/// let out). For a program's main and for tests. Not on the loop of a connection made with
/// continuations = event_loop whose continuations only that loop runs: nothing would resume it.
template <class T>
T run_sync(Task<T> task) {
  auto signal = std::make_shared<detail::TaskSignal>();
  task.h_.promise().signal = signal;
  task.start();
  while (!signal->done.load(std::memory_order_acquire)) signal->done.wait(false);
  return task.result();
}

}  // namespace patro
