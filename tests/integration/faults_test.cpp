// Calls that survive faults: the broker SIGKILLed and restarted under load (exactly once through
// retries and the server's reply cache), deadlines the server keeps, and a server killed mid-call.
#include <doctest/doctest.h>

#include <signal.h>

#include <future>
#include <thread>

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

std::unique_ptr<Process> start_server(const TempDir& dir, const std::string& broker,
                                      std::vector<std::string> extra = {},
                                      const std::string& config = "server.conf") {
  std::vector<std::string> argv{program("PATRO_TEST_SERVER"),
                                dir.file(config),
                                "--broker",
                                broker,
                                "--heartbeat-ms",
                                "100",
                                "--liveness",
                                "20"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = std::make_unique<Process>(argv);
  REQUIRE(wait_for_file(dir.file(config), 20s));
  return p;
}

patro::ClientOptions fast_client() {
  patro::ClientOptions o;
  o.heartbeat.interval = 100ms;
  o.call_timeout = 60s;
  // These calls watch the broker route (its counters, its faults): the brokered path. The
  // client processes the tests start take the default route (direct where reachable).
  o.route = patro::Route::broker;
  return o;
}

// Kills the broker (SIGKILL) and starts a new one on the same endpoints every period until the
// clients have all exited, at least `least` times; bounded by `limit`. Returns the restarts.
int restart_broker_until_done(const TempDir& dir, std::unique_ptr<BrokerProcess>& broker,
                              std::vector<Process>& clients, std::vector<int>& codes, int least,
                              std::chrono::milliseconds period, std::chrono::seconds limit) {
  const std::string front = broker->front, back = broker->back;
  const auto give_up = std::chrono::steady_clock::now() + limit;
  int restarts = 0;
  codes.assign(clients.size(), -1);
  size_t exited = 0;
  while (std::chrono::steady_clock::now() < give_up) {
    const auto next = std::chrono::steady_clock::now() + period;
    while (std::chrono::steady_clock::now() < next && exited < clients.size()) {
      for (size_t i = 0; i < clients.size(); ++i) {
        if (codes[i] != -1) continue;
        if (auto rc = clients[i].wait(0ms)) {
          codes[i] = *rc;
          ++exited;
        }
      }
      std::this_thread::sleep_for(20ms);
    }
    if (exited == clients.size() && restarts >= least) break;
    broker->proc->signal(SIGKILL);
    (void)broker->proc->wait(10s);
    broker = std::make_unique<BrokerProcess>(dir, front, back);
    ++restarts;
  }
  for (size_t i = 0; i < clients.size(); ++i)
    if (codes[i] == -1) codes[i] = clients[i].wait(120s).value_or(-2);
  return restarts;
}

}  // namespace

TEST_CASE("the broker SIGKILLed and restarted under load: every add runs exactly once") {
  TempDir dir;
  auto broker = std::make_unique<BrokerProcess>(dir);
  auto server = start_server(dir, broker->back);
  const std::string conf = dir.file("server.conf");
  constexpr int kCalls = 3000;
  std::vector<Process> clients;
  // Paced (1 ms apart), so the calls span the restarts.
  for (int k = 0; k < 3; ++k)
    clients.emplace_back(std::vector<std::string>{program("PATRO_TEST_CLIENT"), "add-paced", conf,
                                                  "2", "n", std::to_string(kCalls), "1000"});
  std::vector<int> codes;
  const int restarts =
      restart_broker_until_done(dir, broker, clients, codes, 5, 1000ms, std::chrono::seconds(240));
  CHECK(restarts >= 5);
  for (int rc : codes) CHECK(rc == 0);  // no error reached a caller
  auto ps = patro::get_proxies(conf, fast_client());
  CHECK(ps.at(2)["n"].get() == 3 * kCalls);
  const patro::BrokerInfo info = patro::broker_info(broker->front, fast_client());
  MESSAGE("restarts " << restarts << ", dedup hits " << info.stats.dedup_hits);
  CHECK(server->stop() == 0);
  CHECK(broker->proc->stop() == 0);
}

TEST_CASE("the broker restarted while the lanes run slow calls: retries meet calls still running") {
  TempDir dir;
  auto broker = std::make_unique<BrokerProcess>(dir);
  auto server = start_server(dir, broker->back, {"--threads", "2"});
  // Through the broker (a config's route): its restarts must meet calls still running. (The test
  // above takes the default route: direct calls do not notice the broker's restarts at all.)
  patro::Config cfg = patro::Config::from_file(dir.file("server.conf"));
  cfg.set_route("broker");
  const std::string conf = dir.file("brokered.conf");
  cfg.to_file(conf);
  constexpr int kCalls = 150;
  std::vector<Process> clients;
  for (int k = 0; k < 3; ++k)
    clients.emplace_back(std::vector<std::string>{program("PATRO_TEST_CLIENT"), "slow-add", conf,
                                                  "3", "20", std::to_string(kCalls)});
  std::vector<int> codes;
  const int restarts =
      restart_broker_until_done(dir, broker, clients, codes, 5, 700ms, std::chrono::seconds(240));
  CHECK(restarts >= 5);
  for (int rc : codes) CHECK(rc == 0);
  auto ps = patro::get_proxies(conf, fast_client());
  const int64_t count = ps.at(3).call("count").as<int64_t>();  // printed if the check fails
  CHECK(count == 3 * kCalls);
  // The copies that met their first still running were answered from it, not run again.
  bool counted = false;
  for (int i = 0; i < 50 && !counted; ++i) {
    counted = patro::broker_info(broker->front, fast_client()).stats.dedup_hits > 0;
    if (!counted) std::this_thread::sleep_for(100ms);
  }
  CHECK(counted);
  CHECK(server->stop() == 0);
  CHECK(broker->proc->stop() == 0);
}

