// A client in the program's own event loop (ClientOptions::continuations = event_loop): 10,000
// async calls completed through the connection's event fd in a plain poll loop, every
// continuation on the loop's thread and inside run_ready, none on a thread of Patro's; a then on
// an answered future waits for the loop too; the fd is readable exactly while continuations wait;
// a connection made without the option refuses event_fd and run_ready; the two examples (a poll
// loop, Boost.Asio) in processes of their own against the hash example's server; and coroutines
// (patro/task.hpp): 1,000 sequential co_awaits, nested tasks, errors, and 64 coroutines at once on
// the program's loop, each resumed on the loop's thread.
#include <doctest/doctest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "../support/sanitizers.hpp"

using namespace std::chrono_literals;
using patro::Future;
using patro::Proxy;
using patro::Value;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;

namespace {

patro::ClientOptions loop_options() {
  patro::ClientOptions o;
  o.continuations = patro::Continuations::event_loop;
  return o;
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

}  // namespace

TEST_CASE("10,000 async calls completed through the event fd, each on the loop's thread") {
  auto h = patro::Hash{{"a", 7}};
  auto cfg = patro::patronize(h);
  Proxy p = patro::get_proxies(cfg, loop_options()).at(0);
  const int fd = patro::event_fd(p);
  const std::thread::id loop_thread = std::this_thread::get_id();
  // 10,000 in the plain build; a fifth under the sanitizers (support/sanitizers.hpp).
  constexpr long kCalls = patro::test::scaled(10000, 5);
  long sent = 0, answered = 0, right = 0;
  std::atomic<long> elsewhere{0}, outside_run{0};
  bool in_run = false;  // set around run_ready: a continuation must find it set
  auto send_one = [&] {
    ++sent;
    p["a"].async_get().then([&](const Future<Value>& f) {
      if (std::this_thread::get_id() != loop_thread) {
        ++elsewhere;
        return;  // touches nothing of the loop's
      }
      if (!in_run) ++outside_run;
      ++answered;
      if (f.get() == 7) ++right;
    });
  };
  for (int i = 0; i < 64; ++i) send_one();
  const auto give_up = std::chrono::steady_clock::now() + 150s;
  int polls = 0;
  while (answered < kCalls && std::chrono::steady_clock::now() < give_up) {
    ++polls;
    if (!readable(fd, 1000)) continue;
    const long before = answered;
    in_run = true;
    const size_t ran = patro::run_ready(p);
    in_run = false;
    CHECK(static_cast<long>(ran) >= answered - before);
    for (long n = answered - before; n > 0 && sent < kCalls; --n) send_one();
  }
  CHECK(answered == kCalls);
  CHECK(right == kCalls);
  CHECK(elsewhere.load() == 0);
  CHECK(outside_run.load() == 0);
  CHECK(polls >= 2);  // the answers came in more than one batch: the fd did its job repeatedly
  CHECK_FALSE(readable(fd, 0));  // nothing waits now
  CHECK(p["a"].get() == 7);      // synchronous calls work beside it
  cfg.stop();
}

TEST_CASE("a then on an answered future waits for the loop; the fd says when something waits") {
  auto h = patro::Hash{{"a", 1}};
  auto cfg = patro::patronize(h);
  Proxy p = patro::get_proxies(cfg, loop_options()).at(0);
  const int fd = patro::event_fd(p);
  auto f = p["a"].async_get();
  CHECK(f.get() == 1);  // answered, in this thread
  CHECK_FALSE(readable(fd, 0));
  int ran = 0;
  f.then([&](const Future<Value>& x) { ran += x.get() == 1 ? 1 : 100; });
  CHECK(ran == 0);  // not at once, as it would be on any_thread
  CHECK(readable(fd, 0));
  CHECK(patro::run_ready(p) == 1);
  CHECK(ran == 1);
  CHECK_FALSE(readable(fd, 0));
  CHECK(patro::run_ready(p) == 0);
  // A continuation that throws is logged and dropped; the next one still runs.
  f.then([](const Future<Value>&) { throw std::runtime_error("thrown in a continuation"); });
  f.then([&](const Future<Value>&) { ++ran; });
  CHECK(patro::run_ready(p) == 2);
  CHECK(ran == 2);
  cfg.stop();
}

TEST_CASE("a connection made without event_loop refuses event_fd and run_ready") {
  auto h = patro::Hash{{"a", 1}};
  auto cfg = patro::patronize(h);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK_THROWS_AS(patro::event_fd(p), patro::Error);
  try {
    (void)patro::run_ready(p);
    FAIL("run_ready did not throw");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::invalid_argument);
    CHECK(std::string(e.what()).find("event_loop") != std::string::npos);
  }
  cfg.stop();
}

