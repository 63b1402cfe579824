// Monitor locks against a server in this process. Each get_proxies() call is one monitor.
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include <patro/patro.hpp>

using namespace std::chrono_literals;
using patro::Errc;
using patro::Proxy;
using patro::SyncError;

namespace {

patro::ServerOptions options(bool steal_ok = false) {
  patro::ServerOptions o;
  o.heartbeat.interval = 100ms;
  o.heartbeat.liveness = 10;
  o.threads = 4;
  o.steal_lock_ok = steal_ok;
  o.limits.max_lock_depth = 50;
  return o;
}

struct Served {
  patro::Hash h{{"n", 0}, {"abc", 123}};
  patro::Array a;
  patro::Config cfg;
  explicit Served(bool steal_ok = false) : cfg(patro::patronize(options(steal_ok), h, a)) {}
  // A new monitor: its own connection.
  std::vector<Proxy> monitor() const {
    patro::ClientOptions o;
    o.heartbeat.interval = 100ms;
    return patro::get_proxies(cfg, o);
  }
};

}  // namespace

TEST_CASE("lock and unlock, with lock_state codes and names") {
  Served t;
  Proxy p = t.monitor().at(0);
  CHECK(patro::lock_state(p).code() == 0);
  CHECK(patro::lock_state(p).name() == "NULL");
  auto r = patro::lock(p);
  CHECK(r);
  CHECK(r.count == 1);
  CHECK(r.token > 0);
  CHECK(patro::lock_state(p).code() == 4);
  CHECK(patro::lock_state(p).name() == "LOCK");
  auto u = patro::unlock(p);
  CHECK(u);
  CHECK(u.count == 1);
  CHECK(patro::lock_state(p).code() == 0);
}

TEST_CASE("a second monitor fails a non-blocking lock at once and a timed lock after its timeout") {
  Served t;
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  REQUIRE(patro::lock(a));
  auto r = patro::lock(b, 0ms);
  CHECK_FALSE(r);
  CHECK(r.error == SyncError::timeout);
  CHECK_FALSE(patro::lock(b, -5s));  // negative: try once too
  const auto start = std::chrono::steady_clock::now();
  r = patro::lock(b, 300ms);
  CHECK_FALSE(r);
  CHECK(r.error == 1001);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  CHECK(patro::lock_state(b).code() == 0);
  CHECK(patro::unlock(a));
  CHECK(patro::lock(b, 300ms));  // free now
  CHECK(patro::unlock(b));
}

TEST_CASE("locks stack; unlock(count) releases up to count; more than held releases all") {
  Served t;
  Proxy p = t.monitor().at(0);
  for (int i = 0; i < 3; ++i) REQUIRE(patro::lock(p));
  CHECK(patro::lock_state(p).code() == 6);
  CHECK(patro::lock_state(p).depth() == 3);
  auto u = patro::unlock(p, 2);
  CHECK(u);
  CHECK(u.count == 2);
  CHECK(patro::lock_state(p).code() == 4);
  REQUIRE(patro::lock(p));
  REQUIRE(patro::lock(p));
  u = patro::unlock(p, 100);  // count exceeded: releases all three
  CHECK(u.count == 3);
  CHECK(patro::lock_state(p).code() == 0);
  REQUIRE(patro::lock(p));
  REQUIRE(patro::lock(p));
  CHECK(patro::unlock(p, -1).count == 2);  // negative: all
  u = patro::unlock(p);
  CHECK_FALSE(u);
  CHECK(u.error == SyncError::not_held);
  CHECK(patro::unlock(p, INT64_MAX).error == SyncError::not_held);
}

TEST_CASE("a depth limit gives deep_recursion rather than overflow") {
  Served t;
  Proxy p = t.monitor().at(0);
  for (int i = 0; i < 50; ++i) REQUIRE(patro::lock(p));
  auto r = patro::lock(p);
  CHECK_FALSE(r);
  CHECK(r.error == SyncError::deep_recursion);
  CHECK(patro::unlock(p, -1).count == 50);
}

