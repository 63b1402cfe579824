// The socket turns of a client connection (leader/follower). There is no I/O thread: a thread that
// waits for an answer takes the turn and does the socket work itself (the connection's pump), and
// the others wait for their answer or for the turn. The loop holds:
// - the turn (a mutex: whoever holds it owns the connection's sockets);
// - a wake fd (eventfd) by which a thread that wants the turn, or has queued something to send,
//   asks the holder to let go (the holder polls it with its sockets);
// - the turns' generation and the condition variable waiters sleep on, under the state mutex it
//   is given (the request table's: waiters look at their slots and at the generation together).
// Lock order: the turn, then the state mutex.
#pragma once

#include <chrono>
#include <cstdint>

#include <zmq.hpp>

#include "event_fd.hpp"
#include "mutex.hpp"

namespace patro::detail {

class IoLoop {
 public:
  using Clock = std::chrono::steady_clock;

  /// state_mu: the mutex under which waiters look at what they wait for (it outlives the loop).
  explicit IoLoop(Mutex& state_mu) : state_mu_(state_mu) {}
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;

  Mutex& turn() PATRO_TSA(lock_returned(turn_mu_)) { return turn_mu_; }
  bool try_take() PATRO_TRY_ACQUIRE(true, turn_mu_) { return turn_mu_.try_lock(); }
  void take() PATRO_ACQUIRE(turn_mu_) { turn_mu_.lock(); }
  void let_go() PATRO_RELEASE(turn_mu_) { turn_mu_.unlock(); }

  /// Asks the holder of the turn to let go (or to flush what was queued).
  void wake() noexcept { wake_.signal(); }
  /// The wake fd as a poll item; and, after a poll saw it readable, consumes the wake-ups.
  zmq::pollitem_t wake_item() const noexcept { return {nullptr, wake_.fd(), ZMQ_POLLIN, 0}; }
  void drain_wake() noexcept { wake_.drain(); }

  /// A turn ended: the next generation, waiters woken; under runs with the state mutex held.
  template <class Under>
  void next_turn(Under under) PATRO_EXCLUDES(state_mu_) {
    MutexLock lock(state_mu_);
    ++generation_;
    cv_.notify_all();
    under();
  }
  /// Something a waiter may wait for changed (a slot was answered): wakes the waiters.
  void notify() noexcept { cv_.notify_all(); }

  /// Waits until done() (called with the state mutex held) or until; whether done. Meanwhile, each
  /// time the turn is free it takes it and calls turn(seen), which must let it go (seen: what
  /// look(), called with the state mutex held, returned just before); otherwise it sleeps until
  /// done, until, or a turn ended.
  template <class Done, class Look, class Turn>
  bool drive(Done done, Clock::time_point until, Look look, Turn turn) PATRO_NO_TSA {
    for (;;) {
      uint64_t generation;
      decltype(look()) seen;
      {
        MutexLock lock(state_mu_);
        if (done()) return true;
        if (Clock::now() >= until) return false;
        generation = generation_;
        seen = look();
      }
      if (turn_mu_.try_lock()) {
        turn(seen);
        continue;
      }
      MutexLock lock(state_mu_);
      cv_.wait_until(lock.native(), until,
                     [&]() PATRO_NO_TSA { return done() || generation_ != generation; });
    }
  }

 private:
  Mutex turn_mu_;
  Mutex& state_mu_;
  CondVar cv_;  // with state_mu_: a turn ended, or notify()
  uint64_t generation_ PATRO_GUARDED_BY(state_mu_) = 0;
  EventFd wake_;
};

}  // namespace patro::detail
