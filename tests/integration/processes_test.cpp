// The bus across real processes: broker, servers and clients each in their own process.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "../support/sanitizers.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

std::unique_ptr<Process> start_server(const TempDir& dir, const std::string& broker,
                                      const std::string& config_name = "server.conf") {
  std::vector<std::string> argv{program("PATRO_TEST_SERVER"),
                                dir.file(config_name),
                                "--heartbeat-ms",
                                "100",
                                "--liveness",
                                "20"};  // for an embedded broker: a wide window under load
  if (!broker.empty()) {
    argv.push_back("--broker");
    argv.push_back(broker);
  }
  auto p = std::make_unique<Process>(argv);
  REQUIRE(wait_for_file(dir.file(config_name), 10s));
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

}  // namespace

TEST_CASE("the hash example with broker, server and client as three processes") {
  TempDir dir;
  BrokerProcess broker(dir);
  const std::string conf = dir.file("h.conf");
  Process server({program("PATRO_EXAMPLE_SERVER"), conf, broker.back}, dir.file("server.out"));
  REQUIRE(wait_for_file(conf, 10s));
  CHECK(patro::test::read_file(conf).find(broker.front) != std::string::npos);
  Process client({program("PATRO_EXAMPLE_CLIENT"), conf}, dir.file("client.out"));
  CHECK(client.wait(30s) == 0);
  const std::string out = patro::test::read_file(dir.file("client.out"));
  CHECK(out.find("p[\"abc\"]          = 123") != std::string::npos);
  CHECK(out.find("erased def[1]{ghi} = \"jkl\"") != std::string::npos);
  CHECK(server.stop() == 0);
  const std::string seen = patro::test::read_file(dir.file("server.out"));
  CHECK(seen.find("def[2]=\"pqr\" def[1]{ghi} exists=no") != std::string::npos);
  CHECK(broker.proc->stop() == 0);
}

TEST_CASE("the hash example with the embedded broker in two processes") {
  TempDir dir;
  const std::string conf = dir.file("h.conf");
  Process server({program("PATRO_EXAMPLE_SERVER"), conf}, dir.file("server.out"));
  REQUIRE(wait_for_file(conf, 10s));
  Process client({program("PATRO_EXAMPLE_CLIENT"), conf}, dir.file("client.out"));
  CHECK(client.wait(30s) == 0);
  CHECK(patro::test::read_file(dir.file("client.out")).find("def has 3 elements") !=
        std::string::npos);
  CHECK(server.stop() == 0);
}