TEST_CASE("the event-loop examples (poll, Boost.Asio) against the hash example's server") {
  TempDir dir;
  const std::string conf = dir.file("h.conf");
  Process server({program("PATRO_EXAMPLE_SERVER"), conf}, dir.file("server.out"));
  REQUIRE(patro::test::wait_for_file(conf, 10s));
  Process poll_client({program("PATRO_EXAMPLE_EVENT_LOOP_POLL"), conf, "2000"},
                      dir.file("poll.out"));
  CHECK(poll_client.wait(120s) == 0);
  CHECK(patro::test::read_file(dir.file("poll.out"))
            .find("2000 answered, 2000 right; 2000 continuations on the loop's thread, 0 "
                  "elsewhere") != std::string::npos);
  Process asio_client({program("PATRO_EXAMPLE_EVENT_LOOP_ASIO"), conf, "500"},
                      dir.file("asio.out"));
  CHECK(asio_client.wait(120s) == 0);
  CHECK(patro::test::read_file(dir.file("asio.out")).find("500 answered, 500 right, 0 elsewhere") !=
        std::string::npos);
  CHECK(server.stop() == 0);
}

namespace {

patro::Task<int64_t> sum_of_gets(Proxy p, int n) {
  int64_t sum = 0;
  for (int i = 0; i < n; ++i) sum += (co_await p["a"].async_get()).as<int64_t>();
  co_return sum;
}

patro::Task<int64_t> nested(Proxy p) {
  const int64_t first = co_await sum_of_gets(p, 3);
  co_return first + co_await sum_of_gets(p, 2);
}

patro::Task<std::string> failing(Proxy p) {
  try {
    co_await p["a"][0].async_get();  // indexing an integer
  } catch (const patro::Error& e) {
    co_return std::string(patro::errc_name(e.code()));
  }
  co_return std::string("no error");
}

patro::Task<void> throws_out(Proxy p) {
  co_await p["a"].async_get();
  throw std::runtime_error("out of the coroutine");
}

}  // namespace

TEST_CASE("coroutines: 1,000 sequential co_awaits, nested tasks, errors in and out") {
  auto h = patro::Hash{{"a", 3}};
  auto cfg = patro::patronize(h);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(patro::run_sync(sum_of_gets(p, 1000)) == 3000);
  CHECK(patro::run_sync(nested(p)) == 15);
  CHECK(patro::run_sync(failing(p)) == "type_mismatch");
  CHECK_THROWS_WITH_AS(patro::run_sync(throws_out(p)), "out of the coroutine", std::runtime_error);
  cfg.stop();
}

TEST_CASE("run_sync resumes a lone awaited call's coroutine on its own thread") {
  auto h = patro::Hash{{"a", 4}};
  auto cfg = patro::patronize(h);
  Proxy p = patro::get_proxies(cfg).at(0);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> elsewhere{0};
  auto sequential = [&](int n) -> patro::Task<int64_t> {
    int64_t sum = 0;
    for (int i = 0; i < n; ++i) {
      sum += (co_await p["a"].async_get()).as<int64_t>();
      if (std::this_thread::get_id() != caller) ++elsewhere;
    }
    co_return sum;
  };
  // run_sync waits for each answer itself (as Future::get does): no hand-off to another thread.
  CHECK(patro::run_sync(sequential(200)) == 800);
  CHECK(elsewhere.load() == 0);
  // An error and a deadline, awaited alone under run_sync.
  auto failing = [&]() -> patro::Task<std::string> {
    try {
      co_await patro::with_deadline(p["a"][0].async_get(), 5000ms);
    } catch (const patro::Error& e) {
      co_return std::string(patro::errc_name(e.code()));
    }
    co_return std::string("no error");
  };
  CHECK(patro::run_sync(failing()) == "type_mismatch");
  cfg.stop();
}

TEST_CASE("64 concurrent coroutines on the program's loop, each resumed on the loop's thread") {
  auto h = patro::Hash{{"a", 2}};
  auto cfg = patro::patronize(h);
  Proxy p = patro::get_proxies(cfg, loop_options()).at(0);
  const std::thread::id loop_thread = std::this_thread::get_id();
  constexpr int kTasks = 64, kCalls = 20;
  std::atomic<long> off_loop{0};
  auto one = [&](int) -> patro::Task<int64_t> {
    int64_t sum = 0;
    for (int i = 0; i < kCalls; ++i) {
      sum += (co_await p["a"].async_get()).as<int64_t>();
      if (std::this_thread::get_id() != loop_thread) ++off_loop;
    }
    co_return sum;
  };
  std::vector<patro::Task<int64_t>> tasks;
  for (int t = 0; t < kTasks; ++t) tasks.push_back(one(t));
  for (auto& t : tasks) t.start();  // each runs to its first co_await, sending its first call
  const int fd = patro::event_fd(p);
  const auto give_up = std::chrono::steady_clock::now() + 120s;
  auto all_done = [&] {
    for (auto& t : tasks)
      if (!t.done()) return false;
    return true;
  };
  while (!all_done() && std::chrono::steady_clock::now() < give_up)
    if (readable(fd, 1000)) patro::run_ready(p);
  REQUIRE(all_done());
  for (auto& t : tasks) CHECK(t.result() == 2 * kCalls);
  CHECK(off_loop.load() == 0);
  cfg.stop();
}
