// Monitor locks across processes: Perl Patro's synchronization scenarios with each monitor in its
// own process, holder death, the /dev/shm lifecycle and the patro-locks tool.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <future>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "../support/sanitizers.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// The test server serves: 0 a hash, 1 an array ("jobs"), 2 a hash {"n": 0}.
struct Cluster {
  TempDir dir;
  patro::test::BrokerProcess broker{dir};  // before front and back, which copy its endpoints
  std::string front, back, conf;
  std::unique_ptr<Process> server;

  explicit Cluster(const std::string& name = "") : front(broker.front), back(broker.back) {
    conf = dir.file("server.conf");
    start_server(name);
  }
  void start_server(const std::string& name) {
    std::remove(conf.c_str());
    std::vector<std::string> argv{
        program("PATRO_TEST_SERVER"), conf, "--broker", back, "--heartbeat-ms", "100"};
    if (!name.empty()) {
      argv.push_back("--name");
      argv.push_back(name);
    }
    server = std::make_unique<Process>(argv);
    REQUIRE(wait_for_file(conf, 10s));
  }
  std::vector<patro::Proxy> monitor() const {
    patro::ClientOptions o;
    o.heartbeat.interval = 100ms;
    return patro::get_proxies(conf, o);
  }
  Process client(std::vector<std::string> args) const {
    args.insert(args.begin(), program("PATRO_TEST_CLIENT"));
    return Process(args);
  }
  ~Cluster() {
    if (server) server->stop();
    broker.proc->stop();
  }
};

std::string locks_json(const std::string& name) {
  TempDir d;
  Process tool({program("PATRO_LOCKS"), "--json", name}, d.file("out"));
  if (tool.wait(10s) != 0) return {};
  return read_file(d.file("out"));
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE(
    "four processes each do 2,500 read-modify-write increments inside synchronize (a quarter "
    "under a sanitizer)") {
  // A quarter under a sanitizer (support/sanitizers.hpp): a lost update shows in any number.
  constexpr long kIncrements = patro::test::scaled(2'500, 4);
  Cluster c;
  std::vector<Process> clients;
  for (int k = 0; k < 4; ++k)
    clients.push_back(c.client({"sync-incr", c.conf, "2", "n", std::to_string(kIncrements)}));
  for (auto& p : clients) CHECK(p.wait(300s) == 0);
  CHECK(c.monitor().at(2)["n"].get() == 4 * kIncrements);
}

TEST_CASE(
    "a bounded queue (capacity 10) from a served array with wait/notify: 1 producer, 3 "
    "consumers") {
  Cluster c;
  std::vector<Process> consumers;
  for (int k = 0; k < 3; ++k)
    consumers.push_back(c.client({"consume", c.conf, "1", c.dir.file("out" + std::to_string(k))}));
  Process producer = c.client({"produce", c.conf, "1", "400", "10", "3"});
  CHECK(producer.wait(300s) == 0);
  std::multiset<int> seen;
  for (auto& p : consumers) CHECK(p.wait(60s) == 0);
  for (int k = 0; k < 3; ++k) {
    std::istringstream in(read_file(c.dir.file("out" + std::to_string(k))));
    for (int v; in >> v;) seen.insert(v);
  }
  CHECK(seen.size() == 400);
  CHECK(std::set<int>(seen.begin(), seen.end()).size() == 400);  // each item consumed once
  CHECK(std::accumulate(seen.begin(), seen.end(), 0) == 400 * 401 / 2);
  CHECK(c.monitor().at(1).size() == 0);
}

TEST_CASE("a wait/notify handshake between two processes, watched with patro-locks") {
  Cluster c("handshake-test");
  Process waiter = c.client({"wait-notified", c.conf, "0"});
  // The waiter is in WAIT once the tool shows one monitor waiting for a notify (bounded).
  bool waiting = false;
  for (int i = 0; i < 200 && !waiting; ++i) {
    waiting = locks_json("handshake-test").find("\"in_wait\":1") != std::string::npos;
    if (!waiting) std::this_thread::sleep_for(25ms);
  }
  REQUIRE(waiting);
  auto p = c.monitor().at(0);
  REQUIRE(patro::lock(p, 10s));
  CHECK(patro::notify(p).count == 1);
  CHECK(patro::unlock(p));
  CHECK(waiter.wait(30s) == 0);
}

TEST_CASE(
    "kill -9 of the holder: the next waiter is granted within the liveness window, with a "
    "larger token") {
  Cluster c("holder-death-test");
  const std::string token_file = c.dir.file("token");
  Process holder = c.client({"hold", c.conf, "0", token_file});
  REQUIRE(wait_for_file(token_file, 20s));
  const uint64_t dead_token = std::stoull(read_file(token_file));
  auto p = c.monitor().at(0);
  auto granted = std::async(std::launch::async, [&] { return patro::lock(p, 20s); });
  // The tool shows the holder and our request waiting (bounded).
  bool queued = false;
  for (int i = 0; i < 200 && !queued; ++i) {
    const std::string js = locks_json("holder-death-test");
    queued = js.find("\"waiting\":1") != std::string::npos &&
             js.find("\"token\":" + std::to_string(dead_token)) != std::string::npos &&
             js.find("\"depth\":1") != std::string::npos;
    if (!queued) std::this_thread::sleep_for(25ms);
  }
  REQUIRE(queued);
  const auto killed = std::chrono::steady_clock::now();
  holder.signal(SIGKILL);
  auto r = granted.get();
  CHECK(r);
  CHECK(r.token > dead_token);
  CHECK(std::chrono::steady_clock::now() - killed < 5s);  // window 500 ms, plus slack
  CHECK(patro::unlock(p));
}

TEST_CASE("/dev/shm: a crashed server's segments are replaced at restart, removed at clean stop") {
  Cluster c("crash-test");
  CHECK(exists("/dev/shm/patro-crash-test-locks"));
  uint64_t before = 0;
  {
    auto p = c.monitor().at(0);
    auto r = patro::lock(p);  // the segment now holds state
    REQUIRE(r);
    before = r.token;
  }
  c.server->signal(SIGKILL);
  CHECK(c.server->wait(10s).has_value());
  CHECK(exists("/dev/shm/patro-crash-test-locks"));  // left behind by the crash
  c.start_server("crash-test");                      // the same name: removed and recreated
  auto p = c.monitor().at(0);
  auto r = patro::lock(p, 5s);
  CHECK(r);
  CHECK(r.token > before);  // tokens grow even across a restart of the server
  CHECK(patro::unlock(p));
  CHECK(c.server->stop() == 0);
  CHECK_FALSE(exists("/dev/shm/patro-crash-test-locks"));
  CHECK_FALSE(exists("/dev/shm/patro-crash-test-locks-cond"));
  CHECK_FALSE(exists("/dev/shm/sem.patro-crash-test-locks-mutex"));
}
