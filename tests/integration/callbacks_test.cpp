// Callbacks: a client's local objects passed to a server are served by the client, and
// the server calls them back (RMI's callbacks), through the broker or the direct path, on a thread
// of the client's own; oneway calls from the server are server push. A callback whose client is
// gone gives the server a clear error, not a hang.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <fstream>
#include <functional>
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
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// The test server's Notifier (tests/support/test_server.cpp).
constexpr size_t kNotifier = 6;

struct Listener {
  std::atomic<int64_t> sum{0};
  std::atomic<int64_t> calls{0};
};

void register_listener() {
  patro::Class<Listener>("CbListener").method("on_event", [](Listener& l, int64_t x) {
    ++l.calls;
    return l.sum += x;
  });
}

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

size_t served_by(const patro::Proxy& p) {
  return patro::client(p).stats().callbacks_served;
}

size_t this_thread_hash() {
  return std::hash<std::thread::id>{}(std::this_thread::get_id());
}

// A broker, the test server and proxies to its objects; stop() ends both, checking that they exit
// cleanly.
struct Served {
  TempDir dir;
  BrokerProcess broker{dir};
  std::unique_ptr<Process> server = start();
  std::vector<patro::Proxy> ps = patro::get_proxies(dir.file("server.conf"));
  patro::Proxy notifier = ps.at(kNotifier);

  /// The notifier on a connection of its own, whose callback host frees an object lease after
  /// the server let go of it.
  patro::Proxy own_notifier(std::chrono::milliseconds lease = 100ms) const {
    patro::ClientOptions o;
    o.callback_lease = lease;
    return patro::get_proxies(dir.file("server.conf"), o).at(kNotifier);
  }

  std::unique_ptr<Process> start() {
    static const bool registered = (register_listener(), true);
    (void)registered;
    auto p = std::make_unique<Process>(
        std::vector<std::string>{program("PATRO_TEST_SERVER"), dir.file("server.conf"), "--broker",
                                 broker.back, "--heartbeat-ms", "100"});
    REQUIRE(wait_for_file(dir.file("server.conf"), 20s));
    return p;
  }
  void stop() {
    ps.clear();
    notifier = patro::Proxy(nullptr, {});
    CHECK(server->stop() == 0);
    CHECK(broker.proc->stop() == 0);
  }
};

}  // namespace

TEST_CASE_FIXTURE(Served, "a patro::Code passed to a server is called back on a client thread") {
  std::atomic<int64_t> calls{0};
  std::atomic<size_t> ran_on{0};
  patro::Code twice = [&](int64_t x) {
    ++calls;
    ran_on = this_thread_hash();
    return x * 2;
  };
  CHECK(notifier.call("call_code", twice, 21) == 42);
  CHECK(notifier.call("call_code", twice, 50) == 100);
  CHECK(calls == 2);
  CHECK(ran_on != 0);
  CHECK(ran_on != this_thread_hash());

  // Once the client stops serving its callbacks, the server's calls to them fail cleanly.
  CHECK(notifier.call("listen", twice) == true);
  CHECK(notifier.call("fire", 4) == 8);
  patro::stop_callbacks(notifier);
  const Errc e = error_of([&] { (void)notifier.call("fire", 5); }).code();
  CHECK((e == Errc::server_unavailable || e == Errc::outcome_unknown));
  CHECK(calls == 3);
  // Inside a callback it is refused (it would wait for itself).
  std::atomic<int> refused{0};
  patro::Code stopper = [&](int64_t) {
    refused = static_cast<int>(error_of([&] { patro::stop_callbacks(notifier); }).code());
    return 0;
  };
  CHECK(notifier.call("call_code", stopper, 1) == 0);
  CHECK(refused == static_cast<int>(Errc::invalid_argument));
  stop();
}