TEST_CASE("a request whose deadline passed while it queued is not run") {
  TempDir dir;
  BrokerProcess broker(dir);
  auto server = start_server(dir, broker.back, {"--threads", "1"});
  const std::string conf = dir.file("server.conf");
  auto busy = patro::get_proxies(conf, fast_client());
  patro::ClientOptions hasty = fast_client();
  hasty.call_timeout = 200ms;
  auto ps = patro::get_proxies(conf, hasty);
  CHECK(ps.at(2)["n"].get() == 0);
  // The only lane sleeps 1.5 s; the add waits behind it in the lane's socket past its deadline.
  auto sleeper = std::async(std::launch::async, [&] { return busy.at(3).call("add", 1500); });
  std::this_thread::sleep_for(200ms);
  try {
    ps.at(2)["n"].add(1);
    FAIL("the add succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::timeout);
  }
  CHECK(sleeper.get() == 1);
  CHECK(busy.at(2)["n"].get() == 0);  // the counter did not move
  bool counted = false;
  for (int i = 0; i < 50 && !counted; ++i) {
    counted = patro::broker_info(broker.front, fast_client()).stats.expired >= 1;
    if (!counted) std::this_thread::sleep_for(100ms);
  }
  CHECK(counted);
  CHECK(server->stop() == 0);
  CHECK(broker.proc->stop() == 0);
}

TEST_CASE("a parked lock wait is cancelled at its request's deadline and leaves no queue entry") {
  TempDir dir;
  BrokerProcess broker(dir);
  auto server = start_server(dir, broker.back);
  const std::string conf = dir.file("server.conf");
  auto holder = patro::get_proxies(conf, fast_client());
  auto waiter = patro::get_proxies(conf, fast_client());
  REQUIRE(patro::lock(holder.at(0)));
  // A lock with no timeout of its own, bounded only by the request's deadline of 300 ms.
  patro::detail::CallExtras extras;
  extras.timeout = 300ms;
  const patro::ObjectId id = waiter.at(0).id();
  try {
    (void)waiter.at(0).connection()->call(id, patro::wire::Op::Lock, {},
                                          {patro::Value(), patro::Value(false), patro::Value()}, {},
                                          patro::wire::CallContext::Scalar, extras);
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::timeout);
  }
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    gone = patro::lock_info(holder.at(0)).waiters == 0;
    if (!gone) std::this_thread::sleep_for(20ms);
  }
  CHECK(gone);
  CHECK(patro::unlock(holder.at(0)));
  CHECK(server->stop() == 0);
  CHECK(broker.proc->stop() == 0);
}

TEST_CASE(
    "a server SIGKILLed mid-call: outcome_unknown for an add, a transparent retry for a get") {
  TempDir dir;
  // A 2 s window at the broker: the restarted server registers within the client's grace.
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "20");
  auto server = start_server(dir, broker.back, {"--server-id", "4242"});
  auto ps = patro::get_proxies(dir.file("server.conf"), fast_client());
  CHECK(ps.at(0)["abc"].get() == 123);
  ps.at(0)["abc"] = 124;
  server->signal(SIGSTOP);
  const uint64_t routed = patro::broker_info(broker.front, fast_client()).stats.routed;
  auto add = std::async(std::launch::async, [&] { ps.at(2)["n"].add(1); });
  auto get = std::async(std::launch::async, [&] { return ps.at(0)["abc"].get(); });
  bool in_flight = false;
  for (int i = 0; i < 500 && !in_flight; ++i) {
    in_flight = patro::broker_info(broker.front, fast_client()).stats.routed >= routed + 2;
    if (!in_flight) std::this_thread::sleep_for(10ms);
  }
  REQUIRE(in_flight);
  server->signal(SIGKILL);
  CHECK(server->wait(10s).has_value());
  patro::remove_stale_lock_segments();
  // The same server id: the same object ids, a fresh state.
  server = start_server(dir, broker.back, {"--server-id", "4242"}, "again.conf");
  try {
    add.get();
    FAIL("the add succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::outcome_unknown);
  }
  CHECK(get.get() == 123);  // from the restarted server
  CHECK(ps.at(2)["n"].get() == 0);
  CHECK(server->stop() == 0);
  CHECK(broker.proc->stop() == 0);
}
