// The request pipeline's barrier: whatever served code throws (a std::runtime_error, an int,
// std::bad_alloc) under get, call, an operator, lock, wait, a oneway batch or a Deferred becomes an
// error reply with the right code, and the server goes on serving.
#include <doctest/doctest.h>

#include <functional>
#include <new>
#include <stdexcept>
#include <thread>

#include <patro/patro.hpp>

#include "../support/expect.hpp"

using patro::Errc;
using patro::Proxy;
using patro::Value;
using patro::test::error_of;
using namespace std::chrono_literals;

namespace {

// What a Grumpy throws: 0 a std::runtime_error, 1 an int, 2 std::bad_alloc.
[[noreturn]] void throw_kind(int64_t kind) {
  if (kind == 0) throw std::runtime_error("grumpy");
  if (kind == 1) throw 42;
  throw std::bad_alloc();
}

const char* type_of(int64_t kind) {
  if (kind == 0) return "std::runtime_error";
  if (kind == 1) return "int";
  return "std::bad_alloc";
}

struct Grumpy {
  int64_t ok = 7;
};

void register_grumpy() {
  patro::Class<Grumpy>("Grumpy")
      .method("fail", [](Grumpy&, int64_t kind) -> int64_t { throw_kind(kind); })
      .method("ok", [](Grumpy& g) { return g.ok; })
      .op("+=", [](Grumpy&, int64_t kind) -> Grumpy& { throw_kind(kind); })
      .property("runtime", [](const Grumpy&) -> int64_t { throw_kind(0); })
      .property("int", [](const Grumpy&) -> int64_t { throw_kind(1); })
      .property("alloc", [](const Grumpy&) -> int64_t { throw_kind(2); })
      .property("v", &Grumpy::ok)
      // A method that takes a Deferred and then throws.
      .method("take_then_fail",
              [](Grumpy&, patro::Deferred, int64_t kind) -> int64_t { throw_kind(kind); })
      .method("reject_error",
              [](Grumpy&, patro::Deferred d) {
                d.reject(patro::Error(patro::Errc::disconnected, "closed"));
              })
      // A Deferred answered later, from another thread, with an exception.
      .method("later_fail", [](Grumpy&, patro::Deferred d, int64_t kind) {
        std::thread([d, kind] {
          std::this_thread::sleep_for(10ms);
          try {
            throw_kind(kind);
          } catch (...) {
            d.reject(std::current_exception());
          }
        }).detach();
      });
}

const char* const kProperty[] = {"runtime", "int", "alloc"};

patro::ServerOptions one_lane() {
  patro::ServerOptions o;
  o.threads = 1;  // one lane: a lane that died would fail the next call
  o.heartbeat.interval = 100ms;
  return o;
}

struct Served {
  std::shared_ptr<Grumpy> grumpy = (register_grumpy(), std::make_shared<Grumpy>());
  patro::Hash h{{"abc", 123}, {"g", grumpy}};
  patro::Config cfg = patro::patronize(one_lane(), grumpy, h);
  Proxy p = patro::get_proxies(cfg).at(0);

  /// The server still serves, through the same lane.
  void check_serving() const {
    CHECK(p.call("ok") == 7);
    CHECK(p["v"].get() == 7);
  }
};

/// What f throws, keeping a RemoteError's type (error_of slices it).
patro::RemoteError remote_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const patro::RemoteError& e) {
    return e;
  } catch (const patro::Error& e) {
    return patro::RemoteError(e.code(), e.what(), "");
  }
  return patro::RemoteError(Errc::ok, "no error", "");
}

/// A remote_exception naming the C++ type of what the served code threw.
void check_remote(const patro::RemoteError& e, int64_t kind) {
  CHECK(e.code() == Errc::remote_exception);
  CHECK(e.type() == type_of(kind));
}

}  // namespace

TEST_CASE("a getter that throws under get is an error reply, and the server goes on") {
  Served t;
  for (int64_t kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    check_remote(remote_of([&] { (void)t.p[kProperty[kind]].get(); }), kind);
    // Below another container too.
    Proxy h = patro::get_proxies(t.cfg).at(1);
    check_remote(remote_of([&] { (void)h["g"][kProperty[kind]].get(); }), kind);
    t.check_serving();
  }
}

TEST_CASE("a method or an operator that throws under call is an error reply") {
  Served t;
  for (int64_t kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    check_remote(remote_of([&] { (void)t.p.call("fail", kind); }), kind);
    t.check_serving();
    check_remote(remote_of([&] { t.p += kind; }), kind);
    t.check_serving();
  }
}

TEST_CASE("a getter that throws under lock is an error reply, not std::terminate") {
  Served t;
  Proxy h = patro::get_proxies(t.cfg).at(1);
  for (int64_t kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    // The lock's path runs the getter.
    check_remote(remote_of([&] { (void)patro::lock(h["g"][kProperty[kind]], 1s); }), kind);
    t.check_serving();
    // A get under a granted lock.
    auto granted = patro::lock(t.p, 1s);
    REQUIRE(static_cast<bool>(granted));
    check_remote(remote_of([&] { (void)t.p[kProperty[kind]].get(); }), kind);
    check_remote(remote_of([&] { (void)t.p.call("fail", kind); }), kind);
    t.check_serving();
    CHECK(static_cast<bool>(patro::unlock(t.p)));
  }
  CHECK(patro::lock_state(t.p).name() == "NULL");
}

TEST_CASE("a getter that throws under wait is an error reply") {
  Served t;
  Proxy h = patro::get_proxies(t.cfg).at(1);
  for (int64_t kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    check_remote(remote_of([&] { (void)patro::wait(h["g"][kProperty[kind]], 100ms); }), kind);
    t.check_serving();
    check_remote(remote_of([&] { (void)patro::notify(h["g"][kProperty[kind]]); }), kind);
    t.check_serving();
  }
}

TEST_CASE("a oneway call that throws is counted, and the batch and the server go on") {
  Served t;
  for (int64_t kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    t.p.send("fail", kind);
    t.p["v"].send_set(8 + kind);  // after the failure in the same batch: still runs
    t.p.send("fail", kind);
    CHECK(patro::await_oneway(t.p, 10s) == 2);
    CHECK(t.p["v"].get() == 8 + kind);
    t.p["v"] = 7;
    t.check_serving();
  }
}

TEST_CASE("a Deferred answered with an exception, or a method that took one and threw") {
  Served t;
  for (int64_t kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    check_remote(remote_of([&] { (void)t.p.call("take_then_fail", kind); }), kind);
    t.check_serving();
    check_remote(remote_of([&] { (void)t.p.call("later_fail", kind); }), kind);
    t.check_serving();
  }
  // A patro::Error rejected keeps its code.
  auto e = error_of([&] { (void)t.p.call("reject_error"); });
  CHECK(e.code() == Errc::disconnected);
  t.check_serving();
}