TEST_CASE_FIXTURE(Served, "a local object of a registered class is called back; its state stays") {
  auto l = std::make_shared<Listener>();
  CHECK(notifier.call("call_method", l, "on_event", 5) == 5);
  CHECK(notifier.call("call_method", l, "on_event", 7) == 12);
  CHECK(l->sum == 12);
  // A method the object does not have: the server's call fails, and says so.
  try {
    (void)notifier.call("call_method", l, "no_such", 1);
    FAIL("a call of a missing method passed");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::unknown_method);
    CHECK(std::string(e.what()).find("no_such") != std::string::npos);
  }
  stop();
}

TEST_CASE_FIXTURE(Served, "an exception a callback throws reaches the server and its caller") {
  patro::Code boom = [](int64_t) -> int64_t { throw std::runtime_error("boom from the client"); };
  try {
    (void)notifier.call("call_code", boom, 1);
    FAIL("the callback's exception was lost");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::remote_exception);
    CHECK(std::string(e.what()).find("boom from the client") != std::string::npos);
  }
  stop();
}

TEST_CASE_FIXTURE(Served, "patro::callback serves a local container instead of copying it") {
  patro::Hash local{{"k", "v"}};
  CHECK(notifier.call("get_key", patro::callback(local), "k") == "v");
  CHECK(notifier.call("set_key", patro::callback(local), "n", 3) == true);
  CHECK(local.get("n") == 3);  // the server wrote the client's own hash
  // Without callback(): a copy travels, a plain value the server cannot write through.
  CHECK(error_of([&] { (void)notifier.call("set_key", local, "m", 4); }).code() ==
        Errc::type_mismatch);
  CHECK(local.get("m").is_null());
  // Only local things can be callbacks.
  CHECK(error_of([] { (void)patro::callback(42); }).code() == Errc::invalid_argument);
  CHECK(error_of([&] { (void)patro::callback(patro::Value(notifier)); }).code() ==
        Errc::invalid_argument);
  stop();
}

TEST_CASE_FIXTURE(Served, "server push: a server's oneway calls to a client object all arrive") {
  auto l = std::make_shared<Listener>();
  // The server sends 200 oneway calls and waits for their acknowledgement before it answers.
  CHECK(notifier.call("push", l, "on_event", 200) == 200);
  CHECK(l->calls == 200);
  CHECK(l->sum == 200 * 201 / 2);
  stop();
}

TEST_CASE_FIXTURE(Served, "a callback whose client is gone gives the server a clear error") {
  const std::string ready = dir.file("listener");
  // A client that exits cleanly: its callback host leaves the broker with it.
  {
    Process child({program("PATRO_TEST_CLIENT"), "listen", dir.file("server.conf"),
                   std::to_string(kNotifier), ready});
    REQUIRE(wait_for_file(ready, 20s));
    const std::string pid = "pid " + std::to_string(child.pid());
    CHECK(notifier.call("fire", 1) == pid);
    std::ofstream(ready + ".stop") << "stop\n";
    CHECK(child.wait(20s) == 0);
    try {
      (void)notifier.call("fire", 2);
      FAIL("a callback to a client that exited passed");
    } catch (const patro::Error& e) {
      CHECK((e.code() == Errc::server_unavailable || e.code() == Errc::outcome_unknown));
      // "server … went away while the call was in flight …" or "… is not registered".
      CHECK(std::string(e.what()).find("server") != std::string::npos);
    }
  }
  // A client killed mid-life: the server's call fails once the broker sees it gone.
  std::remove(ready.c_str());
  std::remove((ready + ".stop").c_str());
  {
    Process child({program("PATRO_TEST_CLIENT"), "listen", dir.file("server.conf"),
                   std::to_string(kNotifier), ready});
    REQUIRE(wait_for_file(ready, 20s));
    CHECK(notifier.call("fire", 3) == "pid " + std::to_string(child.pid()));
    child.signal(SIGKILL);
    CHECK(child.wait(10s).has_value());
    const Errc e = error_of([&] { (void)notifier.call("fire", 4); }).code();
    CHECK((e == Errc::server_unavailable || e == Errc::outcome_unknown));
  }
  // The killed client's callback host left its lock segment behind; as any server start does.
  (void)patro::remove_stale_lock_segments();
  // The server is unharmed.
  CHECK(ps.at(0)["abc"].get() == 123);
  stop();
}