TEST_CASE("wait and notify between two monitors") {
  Served t;
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  REQUIRE(patro::lock(a));
  REQUIRE(patro::lock(a));  // depth 2, restored after the wait
  auto waiting = std::async(std::launch::async, [&] { return patro::wait(a, 10s); });
  // b gets the lock once a waits, sees a in WAIT, notifies, and releases.
  REQUIRE(patro::lock(b, 10s));
  CHECK(patro::lock_state(a).code() == 1);
  CHECK(patro::lock_state(a).name() == "WAIT");
  auto n = patro::notify(b);
  CHECK(n);
  CHECK(n.count == 1);
  CHECK(patro::lock_state(a).code() == 2);  // NOTIFY: waiting to reacquire
  CHECK(patro::lock_state(b).code() == 4);  // notify does not release
  CHECK(patro::unlock(b));
  auto w = waiting.get();
  CHECK(w);
  CHECK(patro::lock_state(a).code() == 5);  // the same depth as before the wait
  CHECK(patro::unlock(a, -1).count == 2);
}

TEST_CASE("notify(-1) wakes exactly the three waiters; a second notify succeeds with 0") {
  Served t;
  std::vector<Proxy> waiters;
  for (int i = 0; i < 3; ++i) waiters.push_back(t.monitor().at(0));
  Proxy boss = t.monitor().at(0);
  std::vector<std::future<patro::SyncResult>> done;
  for (auto& w : waiters) {
    REQUIRE(patro::lock(w, 10s));
    done.push_back(std::async(std::launch::async, [&w] { return patro::wait(w, 10s); }));
    // Wait until it is waiting (bounded), so the next one can lock.
    for (int i = 0; i < 500 && patro::lock_state(w).code() != 1; ++i)
      std::this_thread::sleep_for(10ms);
    REQUIRE(patro::lock_state(w).code() == 1);
  }
  REQUIRE(patro::lock(boss, 10s));
  auto n = patro::notify(boss, -1);
  CHECK(n.count == 3);
  auto again = patro::notify(boss, -1);
  CHECK(again);  // "0 but true"
  CHECK(again.count == 0);
  CHECK(patro::unlock(boss));
  for (size_t i = 0; i < done.size(); ++i) {
    CHECK(done[i].get());
    CHECK(patro::unlock(waiters[i]));  // each reacquired in turn
  }
}

TEST_CASE("a wait that times out leaves the monitor without the lock; no lock: not_held") {
  Served t;
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  auto w = patro::wait(a, 100ms);
  CHECK(w.error == SyncError::not_held);
  CHECK(patro::notify(a).error == SyncError::not_held);
  REQUIRE(patro::lock(a));
  w = patro::wait(a, 200ms);
  CHECK_FALSE(w);
  CHECK(w.error == SyncError::timeout);
  CHECK(patro::lock_state(a).code() == 0);
  CHECK(patro::lock(b, 0ms));  // free
}

TEST_CASE("stealing refused where the server does not allow it") {
  Served t(false);
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  REQUIRE(patro::lock(a));
  auto r = patro::lock(b, 0ms, true);
  CHECK_FALSE(r);
  CHECK(r.error == SyncError::steal_refused);
  CHECK(patro::lock_state(a).code() == 4);  // the holder keeps it
}

