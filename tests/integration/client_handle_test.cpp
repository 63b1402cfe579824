// patro::client(p): a proxy's connection as a handle (Perl Patro's Patro::client) — the broker it
// talks to (after a move, the new one), what it counted, and close(): calls in flight and every
// later call fail with Errc::disconnected, never a hang, and closing again does nothing. A real
// broker and the test server in processes of their own.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/expect.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::test::BrokerProcess;
using patro::test::error_of;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// The test server's objects (tests/support/test_server.cpp).
constexpr size_t kHash = 0;
constexpr size_t kSlow = 3;
constexpr size_t kNotifier = 6;

// Waits (bounded) until what() holds; whether it did.
template <class What>
bool eventually(What what, std::chrono::milliseconds limit = 20s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!what()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// A broker and the test server; stop() ends both, checking that they exit cleanly.
struct Served {
  TempDir dir;
  BrokerProcess broker{dir};
  std::unique_ptr<Process> server = std::make_unique<Process>(std::vector<std::string>{
      program("PATRO_TEST_SERVER"), dir.file("server.conf"), "--broker", broker.back});
  Served() { REQUIRE(wait_for_file(dir.file("server.conf"), 20s)); }

  std::vector<patro::Proxy> connect(patro::ClientOptions o = {}) const {
    return patro::get_proxies(dir.file("server.conf"), o);
  }
  void stop() {
    CHECK(server->stop() == 0);
    CHECK(broker.proc->stop() == 0);
  }
};

}  // namespace

TEST_CASE_FIXTURE(Served, "patro::client: one handle per connection, its broker and its counts") {
  {
    std::vector<patro::Proxy> ps = connect();
    const patro::Client c = patro::client(ps.at(kHash));
    CHECK(c.broker() == broker.front);
    CHECK(c.id() != 0);
    CHECK_FALSE(c.closed());
    // Every proxy of the connection, nested ones too, has the same one; another connection not.
    CHECK(patro::client(ps.at(kSlow)).id() == c.id());
    const patro::Proxy nested(ps.at(kHash)["def"].get());
    CHECK(patro::client(nested).id() == c.id());
    CHECK(patro::client(connect().at(kHash)).id() != c.id());
    CHECK(c.connection() == ps.at(kHash).connection());

    const patro::ClientStats before = c.stats();
    for (int i = 0; i < 10; ++i) CHECK(ps.at(kHash)["abc"].get() == 123);
    const patro::ClientStats after = c.stats();
    CHECK(after.requests == before.requests + 10);
    CHECK(after.replies == before.replies + 10);
    CHECK(after.in_flight == 0);
    CHECK(after.direct_replies <= after.replies);
    CHECK(after.moves == 0);
    CHECK(after.callbacks_served == 0);
    // An async call in flight is counted as such until its answer comes.
    auto f = ps.at(kSlow).async_call("add", 1000);
    CHECK(c.stats().in_flight == 1);
    CHECK(f.get().as<int64_t>() >= 1);
    CHECK(c.stats().in_flight == 0);
    // Oneway calls travel in batches: one request each.
    const uint64_t requests = c.stats().requests;
    for (int i = 0; i < 5; ++i) ps.at(kHash)["abc"].send_set(123);
    CHECK(patro::await_oneway(ps.at(kHash)) == 0);
    CHECK(c.stats().requests > requests);
    CHECK(c.stats().requests <= requests + 5);
    // A reference dropped is released (at the heartbeat thread's next turn).
    { const patro::Proxy dropped(ps.at(kHash)["def"].get()); }
    CHECK(eventually([&] { return c.stats().releases >= 1; }));
  }
  {
    // Which way the answers came: all straight from the server, or all through the broker.
    patro::ClientOptions o;
    o.route = patro::Route::direct;
    std::vector<patro::Proxy> ps = connect(o);
    for (int i = 0; i < 5; ++i) CHECK(ps.at(kHash)["abc"].get() == 123);
    const patro::ClientStats direct = patro::client(ps.at(kHash)).stats();
    CHECK(direct.replies == 5);
    CHECK(direct.direct_replies == 5);
    o.route = patro::Route::broker;
    ps = connect(o);
    for (int i = 0; i < 5; ++i) CHECK(ps.at(kHash)["abc"].get() == 123);
    const patro::ClientStats brokered = patro::client(ps.at(kHash)).stats();
    CHECK(brokered.replies == 5);
    CHECK(brokered.direct_replies == 0);
  }
  // A proxy with no connection has no handle.
  CHECK(error_of([] { (void)patro::client(patro::Proxy(nullptr, {})); }).code() ==
        Errc::invalid_argument);
  stop();
}

