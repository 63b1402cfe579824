// The life of the objects a server hands out: a reference a reply brought
// lives while any copy of it (or a proxy made from it) does; when the client's last copy goes the
// server is told, and it frees the object once no client has held it for the lease. Served roots
// and named objects are never freed; a container still stored in a served one lives on. A client
// that dies drops what it held. Memory stays flat over a million object-returning calls.
#include <doctest/doctest.h>

#include <signal.h>

#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "connection.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// The test server's objects (tests/support/test_server.cpp).
constexpr size_t kDesignHash = 0, kFactory = 4, kTree = 5;
constexpr auto kLease = 200ms;

std::unique_ptr<Process> start_server(const TempDir& dir, const std::string& broker) {
  auto p = std::make_unique<Process>(std::vector<std::string>{
      program("PATRO_TEST_SERVER"), dir.file("server.conf"), "--broker", broker, "--heartbeat-ms",
      "100", "--lease-ms", std::to_string(kLease.count()),
      // One glibc arena: a resident set that follows what the server holds, not how many
      // arenas its threads happened to spread their allocations over (between runs the same
      // million calls left 18.7 to 24.1 MB at rest with glibc's default, up to eight arenas a
      // core; 18.4 to 19.3 MB with one).
      "--malloc-arenas", "1"});
  REQUIRE(wait_for_file(dir.file("server.conf"), 20s));
  return p;
}

patro::ClientOptions client() {
  patro::ClientOptions o;
  o.heartbeat.interval = 100ms;  // releases leave with the heartbeat thread's next turn
  return o;
}

// Whether the object is gone from its server (unknown_object), asked by id until it is; bounded.
bool freed(const std::shared_ptr<patro::detail::Connection>& conn, patro::ObjectId id,
           std::chrono::milliseconds limit = 10s) {
  // By id, with no hold: asking does not keep it.
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < give_up) {
    try {
      (void)conn->call(id, patro::wire::Op::Describe, {}, {});
    } catch (const patro::Error& e) {
      if (e.code() == Errc::unknown_object) return true;
      throw;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

int64_t live(const patro::Proxy& factory) {
  return factory.call("live").as<int64_t>();
}

// Waits until the factory's Things alive are at most n; the last count seen.
int64_t live_at_most(const patro::Proxy& factory, int64_t n, std::chrono::milliseconds limit) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  int64_t now = live(factory);
  while (now > n && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(50ms);
    now = live(factory);
  }
  return now;
}

// A broker, the test server (its lease kLease) and proxies to its objects; stop() ends both
// processes, checking that they exit cleanly.
struct Served {
  TempDir dir;
  BrokerProcess broker{dir};
  std::unique_ptr<Process> server = start_server(dir, broker.back);
  std::vector<patro::Proxy> ps = patro::get_proxies(dir.file("server.conf"), client());
  void stop() {
    CHECK(server->stop() == 0);
    CHECK(broker.proc->stop() == 0);
  }
};

}  // namespace

TEST_CASE_FIXTURE(
    Served,
    "a returned object lives while any copy of its proxy does, and is freed after the last") {
  const patro::Proxy factory = ps.at(kFactory);

  std::optional<patro::Proxy> first(factory.call("make"));
  CHECK(first->call("get") == 1);
  const patro::ObjectId id = first->id();
  const auto conn = first->connection();
  std::optional<patro::Proxy> copy = *first;
  patro::Value as_value = *copy;  // a Value made from a proxy holds it too
  first.reset();
  copy.reset();
  std::this_thread::sleep_for(kLease * 4);  // well past the lease: the Value still holds it
  CHECK(patro::Proxy(as_value).call("get") == 1);
  CHECK(live(factory) == 1);

  as_value = patro::Value();  // the last copy
  CHECK(freed(conn, id));
  CHECK(live_at_most(factory, 0, 10s) == 0);
  CHECK(conn->released() >= 1);
  // The roots were not touched.
  CHECK(ps.at(kDesignHash)["abc"].get() == 123);
  CHECK(patro::Proxy(factory.call("make")).call("get") == 2);
  stop();
}