TEST_CASE("stealing allowed: the victim is STOLEN, its unlock reports it, its token is fenced") {
  Served t(true);
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  auto ra = patro::lock(a);
  REQUIRE(ra);
  Proxy a_fenced = a.fenced(ra.token);
  a_fenced["n"] = 1;  // allowed while a holds the newest grant
  auto rb = patro::lock(b, std::nullopt, true);
  REQUIRE(rb);
  CHECK(rb.token > ra.token);
  CHECK(patro::lock_state(a).code() == 3);
  CHECK(patro::lock_state(a).name() == "STOLEN");
  CHECK(patro::lock_state(b).code() == 4);
  try {
    a_fenced["n"] = 2;
    FAIL("a fenced write with the victim's token succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::fenced);
  }
  CHECK(a_fenced["n"].get() == 1);  // reads are not fenced
  b.fenced(rb.token)["n"] = 3;
  auto u = patro::unlock(a);
  CHECK(u);  // "0 but true"
  CHECK(u.count == 0);
  CHECK(u.error == SyncError::stolen);
  CHECK(patro::lock_state(a).code() == 0);
  CHECK(patro::unlock(b));
}

TEST_CASE("a steal with a timeout waits for the timeout first") {
  Served t(true);
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  REQUIRE(patro::lock(a));
  const auto start = std::chrono::steady_clock::now();
  auto r = patro::lock(b, 200ms, true);
  CHECK(r);
  CHECK(std::chrono::steady_clock::now() - start >= 200ms);
  CHECK(patro::lock_state(a).code() == 3);
}

TEST_CASE("synchronize runs the block only with the lock, nests, and unlocks on every path") {
  Served t;
  Proxy a = t.monitor().at(0), b = t.monitor().at(0);
  auto r = patro::synchronize(a, [&] {
    CHECK(patro::lock_state(a).code() == 4);
    auto inner = patro::synchronize(a, [&] { return patro::lock_state(a).code(); });
    CHECK(inner == 5);
    return 42;
  });
  REQUIRE(r);
  CHECK(*r == 42);
  CHECK(patro::lock_state(a).code() == 0);
  CHECK_THROWS_AS(patro::synchronize(a, [] { throw std::runtime_error("boom"); }),
                  std::runtime_error);
  CHECK(patro::lock_state(a).code() == 0);
  REQUIRE(patro::lock(b));
  bool ran = false;
  auto skipped = patro::synchronize(a, [&] { ran = true; }, {.timeout = 100ms, .steal = false});
  CHECK_FALSE(skipped.has_value());
  CHECK_FALSE(ran);
  CHECK(patro::unlock(b));
  auto done = patro::synchronize(a, [&] { ran = true; }, {.timeout = 5s});
  CHECK(done.has_value());
  CHECK(ran);
}

TEST_CASE("the lock is released when its holder's connection closes, and the next waiter granted") {
  Served t;
  Proxy b = t.monitor().at(0);
  uint64_t first_token = 0;
  {
    auto a = t.monitor();
    auto r = patro::lock(a.at(0));
    REQUIRE(r);
    first_token = r.token;
    auto waiting = std::async(std::launch::async, [&] { return patro::lock(b, 10s); });
    // Until the server shows b parked behind a (bounded), so the release is what grants it.
    Proxy observer = t.monitor().at(0);
    bool parked = false;
    for (int i = 0; i < 500 && !parked; ++i) {
      parked = patro::lock_info(observer).waiters == 1;
      if (!parked) std::this_thread::sleep_for(10ms);
    }
    REQUIRE(parked);
    a.clear();  // the last proxy of the connection goes: the client says goodbye
    auto g = waiting.get();
    CHECK(g);
    CHECK(g.token > first_token);
  }
}

TEST_CASE("grants carry tokens that only grow") {
  Served t;
  Proxy p = t.monitor().at(0);
  uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = patro::lock(p);
    REQUIRE(r);
    CHECK(r.token > last);
    last = r.token;
    REQUIRE(patro::unlock(p));
  }
}

TEST_CASE("bad input: a lock on something that is not an object, or on an object that is gone") {
  Served t;
  Proxy p = t.monitor().at(0);
  try {
    (void)patro::lock(p["abc"]);
    FAIL("locking a plain value worked");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::type_mismatch);
  }
  Proxy ghost(p.connection(), patro::ObjectId{p.id().server, 777});
  try {
    (void)patro::lock(ghost);
    FAIL("locking an unknown object worked");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::unknown_object);
  }
  // A huge timeout is fine, and granted at once when free.
  CHECK(patro::lock(p, std::chrono::hours(24 * 365 * 100)));
  CHECK(patro::unlock(p, -1));
  // A nested container has its own lock.
  p["inner"] = patro::Value::hash({{"x", 1}});
  CHECK(patro::lock(p["inner"]));
  CHECK(patro::lock_state(p).code() == 0);
  CHECK(patro::lock_state(p["inner"]).code() == 4);
}
