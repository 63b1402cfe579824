// Log forwarding (Object::Remote's Log::Remote) across real processes: a patro-broker, and a
// server process (patro-log-server) whose Logger logs lines at every level in two components.
// A client that opts in gets exactly the lines at or above its level of the components it
// selected, with their host, pid, level and component; one that does not gets none; a client
// that does not keep up gets a bounded number of lines and a count of the dropped ones; an
// unsubscribed or closed client gets nothing more; a spawned server forwards to its spawner.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::LogLevel;
using patro::LogRecord;
using patro::test::BrokerOptions;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// The records a client's on_log handler got, from the thread that drives its connection.
struct Records {
  std::mutex mu;
  std::vector<LogRecord> got;
  std::function<void(const LogRecord&)> handler() {
    return [this](const LogRecord& r) {
      std::lock_guard lock(mu);
      got.push_back(r);
    };
  }
  std::vector<LogRecord> all() {
    std::lock_guard lock(mu);
    return got;
  }
  size_t size() {
    std::lock_guard lock(mu);
    return got.size();
  }
};

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

// A broker with its default heartbeats, and the log server registered with it.
struct Cluster {
  TempDir dir;
  BrokerProcess broker;
  std::unique_ptr<Process> server;
  explicit Cluster(std::vector<std::string> extra = {})
      : broker(dir, [] {
          BrokerOptions o;
          o.heartbeat_ms.clear();
          o.liveness.clear();
          return o;
        }()) {
    std::vector<std::string> argv{program("PATRO_TEST_LOG_SERVER"), dir.file("config"), "--broker",
                                  broker.back};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server = std::make_unique<Process>(argv);
    REQUIRE(wait_for_file(dir.file("config"), 20s));
  }
  // SIGTERM: the server stops and removes its lock segments from /dev/shm.
  ~Cluster() { server->stop(); }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  patro::Proxy logger(const patro::ClientOptions& o = {}) const {
    return patro::get_proxies(dir.file("config"), o).at(0);
  }
};

// The lines of emit(tag) that a subscription at `level` selecting `components` forwards.
std::set<std::string> expected(const std::string& tag, LogLevel level,
                               const std::vector<std::string>& components) {
  static const std::pair<LogLevel, const char*> levels[] = {
      {LogLevel::fatal, "fatal"}, {LogLevel::error, "error"},     {LogLevel::warn, "warn"},
      {LogLevel::info, "info"},   {LogLevel::verbose, "verbose"}, {LogLevel::debug, "debug"},
      {LogLevel::trace, "trace"}};
  std::set<std::string> out;
  for (const auto& who : components)
    for (const auto& [l, name] : levels)
      if (l <= level) out.insert(tag + " " + who + " " + name);
  return out;
}

std::set<std::string> texts(const std::vector<LogRecord>& rs, const std::string& tag) {
  std::set<std::string> out;
  for (const auto& r : rs)
    if (r.text.rfind(tag + " ", 0) == 0) out.insert(r.text);
  return out;
}

}  // namespace

TEST_CASE("an opted-in client gets exactly its level and components, with their origin") {
  Cluster c;
  Records in, out;
  patro::ClientOptions on;
  on.forward_logs = LogLevel::info;
  on.forward_log_selections = "alpha";
  on.on_log = in.handler();
  patro::ClientOptions off;
  off.on_log = out.handler();
  auto p = c.logger(on);
  auto q = c.logger(off);
  const int64_t pid = p.call("pid").as<int64_t>();
  CHECK(pid == c.server->pid());
  CHECK(p.call("emit", "one") == 14);
  CHECK(q.call("emit", "two") == 14);
  const auto want = expected("one", LogLevel::info, {"alpha"});
  REQUIRE(eventually([&] { return texts(in.all(), "one").size() >= want.size(); }));
  // The lines of the other client's call reach the subscriber too (a server's lines, not a
  // call's); the selection and level hold for them as well.
  REQUIRE(eventually([&] { return texts(in.all(), "two").size() >= want.size(); }));
  std::this_thread::sleep_for(300ms);  // nothing more comes
  const auto got = in.all();
  CHECK(texts(got, "one") == want);
  CHECK(texts(got, "two") == expected("two", LogLevel::info, {"alpha"}));
  for (const auto& r : got) {
    CHECK(r.who == "alpha");  // the server's own lines ("server", ...) are not selected
    CHECK(r.host == host_name());
    CHECK(r.pid == pid);
    CHECK(r.level <= LogLevel::info);
    CHECK(r.text.find(" alpha ") != std::string::npos);
    CHECK(r.time.size() == 24);
    CHECK(r.dropped == 0);
    if (r.text == "one alpha warn") CHECK(r.level == LogLevel::warn);
    if (r.text == "one alpha fatal") CHECK(r.level == LogLevel::fatal);
  }
  CHECK(patro::client(p).stats().log_lines == got.size());
  // The client that did not opt in got none.
  CHECK(out.size() == 0);
  CHECK(patro::client(q).stats().log_lines == 0);

  SUBCASE("forward_logs changes the level and selection of a live connection; stop ends it") {
    patro::client(q).forward_logs(LogLevel::trace, "beta -alpha");
    CHECK(q.call("emit", "three") == 14);
    const auto all_beta = expected("three", LogLevel::trace, {"beta"});
    REQUIRE(eventually([&] { return texts(out.all(), "three").size() >= all_beta.size(); }));
    CHECK(texts(out.all(), "three") == all_beta);
    patro::client(q).stop_forwarding_logs();
    q.call("pid");  // the unsubscribe went before this request, on the same lane
    CHECK(q.call("emit", "four") == 14);
    CHECK(p.call("emit", "five") == 14);  // the subscriber still gets its lines
    REQUIRE(eventually([&] { return texts(in.all(), "five").size() >= 4; }));
    std::this_thread::sleep_for(300ms);
    CHECK(texts(out.all(), "four").empty());
    CHECK_THROWS_AS(patro::client(q).forward_logs(LogLevel::info, "--bad"), patro::Error);
  }
}

