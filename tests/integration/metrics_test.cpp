// patro-broker --metrics and patro-worker --metrics, scraped with curl as Prometheus would: the
// documented series are there, in the text exposition format, and move as requests flow.
#include <doctest/doctest.h>

#include <cstdio>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include <zmq.hpp>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/process.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerOptions;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::redirected;
using patro::test::TempDir;
namespace d = patro::detail;

namespace {

// The metrics URL from the daemon's start-up line "metrics at http://HOST:PORT/metrics".
std::string metrics_url(const std::string& err_file) {
  for (int i = 0; i < 500; ++i) {
    const std::string text = read_file(err_file);
    const size_t at = text.find("metrics at http://");
    if (at != std::string::npos) {
      const size_t end = text.find('\n', at);
      if (end != std::string::npos) return text.substr(at + 11, end - at - 11);
    }
    std::this_thread::sleep_for(20ms);
  }
  FAIL("no metrics line in " << err_file);
  return {};
}

// curl's output (status line and body with -i), bounded in time.
std::string curl(const std::string& args) {
  std::string out;
  FILE* p = ::popen(("curl -sS --max-time 5 " + args + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

using Samples = std::map<std::string, double>;  // "name{labels}" -> value

Samples scrape(const std::string& url) {
  const std::string text = curl("'" + url + "'");
  Samples out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    REQUIRE_MESSAGE(sp != std::string::npos, line);
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

double value(const Samples& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end()) FAIL_CHECK("no series " << key);
  return it == s.end() ? -1 : it->second;
}

}  // namespace

TEST_CASE("broker and worker /metrics: the documented series move as requests flow") {
  TempDir dir;
  BrokerOptions bo;
  bo.heartbeat_ms = "250";
  bo.liveness = "";
  bo.extra = {"--metrics", "tcp://127.0.0.1:0", "--log-level", "info"};
  bo.err_file = dir.file("broker.err");
  BrokerProcess broker(dir, bo);
  const std::string front = broker.front, back = broker.back;
  const std::string broker_url = metrics_url(dir.file("broker.err"));
  CHECK(broker_url.rfind("http://127.0.0.1:", 0) == 0);

  // The exposition format: HELP and TYPE lines, a text/plain content type.
  const std::string head = curl("-i '" + broker_url + "'");
  CHECK(head.find("HTTP/1.0 200 OK") != std::string::npos);
  CHECK(head.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  CHECK(head.find("# TYPE patro_broker_requests_total counter") != std::string::npos);
  CHECK(head.find("# TYPE patro_broker_request_duration_seconds histogram") != std::string::npos);
  CHECK(curl("-i '" + broker_url.substr(0, broker_url.size() - 8) + "/nothing'").find("404") !=
        std::string::npos);

  Samples before = scrape(broker_url);
  CHECK(value(before, "patro_broker_servers") == 0);
  CHECK(value(before, "patro_broker_requests_total") == 0);

  Process worker(redirected({program("PATRO_WORKER"), "--broker", back, "--heartbeat-ms", "250",
                             "--metrics", "tcp://127.0.0.1:0", "--log-level", "info", "queue",
                             "jobs", "queue", "idle", "counter", "n"},
                            dir.file("worker.err")));
  const std::string worker_url = metrics_url(dir.file("worker.err"));
  // Ready once its names resolve.
  REQUIRE(patro::test::resolve_when_up(front, "n"));
  // The broker's series count what passes through it: these calls take the brokered path.
  patro::ClientOptions brokered;
  brokered.route = patro::Route::broker;
  auto q = patro::get_proxy(front, "jobs", brokered);
  auto n = patro::get_proxy(front, "n", brokered);

  for (int i = 0; i < 50; ++i) n.call("add", 1);
  for (int i = 0; i < 5; ++i) q.call("push", "job " + std::to_string(i));
  const patro::Value taken = q.call("take", 0);
  REQUIRE(!taken.is_null());

  // A request the broker itself refuses: a bad object id frame (bad_message).
  {
    zmq::context_t ctx;
    zmq::socket_t raw(ctx, zmq::socket_type::dealer);
    raw.set(zmq::sockopt::linger, 0);
    raw.set(zmq::sockopt::rcvtimeo, 3000);
    raw.connect(front);
    std::vector<zmq::message_t> frames;
    frames.push_back(d::header_frame(d::Command::request));
    frames.push_back(zmq::message_t(std::string("short")));
    frames.push_back(d::u64_frame(7));
    frames.push_back(zmq::message_t(std::string("b")));
    for (size_t i = 0; i < frames.size(); ++i)
      (void)raw.send(frames[i],
                     i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    zmq::message_t reply;
    CHECK(raw.recv(reply).has_value());
  }

  Samples after = scrape(broker_url);
  CHECK(value(after, "patro_broker_servers") == 1);
  CHECK(value(after, "patro_broker_clients") >= 1);
  CHECK(value(after, "patro_broker_requests_total") >= 56);
  CHECK(value(after, "patro_broker_replies_total") >= 56);
  CHECK(value(after, "patro_broker_errors_total{code=\"bad_message\"}") == 1);
  CHECK(value(after, "patro_broker_request_duration_seconds_count") >= 56);
  CHECK(value(after, "patro_broker_request_duration_seconds_bucket{le=\"+Inf\"}") ==
        value(after, "patro_broker_request_duration_seconds_count"));
  CHECK(value(after, "patro_broker_request_duration_seconds_sum") > 0);
  CHECK(value(after, "patro_broker_in_flight_requests") >= 0);

  // A take parked on the server (an empty queue) is in flight at the broker until answered.
  auto idle = patro::get_proxy(front, "idle", brokered);
  patro::Future<patro::Value> pending = idle.async_call("take", 10000);
  double in_flight = 0;
  for (int i = 0; i < 100 && in_flight < 1; ++i) {
    in_flight = value(scrape(broker_url), "patro_broker_in_flight_requests");
    if (in_flight < 1) std::this_thread::sleep_for(20ms);
  }
  CHECK(in_flight >= 1);
  idle.call("push", "wake");
  CHECK(pending.get()[1] == "wake");
  idle.call("push", "later", patro::Value::hash({{"delay_ms", 600000}}));

  Samples w = scrape(worker_url);
  CHECK(value(w, "patro_queue_delayed_jobs{queue=\"idle\"}") == 1);
  CHECK(value(w, "patro_queue_buried_jobs{queue=\"idle\"}") == 0);
  CHECK(value(w, "patro_queue_ready_jobs{queue=\"jobs\"}") == 4);  // 5 pushed, 1 taken
  CHECK(value(w, "patro_queue_leased_jobs{queue=\"jobs\"}") >= 1);
  CHECK(value(w, "patro_lock_waiters{object=\"n\"}") == 0);
  CHECK(value(w, "patro_lock_held{object=\"n\"}") == 0);
  {
    auto locker = patro::get_proxy(front, "n", brokered);
    REQUIRE(patro::lock(locker, 2s));
    w = scrape(worker_url);
    CHECK(value(w, "patro_lock_held{object=\"n\"}") == 1);
    // A second client waits for the lock: a waiter until the holder lets go.
    auto waiter = patro::get_proxy(front, "n", brokered);
    auto waiting = std::async(std::launch::async, [&] {
      const bool got = static_cast<bool>(patro::lock(waiter, 10s));
      if (got) patro::unlock(waiter);
      return got;
    });
    double waiters = 0;
    for (int i = 0; i < 200 && waiters < 1; ++i) {
      waiters = value(scrape(worker_url), "patro_lock_waiters{object=\"n\"}");
      if (waiters < 1) std::this_thread::sleep_for(20ms);
    }
    CHECK(waiters == 1);
    patro::unlock(locker);
    CHECK(waiting.get());
    CHECK(value(scrape(worker_url), "patro_lock_waiters{object=\"n\"}") == 0);
  }
  CHECK(worker.stop() == 0);
  CHECK(broker.proc->stop() == 0);
}
