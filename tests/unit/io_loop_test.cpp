// The client's socket turns on their own (no sockets): a thread that waits takes the turn when it
// is free and runs its turn; while another holds it, it sleeps until what it waits for is done, a
// turn ends, or its time is up; the wake fd tells the holder that someone wants the turn.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "io_loop.hpp"

using namespace std::chrono_literals;
using patro::detail::IoLoop;
using patro::detail::Mutex;
using patro::detail::MutexLock;
using Clock = IoLoop::Clock;

namespace {

bool wake_readable(IoLoop& loop) {
  zmq::pollitem_t item = loop.wake_item();
  zmq::poll(&item, 1, std::chrono::milliseconds(0));
  return (item.revents & ZMQ_POLLIN) != 0;
}

}  // namespace

TEST_CASE("a free turn is taken and run with what look() saw; done first means no turn") {
  Mutex state;
  IoLoop loop(state);
  bool done = false;
  int turns = 0;
  int seen_value = 0;
  const bool ok = loop.drive([&] { return done; }, Clock::now() + 10s, [&] { return 7; },
                             [&](int seen) {
                               ++turns;
                               seen_value = seen;
                               done = true;  // what the pump found
                               loop.let_go();
                             });
  CHECK(ok);
  CHECK(turns == 1);
  CHECK(seen_value == 7);
  // Already done: drive returns at once without a turn.
  CHECK(loop.drive([&] { return true; }, Clock::now() + 10s, [] { return 0; },
                   [&](int) {
                     ++turns;
                     loop.let_go();
                   }));
  CHECK(turns == 1);
}

TEST_CASE(
    "while another thread holds the turn, a waiter sleeps until the turn ends, then takes it") {
  Mutex state;
  IoLoop loop(state);
  loop.take();  // this thread holds the turn
  std::atomic<int> turns{0};
  std::atomic<bool> finished{false};
  bool result = false;
  std::thread waiter([&] {
    bool done = false;
    result = loop.drive([&] { return done; }, Clock::now() + 20s, [] { return 0; },
                        [&](int) {
                          ++turns;
                          done = true;
                          loop.let_go();
                        });
    finished = true;
  });
  // It cannot take the turn: it sleeps (bounded wait: it must not finish while we hold it).
  for (int i = 0; i < 20 && !finished; ++i) std::this_thread::sleep_for(5ms);
  CHECK_FALSE(finished.load());
  CHECK(turns == 0);
  loop.let_go();
  loop.next_turn([] {});  // the turn ended: the waiter looks again and takes it
  waiter.join();
  CHECK(result);
  CHECK(turns == 1);
}

TEST_CASE("a waiter whose answer came while another held the turn wakes on notify, turnless") {
  Mutex state;
  IoLoop loop(state);
  loop.take();
  bool answered = false;  // under state
  std::atomic<int> turns{0};
  bool result = false;
  std::thread waiter([&] {
    result = loop.drive([&] { return answered; }, Clock::now() + 20s, [] { return 0; },
                        [&](int) {
                          ++turns;
                          loop.let_go();
                        });
  });
  {
    MutexLock lock(state);
    answered = true;  // the holder's pump answered the waiter's slot
  }
  loop.notify();
  waiter.join();
  CHECK(result);
  CHECK(turns == 0);
  loop.let_go();
}

TEST_CASE("drive gives up at its time when nothing comes and the turn stays held") {
  Mutex state;
  IoLoop loop(state);
  loop.take();
  bool result = true;
  std::thread waiter([&] {
    result = loop.drive([] { return false; }, Clock::now() + 50ms, [] { return 0; },
                        [&](int) { loop.let_go(); });
  });
  waiter.join();
  CHECK_FALSE(result);
  loop.let_go();
}

TEST_CASE("the wake fd is readable after wake() until drained; next_turn runs its part") {
  Mutex state;
  IoLoop loop(state);
  CHECK_FALSE(wake_readable(loop));
  loop.wake();
  loop.wake();
  CHECK(wake_readable(loop));
  loop.drain_wake();  // an eventfd: one read takes every wake-up
  CHECK_FALSE(wake_readable(loop));
  bool ran = false;
  loop.next_turn([&] { ran = true; });
  CHECK(ran);
}