TEST_CASE_FIXTURE(
    Served, "a nested container's reference is released; the container lives on in its hash") {
  const patro::Proxy tree = ps.at(kTree);

  std::optional<patro::Proxy> nested(tree["nested"].get());
  CHECK((*nested)["x"].get() == 1);
  const patro::ObjectId id = nested->id();
  const auto conn = nested->connection();
  nested.reset();
  CHECK(freed(conn, id));  // gone from the table: no client holds the reference
  // Still stored in the served hash: reachable by path, and by a new reference.
  CHECK(tree["nested"]["x"].get() == 1);
  patro::Proxy again(tree["nested"].get());
  CHECK(again.id() != id);
  again["y"] = 2;
  CHECK(tree["nested"]["y"].get() == 2);
  stop();
}

TEST_CASE_FIXTURE(Served,
                  "a Future read many times holds its reference once; one never read lets it go") {
  const patro::Proxy factory = ps.at(kFactory);
  {
    // Read twice, and called on once its answer is here: one reference (the server counted one),
    // so dropping one copy frees nothing while another lives.
    patro::Future<patro::Value> f = factory.async_call("make");
    std::optional<patro::Value> first(f.get());
    const patro::Value second = f.get();
    CHECK(f.async_call("get").get() == 1);
    first.reset();
    std::this_thread::sleep_for(kLease * 4);  // the release, had one gone, and the lease
    CHECK(patro::Proxy(second).call("get") == 1);
    CHECK(live(factory) == 1);
  }
  CHECK(live_at_most(factory, 0, 10s) == 0);
  {
    // Never read: one dropped before its answer came, one after.
    patro::Future<patro::Value> answered = factory.async_call("make");
    (void)factory.async_call("make");
    answered.wait();
  }
  CHECK(live_at_most(factory, 0, 10s) == 0);
  // A call made on a result not yet here, which itself is never read.
  CHECK(factory.async_call("make").async_call("get").get() == 4);
  CHECK(live_at_most(factory, 0, 10s) == 0);
  // Given up on (timed out: its server runs it all the same) and answered late: what the answer
  // brings is let go of as it comes (the connection's heartbeat thread reads it).
  {
    patro::ClientOptions o = client();
    o.call_timeout = 50ms;
    const patro::Proxy impatient = patro::get_proxies(dir.file("server.conf"), o).at(kFactory);
    CHECK_THROWS_AS(impatient.call("make_slowly", 300), patro::Error);
    for (int i = 0; i < 200 && factory.call("made") != 5; ++i) std::this_thread::sleep_for(50ms);
    REQUIRE(factory.call("made") == 5);
    CHECK(live_at_most(factory, 0, 10s) == 0);
  }
  stop();
}

TEST_CASE_FIXTURE(Served, "a client that dies drops the references it held") {
  const patro::Proxy factory = ps.at(kFactory);
  const std::string held = dir.file("held");
  Process holder({program("PATRO_TEST_CLIENT"), "hold-things", dir.file("server.conf"),
                  std::to_string(kFactory), "50", held});
  REQUIRE(wait_for_file(held, 20s));
  std::this_thread::sleep_for(kLease * 3);  // past the lease: held, so none is freed
  CHECK(live(factory) == 50);
  holder.signal(SIGKILL);
  (void)holder.wait(10s);
  // The broker misses its heartbeats and tells the server; the objects go after the lease.
  CHECK(live_at_most(factory, 0, 30s) == 0);
  stop();
}

