// patro tail -f against the real patro-worker: it follows a log across 15 s of quiet and a restart
// of the worker (on the same endpoints), and exits 0 on SIGINT.
#include <doctest/doctest.h>

#include <signal.h>

#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// Starts patro-worker serving the log "events" at path; "*" ports pick free ones.
std::unique_ptr<Process> start_worker(const TempDir& dir, const std::string& path,
                                      std::string& front, std::string& back) {
  const std::string eps = dir.file("endpoints");
  std::remove(eps.c_str());
  auto p = std::make_unique<Process>(std::vector<std::string>{
      program("PATRO_WORKER"), "--front", front, "--back", back, "--endpoints-file", eps,
      "--heartbeat-ms", "250", "log", "events", path});
  REQUIRE(wait_for_file(eps, 20s));
  std::istringstream(read_file(eps)) >> front >> back;
  if (!patro::test::resolve_when_up(front, "events")) FAIL("the worker did not register its log");
  return p;
}

void write_line(const TempDir& dir, const std::string& front, const std::string& line) {
  Process p({program("PATRO_CLI"), "--broker", front, "call", "events", "write", line},
            dir.file("write-out"));
  CHECK(p.wait(60s) == 0);
}

// Waits (up to timeout) until the file holds text.
bool seen(const std::string& file, const std::string& text, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (read_file(file).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

}  // namespace

TEST_CASE("tail -f: 15 s of quiet, a worker restart, then SIGINT ends it with status 0") {
  TempDir dir;
  const std::string log = dir.file("events.log"), out = dir.file("tail-out");
  std::string front = "tcp://127.0.0.1:*", back = "tcp://127.0.0.1:*";
  auto worker = start_worker(dir, log, front, back);
  write_line(dir, front, "before");
  Process tail({program("PATRO_CLI"), "--broker", front, "tail", "-f", "-n", "1", "events"}, out);
  REQUIRE(seen(out, "before\n", 20s));

  // Quiet: tail keeps following. 15 s outlasts a follow call's deadline (11 s with the default
  // --timeout), five heartbeat windows of tail's connection (3 s) and fifteen follows (1 s each).
  constexpr auto kQuiet = 15s;
  std::this_thread::sleep_for(kQuiet);
  CHECK(!tail.wait(0ms).has_value());
  write_line(dir, front, "after the quiet");
  CHECK(seen(out, "after the quiet\n", 20s));

  // The worker restarts on the same endpoints; tail reconnects and goes on.
  CHECK(worker->stop() == 0);
  worker = start_worker(dir, log, front, back);
  write_line(dir, front, "after the restart");
  CHECK(seen(out, "after the restart\n", 30s));
  CHECK(!tail.wait(0ms).has_value());

  tail.signal(SIGINT);
  CHECK(tail.wait(20s) == 0);
  CHECK(read_file(out) == "before\nafter the quiet\nafter the restart\n");
  CHECK(worker->stop() == 0);
}