TEST_CASE_FIXTURE(Served, "a callback object is freed once the server lets go of it") {
  patro::Proxy n = own_notifier();
  CHECK(served_by(n) == 0);
  // The tokens count the callbacks' copies: 1 once the callback host let go of the object (the
  // client keeps none of its own).
  auto once = std::make_shared<int>(0);
  auto kept = std::make_shared<int>(0);
  std::atomic<int64_t> fired{0};
  // An argument the server does not keep, and one it keeps (listen).
  CHECK(n.call("listen", patro::Code([kept, &fired](int64_t x) { return fired += x; })) == true);
  CHECK(n.call("call_code", patro::Code([once](int64_t x) { return x * 2; }), 21) == 42);
  CHECK(eventually([&] { return once.use_count() == 1 && served_by(n) == 1; }));
  // The kept one outlives its lease many times over while the server holds it, and works.
  std::this_thread::sleep_for(500ms);
  CHECK(served_by(n) == 1);
  CHECK(kept.use_count() == 2);
  CHECK(n.call("fire", 4) == 4);
  CHECK(fired == 4);
  // Replaced by another: the first goes, the second works.
  auto second = std::make_shared<int>(0);
  CHECK(n.call("listen", patro::Code([second](int64_t x) { return x + 100; })) == true);
  CHECK(eventually([&] { return kept.use_count() == 1 && served_by(n) == 1; }));
  CHECK(second.use_count() == 2);
  CHECK(n.call("fire", 5) == 105);
  // Let go of: nothing is served any more, while the connection lives on.
  CHECK(n.call("unlisten") == true);
  CHECK(eventually([&] { return second.use_count() == 1 && served_by(n) == 0; }));
  CHECK(fired == 4);

  // An object of a registered class, passed as an argument: the host drops its share of it.
  auto l = std::make_shared<Listener>();
  CHECK(n.call("call_method", l, "on_event", 5) == 5);
  CHECK(eventually([&] { return l.use_count() == 1 && served_by(n) == 0; }));
  CHECK(l->calls == 1);

  // Stored in a served container by a set, then erased there.
  patro::Proxy h = patro::Proxy(n.connection(), ps.at(0).id());
  auto stored = std::make_shared<int>(0);
  h["cb"] = patro::Code([stored](int64_t x) { return x - 1; });
  CHECK(patro::Proxy(h["cb"].get())(10) == 9);
  CHECK(served_by(n) == 1);
  (void)h["cb"].erase();
  CHECK(eventually([&] { return stored.use_count() == 1 && served_by(n) == 0; }));
  // The connection still serves new callbacks.
  CHECK(n.call("call_code", patro::Code([](int64_t x) { return x + 1; }), 1) == 2);
  n = patro::Proxy(nullptr, {});
  h = patro::Proxy(nullptr, {});
  stop();
}

TEST_CASE_FIXTURE(Served, "passing a callback again while its releases are on their way") {
  patro::Proxy n = own_notifier(50ms);
  const patro::Code same([](int64_t x) { return x + 1; });
  // Rounds of passes in flight together, paced so that they meet the server's releases of the
  // rounds before (sent at its connection's heartbeat turns) and the host's collection after
  // the lease at different points. Each pass is counted: no call finds the object gone.
  const int pauses_ms[] = {0, 120, 260, 410, 700, 30};
  for (const int pause : pauses_ms) {
    std::vector<patro::Future<patro::Value>> calls;
    for (int64_t i = 0; i < 16; ++i) calls.push_back(n.async_call("call_code", same, i));
    for (int64_t i = 0; i < 16; ++i) CHECK(calls[static_cast<size_t>(i)].get() == i + 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause));
  }
  // Every pass released: the host serves nothing, though the client still holds its Code.
  CHECK(eventually([&] { return served_by(n) == 0; }));
  n = patro::Proxy(nullptr, {});
  stop();
}