// The values and adds of the two counting cases: a quarter as many under a sanitizer
// (support/sanitizers.hpp), where every client and the server run several times slower.
constexpr long kPushes = patro::test::scaled(10'000, 4);
constexpr long kAdds = patro::test::scaled(5'000, 4);

TEST_CASE(
    "four processes push 10,000 values each (a quarter under a sanitizer): none lost or doubled") {
  TempDir dir;
  auto server = start_server(dir, "");
  const std::string conf = dir.file("server.conf");
  std::vector<Process> clients;
  for (int k = 0; k < 4; ++k)
    clients.emplace_back(std::vector<std::string>{program("PATRO_TEST_CLIENT"), "push", conf, "1",
                                                  "c" + std::to_string(k),
                                                  std::to_string(kPushes)});
  for (auto& c : clients) CHECK(c.wait(300s) == 0);
  auto ps = patro::get_proxies(conf, fast_client());
  auto values = ps.at(1).values();
  CHECK(values.size() == static_cast<size_t>(4 * kPushes));
  std::set<std::string> distinct;
  for (const auto& v : values) distinct.insert(v.as<std::string>());
  CHECK(distinct.size() == static_cast<size_t>(4 * kPushes));
  for (int k = 0; k < 4; ++k) {
    CHECK(distinct.count("c" + std::to_string(k) + "-0") == 1);
    CHECK(distinct.count("c" + std::to_string(k) + "-" + std::to_string(kPushes - 1)) == 1);
  }
  CHECK(server->stop() == 0);
}

TEST_CASE(
    "four processes increment one hash entry 5,000 times each (a quarter under a sanitizer)") {
  TempDir dir;
  auto server = start_server(dir, "");
  const std::string conf = dir.file("server.conf");
  std::vector<Process> clients;
  for (int k = 0; k < 4; ++k)
    clients.emplace_back(std::vector<std::string>{program("PATRO_TEST_CLIENT"), "add", conf, "2",
                                                  "n", std::to_string(kAdds)});
  for (auto& c : clients) CHECK(c.wait(300s) == 0);
  auto ps = patro::get_proxies(conf, fast_client());
  CHECK(ps.at(2)["n"].get() == 4 * kAdds);  // the count is exact
  CHECK(server->stop() == 0);
}

TEST_CASE(
    "killing the server while a client waits gives a clear error within the liveness window") {
  TempDir dir;
  BrokerProcess broker(dir);
  auto server = start_server(dir, broker.back);
  auto ps = patro::get_proxies(dir.file("server.conf"), fast_client());
  CHECK(ps.at(0)["abc"].get() == 123);
  // Freeze the server so the call is in flight when it dies, then kill it.
  server->signal(SIGSTOP);
  const uint64_t routed_before = patro::broker_info(broker.front, fast_client()).stats.routed;
  auto pending = std::async(std::launch::async, [&] { return ps.at(1).push(1); });
  auto get = std::async(std::launch::async, [&] { return ps.at(0)["abc"].get(); });
  // Until the broker has routed both calls to the frozen server (bounded).
  bool in_flight = false;
  for (int i = 0; i < 500 && !in_flight; ++i) {
    in_flight = patro::broker_info(broker.front, fast_client()).stats.routed >= routed_before + 2;
    if (!in_flight) std::this_thread::sleep_for(10ms);
  }
  REQUIRE(in_flight);
  const auto killed = std::chrono::steady_clock::now();
  server->signal(SIGKILL);
  CHECK(server->wait(10s).has_value());
  patro::remove_stale_lock_segments();  // the killed server's segments
  try {
    (void)get.get();
    FAIL("the call succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::server_unavailable);
  }
  try {
    (void)pending.get();
    FAIL("the call succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::outcome_unknown);  // a push is not idempotent
  }
  // Within the window (500 ms) plus scheduling slack; far below the 60 s call deadline.
  CHECK(std::chrono::steady_clock::now() - killed < 3s);
  // Later calls get a definite answer too.
  try {
    (void)ps.at(0)["abc"].get();
    FAIL("the call succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::server_unavailable);
  }
  CHECK(broker.proc->stop() == 0);
}

TEST_CASE("restarting the broker: the server registers again and clients continue") {
  TempDir dir;
  auto broker = std::make_unique<BrokerProcess>(dir);
  const std::string front = broker->front, back = broker->back;
  auto server = start_server(dir, back);
  auto ps = patro::get_proxies(dir.file("server.conf"), fast_client());
  CHECK(ps.at(0)["abc"].get() == 123);
  ps.at(0)["abc"] = 124;
  CHECK(broker->proc->stop() == 0);
  broker = std::make_unique<BrokerProcess>(dir, front, back);  // the same endpoints
  bool ok = false;
  std::string last_error;
  for (int i = 0; i < 100 && !ok; ++i) {
    try {
      ok = ps.at(0)["abc"].get() == 124;
    } catch (const patro::Error& e) {
      last_error = e.what();
      std::this_thread::sleep_for(100ms);
    }
  }
  INFO(last_error);
  CHECK(ok);
  CHECK(ps.at(1).push("after restart") == 1);
  // New clients find the server's names at the new broker.
  CHECK(patro::get_proxy(front, "jobs", fast_client()).size() == 1);
  CHECK(server->stop() == 0);
  CHECK(broker->proc->stop() == 0);
}

TEST_CASE("a call that gets no answer by its deadline fails with a timeout") {
  TempDir dir;
  // A long liveness window at the broker, so it keeps the frozen server and only the client's
  // deadline acts.
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "100");
  Process server({program("PATRO_TEST_SERVER"), dir.file("s.conf"), "--broker", broker.back,
                  "--heartbeat-ms", "100", "--liveness", "100"});
  REQUIRE(wait_for_file(dir.file("s.conf"), 10s));
  patro::ClientOptions opts = fast_client();
  opts.call_timeout = 300ms;
  auto ps = patro::get_proxies(dir.file("s.conf"), opts);
  CHECK(ps.at(0)["abc"].get() == 123);
  server.signal(SIGSTOP);
  const auto start = std::chrono::steady_clock::now();
  try {
    (void)ps.at(0)["abc"].get();
    FAIL("the call succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::timeout);
    CHECK(std::string(e.what()).find("get is idempotent: safe to retry") != std::string::npos);
  }
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  // A call that is not idempotent: the message says it may have run, so nobody retries blindly.
  try {
    (void)ps.at(0)["no such key"].erase();
    FAIL("the call succeeded");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::timeout);
    CHECK(std::string(e.what()).find("may have run on the server") != std::string::npos);
  }
  server.signal(SIGCONT);
  CHECK(ps.at(0)["abc"].get() == 123);  // the late reply is dropped; the next call works
  CHECK(server.stop() == 0);
  CHECK(broker.proc->stop() == 0);
}