TEST_CASE_FIXTURE(
    Served,
    "a release of an object already freed is ignored; a malformed one is a counted failure") {
  const auto conn = ps.at(kFactory).connection();
  const patro::ObjectId nothing{ps.at(kFactory).id().server, 12345};
  conn->send_oneway(nothing, patro::wire::Op::Release, {}, {patro::Value(int64_t{3})});
  CHECK(conn->await_oneway(10s) == 0);
  conn->send_oneway(ps.at(kFactory).id(), patro::wire::Op::Release, {}, {patro::Value("two")});
  conn->send_oneway(ps.at(kFactory).id(), patro::wire::Op::Release, {}, {});
  CHECK(conn->await_oneway(10s) == 2);
  // A release of a served root changes nothing.
  conn->send_oneway(ps.at(kFactory).id(), patro::wire::Op::Release, {}, {patro::Value(int64_t{1})});
  CHECK(conn->await_oneway(10s) == 0);
  std::this_thread::sleep_for(kLease * 3);
  CHECK(live(ps.at(kFactory)) == 0);
  CHECK(patro::Proxy(ps.at(kFactory).call("make")).call("get") == 1);
  stop();
}

TEST_CASE_FIXTURE(Served, "memory stays flat over a million calls that each return a new object") {
  // As many calls again first, as a warm-up: the reply cache's 10,000 entries a client and the
  // table's buckets settle at their peak (the most objects ever waiting out their lease at once,
  // about the call rate times the lease, plus the release delay); then they stay. (A fifth as
  // many was tried: the resident set then still grew 10.2% over the measured calls in CI.)
  // The server gives back freed memory (malloc_trim) before each sample: the allocator otherwise
  // keeps the running peak of objects waiting out their lease, which follows the call rate (a run
  // on a quiet machine once grew 19.3 MB to 26.2 MB that way, with every object freed).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Fewer in the sanitizers' builds, which run ten times slower (a leaked object is counted
  // there, and a leak in the calls' path shows in any number of them); their allocators (ASan's
  // quarantine, TSan's shadow) grow by design, so there only the objects are counted.
  constexpr int kCalls = 30'000;
  constexpr bool kCheckRss = false;
#else
  constexpr int kCalls = 1'000'000;
  constexpr bool kCheckRss = true;
#endif
  constexpr int kWarmUp = kCalls;
  constexpr size_t kInFlight = 64;
  const patro::Proxy factory = ps.at(kFactory);

  // The server's resident set and heap in use after the warm-up and at each tenth of the calls.
  std::vector<int64_t> rss, heap;
  std::deque<patro::Future<patro::Value>> in_flight;
  int64_t references = 0;
  auto settle_one = [&] {
    const patro::Value thing = in_flight.front().get();  // dropped at once
    references += thing.if_reference() != nullptr ? 1 : 0;
    in_flight.pop_front();
  };
  // Each sample is taken at rest: every reference dropped and every object's lease out, so it
  // shows what stays behind (a leak), not how many objects the call rate had waiting then.
  auto sample = [&] {
    while (!in_flight.empty()) settle_one();
    CHECK(live_at_most(factory, 0, 20s) == 0);
    rss.push_back(factory.call("rss_kb").as<int64_t>());
    heap.push_back(factory.call("heap_kb").as<int64_t>());
  };
  for (int i = 0; i < kWarmUp + kCalls; ++i) {
    if (i >= kWarmUp && (i - kWarmUp) % (kCalls / 10) == 0) sample();
    in_flight.push_back(factory.async_call("make"));
    if (in_flight.size() >= kInFlight) settle_one();
  }
  sample();
  CHECK(references == kWarmUp + kCalls);
  auto list = [](const std::vector<int64_t>& kbs) {
    std::string s;
    for (int64_t kb : kbs) s += " " + std::to_string(kb);
    return s;
  };
  MESSAGE("the server's resident set (kB) after the warm-up and at each tenth of the calls:"
          << list(rss) << "; its heap in use (kB):" << list(heap));
  REQUIRE(rss.size() == 11);
  REQUIRE(rss.front() > 0);
  // A fifth more at most: on a loaded machine the resident set of a server with every object freed
  // was seen 13% above its first sample (the samples go up and down by about as much), while a
  // leak of even 4 bytes a call is 4 MB over the million calls, a quarter of the whole.
  if (kCheckRss) CHECK(rss.back() <= rss.front() + rss.front() / 5);
  // And every object goes once its lease is out.
  CHECK(live_at_most(factory, 0, 20s) == 0);
  stop();
}
