// Several brokers: two brokers, a C++ server and patro-worker --data registered at
// both, client processes doing non-idempotent calls, lock-protected increments, queue pushes,
// takes and acks and log writes while one broker is SIGKILLed and restarted, then the other; and
// a client that moves brokers keeps its lock when the broker it left expires it.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/exactly_once.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::check_exactly_once;
using patro::test::count_text;
using patro::test::Process;
using patro::test::program;
using patro::test::read_numbers;
using patro::test::redirected;
using patro::test::TempDir;
using patro::test::wait_for_file;
using patro::test::wait_for_text;

namespace {

// Kills a broker (SIGKILL).
void kill_broker(std::unique_ptr<BrokerProcess>& broker) {
  (void)broker->proc->kill();
  broker.reset();
}

// Waits (bounded) until a name resolves at every broker of the list, one at a time.
bool registered_everywhere(const std::vector<std::string>& fronts, const std::string& name) {
  for (const std::string& front : fronts) {
    bool found = false;
    for (int i = 0; i < 200 && !found; ++i) {
      for (const auto& n : patro::broker_info(front).names) found = found || n.name == name;
      if (!found) std::this_thread::sleep_for(25ms);
    }
    if (!found) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("two brokers, each SIGKILLed and restarted in turn under load: nothing lost or doubled") {
  TempDir dir;
  auto a = std::make_unique<BrokerProcess>(dir);
  auto b = std::make_unique<BrokerProcess>(dir);
  const std::string brokers = a->front + "," + b->front;
  // The C++ server (objects: 2 is a counter hash, 3 a Slow object) and patro-worker, each
  // registered at both brokers.
  const std::string conf = dir.file("server.conf");
  Process server({program("PATRO_TEST_SERVER"), conf, "--broker", a->back, "--broker", b->back,
                  "--heartbeat-ms", "100", "--liveness", "20"});
  REQUIRE(wait_for_file(conf, 20s));
  const std::string log_path = dir.file("lines.log");
  Process worker({program("PATRO_WORKER"), "--data", dir.file("data"), "--broker", a->back,
                  "--broker", b->back, "--heartbeat-ms", "100", "queue", "work", "log", "lines",
                  log_path});
  REQUIRE(registered_everywhere({a->front, b->front}, "lines"));
  {
    // The config names both brokers' client endpoints.
    const patro::Config cfg = patro::Config::from_file(conf);
    REQUIRE(cfg.brokers().size() == 2);
    CHECK(cfg.brokers()[0] == a->front);
    CHECK(cfg.brokers()[1] == b->front);
    auto ps = patro::get_proxies(cfg);
    ps.at(2)["m"] = 0;  // the lock-protected counter
  }
  // The test server's clients go through the brokers (a config route); the worker's producer and
  // log writer too, its consumer takes the default route (direct where reachable).
  {
    patro::Config cfg = patro::Config::from_file(conf);
    cfg.set_route("broker");
    cfg.to_file(dir.file("brokered.conf"));
  }
  const std::string brokered = dir.file("brokered.conf");
  constexpr int kAdds = 3000, kIncrements = 400, kJobs = 3000, kLines = 3000;
  // Each client's stderr goes to a file of its own, shown when the client fails.
  std::vector<Process> clients;
  std::vector<std::string> client_errs;
  auto start_client = [&](std::vector<std::string> argv) {
    client_errs.push_back(dir.file("client" + std::to_string(clients.size()) + ".err"));
    clients.emplace_back(redirected(std::move(argv), client_errs.back()));
  };
  start_client({program("PATRO_TEST_CLIENT"), "add-paced", brokered, "2", "n",
                std::to_string(kAdds), "2000"});
  start_client({program("PATRO_TEST_CLIENT"), "sync-incr-paced", brokered, "2", "m",
                std::to_string(kIncrements), "10000"});
  start_client({program("PATRO_WORKER_CLIENT"), "--pace-us", "2000", "--route", "broker", "produce",
                brokers, "work", "0", std::to_string(kJobs), "1", dir.file("produced.txt")});
  start_client({program("PATRO_WORKER_CLIENT"), "consume", brokers, "work", "5",
                dir.file("consumed.txt"), "4000"});
  start_client({program("PATRO_WORKER_CLIENT"), "--pace-us", "2000", "--route", "broker", "log",
                brokers, "lines", "w", std::to_string(kLines), "1", dir.file("logged.txt")});

  // A dies and comes back, then B.
  const std::string a_front = a->front, a_back = a->back, b_front = b->front, b_back = b->back;
  std::this_thread::sleep_for(1500ms);
  kill_broker(a);
  std::this_thread::sleep_for(1500ms);
  a = std::make_unique<BrokerProcess>(dir, a_front, a_back);
  std::this_thread::sleep_for(1500ms);
  kill_broker(b);
  std::this_thread::sleep_for(1500ms);
  b = std::make_unique<BrokerProcess>(dir, b_front, b_back);

  std::vector<int> codes;
  for (auto& c : clients) codes.push_back(c.wait(180s).value_or(-2));
  for (size_t i = 0; i < codes.size(); ++i) {
    INFO("client " << i << " said: " << patro::test::read_file(client_errs[i]));
    CHECK(codes[i] == 0);  // no error reached a caller
  }
  // Whatever the consumer left (it stops after 4 s with nothing to take) is taken now.
  Process drain({program("PATRO_WORKER_CLIENT"), "consume", brokers, "work", "50",
                 dir.file("consumed.txt"), "500"});
  CHECK(drain.wait(60s).value_or(-2) == 0);

  auto ps = patro::get_proxies(brokered);
  CHECK(ps.at(2)["n"].get() == kAdds);        // each non-idempotent add ran once
  CHECK(ps.at(2)["m"].get() == kIncrements);  // lock-protected read-modify-writes all exact
  check_exactly_once(read_numbers(dir.file("produced.txt")), kJobs, "jobs acknowledged as pushed");
  check_exactly_once(read_numbers(dir.file("consumed.txt")), kJobs, "jobs taken and acknowledged");
  check_exactly_once(read_numbers(dir.file("logged.txt")), kLines, "log writes acknowledged");
  // Every acknowledged line is in the log once.
  std::vector<long> in_log;
  {
    std::ifstream in(log_path);
    for (std::string line; std::getline(in, line);) {
      std::istringstream words(line);
      std::string tag;
      long i = -1;
      words >> tag >> i;
      if (tag == "w") in_log.push_back(i);
    }
  }
  check_exactly_once(in_log, kLines, "lines in the served log");
  CHECK(worker.stop() == 0);
  CHECK(server.stop() == 0);
  CHECK(a->proc->stop() == 0);
  CHECK(b->proc->stop() == 0);
}

TEST_CASE("a client that moves brokers keeps its lock when the broker it left expires it") {
  TempDir dir;
  auto a = std::make_unique<BrokerProcess>(dir);
  auto b = std::make_unique<BrokerProcess>(dir);
  const std::string conf = dir.file("server.conf");
  const std::string server_log = dir.file("server.err");
  Process server(redirected({program("PATRO_TEST_SERVER"), conf, "--broker", a->back, "--broker",
                             b->back, "--heartbeat-ms", "100", "--liveness", "20"},
                            server_log, {"PATRO_LOG_LEVEL=debug"}));
  REQUIRE(wait_for_file(conf, 20s));
  REQUIRE(registered_everywhere({a->front, b->front}, "jobs"));
  const std::string token_file = dir.file("token");
  Process holder({program("PATRO_TEST_CLIENT"), "hold", conf, "0", token_file});
  REQUIRE(wait_for_file(token_file, 20s));
  // A stops answering (alive, but cut off): the holder moves to B, which tells the server (its
  // debug log says so). When A runs again it expires the holder, which the server ignores: the
  // holder is attached through B now.
  const std::string at_b = "attached through the broker at " + b->back;
  const size_t before = count_text(server_log, at_b);
  a->proc->signal(SIGSTOP);
  REQUIRE(wait_for_text(server_log, at_b, 30s, before + 1));
  a->proc->signal(SIGCONT);
  std::this_thread::sleep_for(1500ms);  // three of A's windows (500 ms): A expires the holder
  patro::ClientOptions co;
  co.connect_timeout = 2s;
  auto p = patro::get_proxies(conf, co).at(0);
  CHECK_FALSE(patro::lock(p, 1s));  // still held
  // The holder dies: B says so, and the lock is free.
  holder.signal(SIGKILL);
  (void)holder.wait(10s);
  auto granted = patro::lock(p, 10s);
  CHECK(granted);
  if (granted) patro::unlock(p);
  CHECK(server.stop() == 0);
  CHECK(a->proc->stop() == 0);
  CHECK(b->proc->stop() == 0);
}

TEST_CASE("brokers that disagree: a name registered at the second broker only is found and used") {
  TempDir dir;
  auto a = std::make_unique<BrokerProcess>(dir);
  auto b = std::make_unique<BrokerProcess>(dir);
  const std::string conf = dir.file("server.conf");
  Process server({program("PATRO_TEST_SERVER"), conf, "--broker", b->back, "--heartbeat-ms", "100",
                  "--liveness", "20"});
  REQUIRE(wait_for_file(conf, 20s));
  REQUIRE(registered_everywhere({b->front}, "jobs"));
  patro::ClientOptions co;
  co.connect_timeout = 2s;
  co.call_timeout = 10s;
  // The client's first broker (A) does not know the name: B does, and the client moves there.
  patro::Proxy jobs = patro::get_proxy(a->front + "," + b->front, "jobs", co);
  jobs.push("x");
  jobs.push("y");
  CHECK(jobs.size() == 2);
  CHECK(jobs[1].get() == "y");
  // A name no broker knows: not_found, naming both.
  try {
    (void)patro::get_proxy({a->front, b->front}, "nowhere", co);
    FAIL("a name no broker knows was found");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::not_found);
    CHECK(std::string(e.what()).find(a->front) != std::string::npos);
    CHECK(std::string(e.what()).find(b->front) != std::string::npos);
  }
  CHECK(server.stop() == 0);
  CHECK(a->proc->stop() == 0);
  CHECK(b->proc->stop() == 0);
}

TEST_CASE(
    "a broker's restart: a live holder keeps its lock, one that died with the broker loses it") {
  TempDir dir;
  auto a = std::make_unique<BrokerProcess>(dir);
  const std::string a_front = a->front, a_back = a->back;
  const std::string conf = dir.file("server.conf");
  Process server({program("PATRO_TEST_SERVER"), conf, "--broker", a->back, "--heartbeat-ms", "100",
                  "--liveness", "20"});
  REQUIRE(wait_for_file(conf, 20s));
  // Both hold their locks through the broker (the config's route), idle.
  {
    patro::Config cfg = patro::Config::from_file(conf);
    cfg.set_route("broker");
    cfg.to_file(dir.file("brokered.conf"));
  }
  const std::string brokered = dir.file("brokered.conf");
  Process live({program("PATRO_TEST_CLIENT"), "hold", brokered, "0", dir.file("live.token")});
  Process doomed({program("PATRO_TEST_CLIENT"), "hold", brokered, "1", dir.file("doomed.token")});
  REQUIRE(wait_for_file(dir.file("live.token"), 20s));
  REQUIRE(wait_for_file(dir.file("doomed.token"), 20s));
  // The broker and one holder die together: no broker is left to say that holder is gone.
  doomed.signal(SIGKILL);
  a->proc->signal(SIGKILL);
  (void)doomed.wait(10s);
  (void)a->proc->wait(10s);
  a = std::make_unique<BrokerProcess>(dir, a_front, a_back);
  REQUIRE(registered_everywhere({a_front}, "jobs"));
  patro::ClientOptions co;
  co.connect_timeout = 5s;
  co.route = patro::Route::broker;
  auto ps = patro::get_proxies(conf, co);
  // The server gives the clients attached through the broker twice its window (here 1 s) to come
  // back once it is registered again: the live one does (a LOCATE), the dead one cannot.
  auto granted = patro::lock(ps.at(1), 15s);
  INFO("error " << granted.error);
  CHECK(granted);
  if (granted) patro::unlock(ps.at(1));
  std::this_thread::sleep_for(1500ms);
  CHECK_FALSE(patro::lock(ps.at(0), 1s));  // the live holder still holds it
  live.signal(SIGKILL);
  (void)live.wait(10s);
  granted = patro::lock(ps.at(0), 10s);  // the broker saw it go
  CHECK(granted);
  if (granted) patro::unlock(ps.at(0));
  CHECK(server.stop() == 0);
  CHECK(a->proc->stop() == 0);
}