TEST_CASE("forwarded lines go to the client's log, tagged with their origin") {
  Cluster c;
  TempDir dir;
  const std::string log = dir.file("client.log");
  patro::set_log_file(log);
  {
    patro::ClientOptions o;
    o.forward_logs = LogLevel::warn;
    o.forward_log_selections = "beta";
    auto p = c.logger(o);
    const int64_t pid = p.call("pid").as<int64_t>();
    CHECK(p.call("emit", "six") == 14);
    const std::string tag = "[" + host_name() + ":" + std::to_string(pid) + " beta] six beta ";
    // Written though this process's level is warn and info lines would not be: the
    // subscription's level decides; the process's sink and selections apply.
    CHECK(patro::test::wait_for_text(log, tag + "warn", 20s));
    CHECK(patro::test::count_text(log, tag + "fatal") == 1);
    CHECK(patro::test::count_text(log, tag + "error") == 1);
    CHECK(patro::test::count_text(log, tag + "info") == 0);
    CHECK(patro::test::count_text(log, "six alpha") == 0);
    CHECK(patro::test::count_text(log, " WARN beta[") == 1);
  }
  patro::set_log_file("");
}

TEST_CASE("a client that does not keep up: bounded, drops counted, the server not held up") {
  Cluster c({"--threads", "1", "--log-queue", "50"});
  Records in;
  patro::ClientOptions o;
  o.forward_logs = LogLevel::warn;
  o.forward_log_selections = "alpha";
  o.on_log = in.handler();
  auto p = c.logger(o);
  // One call logs 5,000 lines while the only lane runs it: at most 50 wait for the client, the
  // rest are dropped and counted, and the call is not slowed by the client.
  constexpr int64_t kLines = 5000;
  CHECK(p.call("flood", kLines) == kLines);
  CHECK(p.call("emit", "seven") == 14);  // the first line after the drops carries their count
  const bool seven = eventually([&] { return texts(in.all(), "seven").size() >= 3; });
  INFO("received " << in.size() << " lines, " << patro::client(p).stats().log_lines
                   << " broker dropped " << patro::broker_info(c.broker.front).stats.dropped);
  REQUIRE(seven);
  uint64_t flood = 0, dropped = 0;
  for (const auto& r : in.all()) {
    if (r.text.rfind("flood ", 0) == 0) ++flood;
    dropped += r.dropped;
  }
  CHECK(flood <= 50);
  CHECK(dropped > 0);
  CHECK(flood + dropped == static_cast<uint64_t>(kLines));
  // Another client is served meanwhile and afterwards.
  auto q = c.logger();
  CHECK(q.call("pid").as<int64_t>() == c.server->pid());
}

TEST_CASE("a closed subscriber is forgotten: its lines are not sent") {
  Cluster c;
  patro::ClientOptions o;
  o.forward_logs = LogLevel::trace;
  Records in;
  o.on_log = in.handler();
  auto q = c.logger();
  {
    auto p = c.logger(o);
    CHECK(p.call("emit", "eight") == 14);
    REQUIRE(eventually([&] { return texts(in.all(), "eight").size() == 14; }));
    patro::client(p).close();
  }
  // The broker drops (and counts) a LOG_LINE for a client it does not know: once the server has
  // heard CLIENT_GONE, nothing is sent, and the count stays.
  std::this_thread::sleep_for(500ms);
  const uint64_t before = patro::broker_info(c.broker.front).stats.dropped;
  for (int i = 0; i < 5; ++i) CHECK(q.call("emit", "nine") == 14);
  std::this_thread::sleep_for(300ms);
  CHECK(patro::broker_info(c.broker.front).stats.dropped == before);
  CHECK(texts(in.all(), "nine").empty());
}

TEST_CASE("a spawned server forwards its lines to the spawner") {
  TempDir dir;
  Records in;
  patro::SpawnOptions so;
  so.client.forward_logs = LogLevel::verbose;
  so.client.forward_log_selections = "alpha beta";
  so.client.on_log = in.handler();
  auto ps = patro::spawn({program("PATRO_TEST_LOG_SERVER"), dir.file("config")}, so);
  auto p = ps.at(0);
  const int pid = patro::spawned_pid(p);
  CHECK(p.call("pid") == pid);
  CHECK(p.call("emit", "ten") == 14);
  const auto want = expected("ten", LogLevel::verbose, {"alpha", "beta"});
  REQUIRE(eventually([&] { return texts(in.all(), "ten").size() >= want.size(); }));
  std::this_thread::sleep_for(300ms);
  CHECK(texts(in.all(), "ten") == want);
  for (const auto& r : in.all()) CHECK(r.pid == pid);
  patro::stop_spawned(p);
}

TEST_CASE("on the direct path the subscription and the lines go by the lane's own ROUTER") {
  Cluster c;
  Records in;
  patro::ClientOptions o;
  o.route = patro::Route::direct;  // every request, the subscription with them, goes direct
  o.forward_logs = LogLevel::warn;
  o.forward_log_selections = "beta";
  o.on_log = in.handler();
  auto p = c.logger(o);
  CHECK(p.call("emit", "eleven") == 14);
  const auto want = expected("eleven", LogLevel::warn, {"beta"});
  REQUIRE(eventually([&] { return texts(in.all(), "eleven").size() >= want.size(); }));
  CHECK(texts(in.all(), "eleven") == want);
  CHECK(patro::client(p).stats().direct_replies > 0);
}
