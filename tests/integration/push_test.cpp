// Server push: patro-worker's queue and log call a client's callback as jobs and lines
// come, instead of the client asking again (take, follow). A consumer whose client is gone ends,
// and what it held goes back to the queue.
#include <doctest/doctest.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/expect.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::test::error_of;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// patro-worker with its own broker, serving the objects given ("queue jobs", "log events PATH").
struct Worker {
  std::unique_ptr<Process> proc;
  std::string front;
  Worker(const TempDir& dir, std::vector<std::string> objects) {
    const std::string eps = dir.file("worker-endpoints");
    std::vector<std::string> argv{
        program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back", "tcp://127.0.0.1:*",
        "--endpoints-file",      eps,       "--heartbeat-ms",    "100"};
    argv.insert(argv.end(), objects.begin(), objects.end());
    proc = std::make_unique<Process>(argv);
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front;
  }
  patro::Proxy get(const std::string& name) const {
    patro::ClientOptions o;
    o.heartbeat.interval = 100ms;
    auto p = patro::test::resolve_when_up(front, name, o);
    if (!p) FAIL("the worker did not register " << name);
    return *p;
  }
};

// What a callback was given, from the client's callback thread.
struct Inbox {
  std::mutex mu;
  std::vector<patro::Value> got;
  size_t size() {
    std::lock_guard lock(mu);
    return got.size();
  }
  void add(patro::Value v) {
    std::lock_guard lock(mu);
    got.push_back(std::move(v));
  }
  std::vector<patro::Value> all() {
    std::lock_guard lock(mu);
    return got;
  }
};

// Waits (bounded) until pred() holds; whether it did.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

}  // namespace

TEST_CASE("a queue consumer is sent every job as it comes, each once, and acknowledges it") {
  TempDir dir;
  Worker w(dir, {"queue", "jobs"});
  const patro::Proxy q = w.get("jobs");
  Inbox inbox;
  patro::Code on_job = [&inbox, q](patro::Value item) {
    inbox.add(item[1]);
    return q.call("ack", item[0], item[2]);
  };
  const patro::Value token = q.call("consume", on_job, 4);
  CHECK(q.call("consumers") == 1);
  for (int64_t i = 0; i < 200; ++i) (void)q.call("push", i);
  REQUIRE(eventually([&] { return inbox.size() >= 200; }));
  std::set<int64_t> seen;
  for (const patro::Value& v : inbox.all()) seen.insert(v.as<int64_t>());
  CHECK(seen.size() == 200);
  CHECK(inbox.size() == 200);
  CHECK(eventually([&] { return q.call("leased") == 0; }));
  CHECK(q.call("size") == 0);
  CHECK(q.call("cancel", token) == true);
  CHECK(q.call("cancel", token) == false);
  CHECK(q.call("consumers") == 0);
  (void)q.call("push", 1000);
  std::this_thread::sleep_for(200ms);
  CHECK(inbox.size() == 200);  // cancelled: nothing more is pushed
  CHECK(q.call("size") == 1);
  // on_job holds q, whose connection serves on_job: the cycle ends here.
  patro::stop_callbacks(q);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("a consumer gets at most prefetch unacknowledged jobs; a gone one's go back") {
  TempDir dir;
  Worker w(dir, {"queue", "jobs"});
  const patro::Proxy q = w.get("jobs");
  Inbox inbox;
  {
    // Another client, which never acknowledges.
    const patro::Proxy other = w.get("jobs");
    patro::Code keep = [&inbox](patro::Value item) {
      inbox.add(item);
      return true;
    };
    (void)other.call("consume", keep, 3);
    for (int64_t i = 0; i < 10; ++i) (void)q.call("push", i);
    REQUIRE(eventually([&] { return inbox.size() >= 3; }));
    std::this_thread::sleep_for(200ms);
    CHECK(inbox.size() == 3);
    CHECK(q.call("leased") == 3);
    CHECK(q.call("size") == 7);
  }  // its connection closes: its consumer ends, its leases go back to the queue
  CHECK(eventually([&] { return q.call("consumers") == 0 && q.call("size") == 10; }));
  CHECK(q.call("leased") == 0);

  // Bad input gets a clear error.
  patro::Code noop = [](patro::Value) { return true; };
  CHECK(error_of([&] { (void)q.call("consume", 42, 1); }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { (void)q.call("consume", noop, 0); }).code() == Errc::invalid_argument);
  CHECK(q.call("consumers") == 0);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("a log subscriber is sent every line as it is written, in order, until it leaves") {
  TempDir dir;
  Worker w(dir, {"log", "events", dir.file("events.log")});
  const patro::Proxy log = w.get("events");
  Inbox inbox;
  patro::Code on_lines = [&inbox](patro::Value chunk) {
    for (const patro::Value& line : chunk["lines"].as<patro::ValueArray>()) inbox.add(line);
    return true;
  };
  (void)log.call("write", "before");  // lines already there are sent too, from the offset given
  const patro::Value token = log.call("subscribe", 0, on_lines);
  for (int i = 0; i < 100; ++i) (void)log.call("write", "line " + std::to_string(i));
  REQUIRE(eventually([&] { return inbox.size() >= 101; }));
  const auto got = inbox.all();
  CHECK(got.size() == 101);
  CHECK(got.front().as<std::string>().find("before") == 0);
  bool in_order = true;
  for (int i = 0; i < 100; ++i)
    in_order = in_order && got[static_cast<size_t>(i) + 1].as<std::string>().find(
                               "line " + std::to_string(i)) == 0;
  CHECK(in_order);
  CHECK(log.call("unsubscribe", token) == true);
  (void)log.call("write", "after");
  std::this_thread::sleep_for(200ms);
  CHECK(inbox.size() == 101);
  CHECK(error_of([&] { (void)log.call("subscribe", 0, "not a callback"); }).code() ==
        Errc::type_mismatch);
  CHECK(w.proc->stop() == 0);
}
