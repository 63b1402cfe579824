// Asynchronous calls: Proxy::async_get, async_set, async_call… send a request and return at once
// with a patro::Future; many requests may be in flight on one connection, answered in any order
// and matched by request id, and run on the server in the order they were sent. Object::Remote's
// start::method, await_future and await_all are the model.
//
// There is no I/O thread: whoever waits (Future::wait/get, await_all, or any call on the same
// connection) reads the answers of every request in flight. A then-callback runs in the thread that
// received its answer, after that thread let go of the connection's socket (so the callback may
// call the connection), or at once in the calling thread if the answer is already there. While
// callbacks wait and nobody else drives the connection, its heartbeat thread does. A connection
// made with ClientOptions::continuations = event_loop runs none of them itself: they wait for the
// program's loop (patro::event_fd, patro::run_ready in client.hpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "patro/export.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

namespace detail {
class Connection;  // hidden: declared PATRO_PRIVATE first in value.hpp
struct Slot;

/// What a Future shares: the connection and the request's slot.
struct FutureCore {
  std::shared_ptr<Connection> conn;
  std::shared_ptr<Slot> slot;
  bool list = false;  // list context: get() gives every result
};
bool future_ready(const FutureCore& c);
/// Waits until answered, or until the timeout (negative: the call's deadline). Whether answered.
bool future_wait(const FutureCore& c, std::chrono::milliseconds timeout);
ValueArray future_results(const FutureCore& c);
void future_then(const FutureCore& c, std::function<void()> f);
bool future_cancel(const FutureCore& c);
bool future_expire_after(const FutureCore& c, std::chrono::milliseconds after);
/// Promise pipelining: a call (wire operation op) on the result of on's call, sent at once.
std::shared_ptr<const FutureCore> future_pipeline(const FutureCore& on, uint8_t op,
                                                  std::vector<Value> args, std::string_view name,
                                                  bool list);
}  // namespace detail

/// The answer to an asynchronous call, to come. T is Value (the call's result; null if none) or
/// std::vector<Value> (every result, for list context). Copies share the answer. A Future may be
/// used from any thread; its then-callbacks may run in another.
template <class T = Value>
class Future {
  static_assert(std::is_same_v<T, Value> || std::is_same_v<T, std::vector<Value>>,
                "patro::Future<T>: T is Value or std::vector<Value>");

 public:
  Future() = default;
  explicit Future(std::shared_ptr<const detail::FutureCore> core) : core_(std::move(core)) {}

  /// Whether this future belongs to a call (a default-constructed one does not).
  bool valid() const noexcept { return core_ != nullptr; }
  /// Whether the answer is here (no I/O).
  bool ready() const { return detail::future_ready(*core_); }
  /// Waits for the answer, or until the call's deadline (then get() throws Errc::timeout).
  void wait() const { detail::future_wait(*core_, std::chrono::milliseconds(-1)); }
  /// Waits up to timeout; whether the answer is here.
  bool wait_for(std::chrono::milliseconds timeout) const {
    return detail::future_wait(*core_, timeout);
  }
  /// Waits and returns the result; throws the call's Error (RemoteError for served code). May be
  /// called more than once.
  T get() const {
    wait();
    ValueArray r = detail::future_results(*core_);
    if constexpr (std::is_same_v<T, Value>) {
      return r.empty() ? Value() : std::move(r.front());
    } else {
      return r;
    }
  }
  /// Cancels the call if its answer is not here yet, and says whether it did. A cancelled call is
  /// answered at once: get() throws Error(Errc::cancelled), then-callbacks run. A server that has
  /// not started it never runs it (not even a resent copy); one already running it finishes, and
  /// its reply is dropped. Cancelling a call already answered (or cancelled) changes nothing.
  /// Oneway calls are not cancelled. See docs/WIRE.md "Cancelling".
  bool cancel() const { return detail::future_cancel(*core_); }
  /// Makes the call's deadline no later than `after` from now, and says whether the call is still
  /// unanswered. Past it the call is answered Error(Errc::timeout) (then-callbacks run, an awaiting
  /// coroutine resumes) and cancelled at the server as cancel() does: one that has not started
  /// never runs. A later deadline than the call's own changes nothing. patro::with_deadline
  /// (task.hpp) is this for one co_await.
  bool expire_after(std::chrono::milliseconds after) const {
    return detail::future_expire_after(*core_, after);
  }
  // --- Calls on the result before it is here (promise pipelining, as Cap'n Proto's): each is
  // sent at once, without waiting for this future's answer, and the server runs it on this call's
  // result as soon as that exists, in the order such calls were made. The result must be a
  // reference to an object of the same server (a method that returns an object it serves, a
  // nested container): a call on anything else fails with Errc::type_mismatch, naming what the
  // result was; if this call fails, every call made on its result fails with its error (and so
  // on down a chain). `auto g = p.async_call("make").async_call("ping")` costs one round trip.
  // Once this future's answer is here, they are plain calls on its result. Only for a Future of
  // a Value (scalar context). See README "Calls on results not yet returned". ---

  /// A method of the result, in scalar context.
  template <class... A>
  requires std::is_same_v<T, Value> Future<Value> async_call(std::string_view method, A&&... args)
  const {
    return Future<Value>(
        detail::future_pipeline(*core_, kCall, {Value(std::forward<A>(args))...}, method, false));
  }
  /// A method of the result, in list context.
  template <class... A>
  requires std::is_same_v<T, Value> Future<std::vector<Value>> async_call_list(
      std::string_view method, A&&... args)
  const {
    return Future<std::vector<Value>>(
        detail::future_pipeline(*core_, kCall, {Value(std::forward<A>(args))...}, method, true));
  }
  /// The result's value (a served scalar's value; a container's own reference).
  Future<Value> async_get() const requires std::is_same_v<T, Value> {
    return Future<Value>(detail::future_pipeline(*core_, kGet, {}, {}, false));
  }
  /// Sets the result's value (a served scalar, or a container's whole contents).
  Future<Value> async_set(const Value& v) const requires std::is_same_v<T, Value> {
    return Future<Value>(detail::future_pipeline(*core_, kSet, {v}, {}, false));
  }

  /// Runs f(future) once the answer is here (see the header comment for the thread). f may call
  /// get(), which then does not block. An exception f throws is logged and dropped.
  template <class F>
  const Future& then(F&& f) const {
    detail::future_then(*core_, [core = core_, f = std::forward<F>(f)]() mutable {
      Future done(core);
      f(done);
    });
    return *this;
  }

 private:
  // The wire's operation codes (schemas/request.fbs) the pipelined calls use.
  static constexpr uint8_t kGet = 0, kSet = 1, kCall = 16;
  std::shared_ptr<const detail::FutureCore> core_;
};

/// Object::Remote's await_all: waits for every future and returns their results in order. If any
/// failed, throws the first failure's error after all are answered.
template <class T>
std::vector<T> await_all(const std::vector<Future<T>>& futures) {
  for (const auto& f : futures) f.wait();
  std::vector<T> out;
  out.reserve(futures.size());
  for (const auto& f : futures) out.push_back(f.get());
  return out;
}

/// Object::Remote's await_future: waits for one future and returns its result.
template <class T>
T await_future(const Future<T>& f) {
  return f.get();
}

}  // namespace patro
PATRO_PUBLIC_END