TEST_CASE("patro::client: after a move to another broker, broker() names the new one") {
  TempDir dir;
  auto a = std::make_unique<BrokerProcess>(dir);
  BrokerProcess b(dir);
  const std::string conf = dir.file("server.conf");
  Process server({program("PATRO_TEST_SERVER"), conf, "--broker", a->back, "--broker", b.back});
  REQUIRE(wait_for_file(conf, 20s));
  std::vector<patro::Proxy> ps = patro::get_proxies(conf);
  const patro::Client c = patro::client(ps.at(kHash));
  REQUIRE(c.broker() == a->front);
  CHECK(c.stats().moves == 0);
  CHECK(ps.at(kHash)["abc"].get() == 123);
  // The first broker dies: the next call moves to the second (the server is registered there).
  REQUIRE(a->proc->kill());
  a.reset();
  CHECK(ps.at(kHash)["abc"].get() == 123);
  CHECK(c.broker() == b.front);
  CHECK(c.stats().moves >= 1);
  CHECK(server.stop() == 0);
  CHECK(b.proc->stop() == 0);
}

TEST_CASE_FIXTURE(Served, "close: a call in flight and every later call fail as disconnected") {
  std::vector<patro::Proxy> ps = connect();
  patro::Client c = patro::client(ps.at(kHash));
  const patro::Proxy nested(ps.at(kHash)["def"].get());
  // A lock the connection holds is let go of when it closes (the broker tells the server).
  REQUIRE(patro::lock(ps.at(kHash)));
  // An asynchronous call in flight (the server sleeps 2 s in it), and a continuation on it.
  auto f = ps.at(kSlow).async_call("add", 2000);
  std::atomic<int> continued{-1};
  f.then([&](const patro::Future<patro::Value>& r) {
    continued = static_cast<int>(error_of([&] { (void)r.get(); }).code());
  });
  c.close();
  CHECK(c.closed());
  // The future is complete at once, with the connection's error; so is its continuation.
  CHECK(f.ready());
  const patro::Error e = error_of([&] { (void)f.get(); });
  CHECK(e.code() == Errc::disconnected);
  CHECK(std::string(e.what()).find("closed") != std::string::npos);
  CHECK(continued == static_cast<int>(Errc::disconnected));
  // Every later call on any proxy of the connection fails the same way, at once.
  CHECK(error_of([&] { (void)ps.at(kHash)["abc"].get(); }).code() == Errc::disconnected);
  CHECK(error_of([&] { (void)nested.size(); }).code() == Errc::disconnected);
  CHECK(error_of([&] { (void)ps.at(kSlow).async_call("add", 1); }).code() == Errc::disconnected);
  CHECK(error_of([&] { ps.at(kHash)["abc"].send_set(1); }).code() == Errc::disconnected);
  CHECK(error_of([&] { (void)patro::await_oneway(ps.at(kHash)); }).code() == Errc::disconnected);
  CHECK(error_of([&] { (void)patro::lock(ps.at(kHash), 1s); }).code() == Errc::disconnected);
  CHECK(error_of([&] {
          (void)ps.at(kNotifier).call("call_code", patro::Code([] { return 1; }));
        }).code() == Errc::disconnected);
  // Closing again does nothing; the handle still answers.
  c.close();
  patro::client(nested).close();
  CHECK(c.closed());
  CHECK(c.stats().in_flight == 0);
  CHECK(c.broker() == broker.front);
  // The server and broker are fine, and the closed connection's lock is free for another.
  std::vector<patro::Proxy> other = connect();
  CHECK(other.at(kHash)["abc"].get() == 123);
  auto granted = patro::lock(other.at(kHash), 10s);
  CHECK(granted);
  if (granted) patro::unlock(other.at(kHash));
  ps.clear();
  other.clear();
  stop();
}

TEST_CASE_FIXTURE(Served,
                  "close stops the connection's callback host; inside a callback it is "
                  "refused") {
  std::vector<patro::Proxy> ps = connect();
  std::vector<patro::Proxy> other = connect();
  const patro::Proxy notifier = ps.at(kNotifier);
  // Closing from inside one of the connection's own callbacks would wait for itself.
  std::atomic<int> refused{-1};
  CHECK(notifier.call("call_code", patro::Code([&](int64_t) {
                        refused = static_cast<int>(
                            error_of([&] { patro::client(notifier).close(); }).code());
                        return 0;
                      }),
                      1) == 0);
  CHECK(refused == static_cast<int>(Errc::invalid_argument));
  CHECK_FALSE(patro::client(notifier).closed());
  // A callback the server keeps: it works until the connection closes, then the server's calls
  // to it fail cleanly.
  CHECK(notifier.call("listen", patro::Code([](int64_t x) { return x * 3; })) == true);
  CHECK(other.at(kNotifier).call("fire", 2) == 6);
  CHECK(patro::client(notifier).stats().callbacks_served >= 1);
  patro::client(notifier).close();
  CHECK(patro::client(notifier).stats().callbacks_served == 0);
  const Errc e = error_of([&] { (void)other.at(kNotifier).call("fire", 3); }).code();
  CHECK((e == Errc::server_unavailable || e == Errc::outcome_unknown));
  ps.clear();
  other.clear();
  stop();
}
