// patro-worker and patro-broker as daemons: the log writer's follow and long lines, log lines,
// levels, SIGHUP, --data, duplicate names, and write-ahead log compaction. Each case drives the
// real binaries.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// argv run through sh so that stderr goes to err_file and env ("K=V" words) is set.
std::vector<std::string> redirected(std::vector<std::string> argv, const std::string& err_file,
                                    std::vector<std::string> env = {}) {
  std::vector<std::string> out{"/bin/sh", "-c", "f=$1; shift; exec env \"$@\" 2>>\"$f\"", "sh",
                               err_file};
  out.insert(out.end(), env.begin(), env.end());
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

struct Worker {
  std::unique_ptr<Process> proc;
  std::string front, back;
  // Starts patro-worker with its own broker on free ports; its stderr goes to err_file.
  Worker(const TempDir& dir, std::vector<std::string> objects,
         std::vector<std::string> options = {}, std::vector<std::string> env = {}) {
    const std::string eps = dir.file("worker-endpoints");
    std::remove(eps.c_str());
    std::vector<std::string> argv{
        program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back", "tcp://127.0.0.1:*",
        "--endpoints-file",      eps,       "--heartbeat-ms",    "250"};
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), objects.begin(), objects.end());
    proc = std::make_unique<Process>(redirected(argv, dir.file("worker.err"), env));
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front >> back;
    for (int i = 0; i < 200; ++i) {
      try {
        patro::ClientOptions co;
        co.connect_timeout = 1s;
        (void)patro::get_proxy(front, objects.at(1), co);
        return;
      } catch (const patro::Error&) {
        std::this_thread::sleep_for(25ms);
      }
    }
    FAIL("the worker did not register its objects");
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

size_t line_count(const patro::Value& reply) {
  return reply["lines"].size();
}

}  // namespace

TEST_CASE("log follow: a quiet log answers after follow's own wait, not the call timeout") {
  TempDir dir;
  Worker w(dir, {"log", "events", dir.file("events.log")});
  auto log = patro::get_proxy(w.front, "events");
  const auto t0 = std::chrono::steady_clock::now();
  patro::Value got = log.call("follow", 0, 1000);
  const double took = seconds_since(t0);
  CHECK(line_count(got) == 0);
  CHECK(got["next"] == 0);
  CHECK(took >= 0.9);
  CHECK(took < 5.0);  // the call timeout is 30 s

  // Several followers with different waits each answer at their own deadline.
  auto other = patro::get_proxy(w.front, "events");
  const auto t1 = std::chrono::steady_clock::now();
  auto slow = std::async(std::launch::async, [&] {
    other.call("follow", 0, 2000);
    return seconds_since(t1);
  });
  std::this_thread::sleep_for(100ms);
  log.call("follow", 0, 300);
  const double fast = seconds_since(t1);
  CHECK(fast < 1.5);
  const double slow_took = slow.get();
  CHECK(slow_took >= 1.9);
  CHECK(slow_took < 6.0);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("log follow: a line written while a follower waits wakes it at once") {
  TempDir dir;
  Worker w(dir, {"log", "events", dir.file("events.log")});
  auto follower = patro::get_proxy(w.front, "events");
  auto writer = patro::get_proxy(w.front, "events");
  const auto t0 = std::chrono::steady_clock::now();
  auto waiting = std::async(std::launch::async, [&] { return follower.call("follow", 0, 20000); });
  std::this_thread::sleep_for(300ms);
  writer.call("write", "hello");
  const patro::Value got = waiting.get();
  CHECK(seconds_since(t0) < 5.0);
  REQUIRE(line_count(got) == 1);
  CHECK(got["lines"][0] == "hello");
  CHECK(got["next"] == 6);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("log read and follow: lines longer than 64 KiB come back whole, and so do later ones") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  Worker w(dir, {"log", "events", path});
  auto log = patro::get_proxy(w.front, "events");
  const std::string long1(100 << 10, 'a');  // 100 KiB
  const std::string long2(3 << 20, 'b');    // 3 MiB
  log.call("write", long1);
  for (int i = 0; i < 3; ++i) log.call("write", "short " + std::to_string(i));
  log.call("write", long2);
  log.call("write", "last");
  // A write is answered once received (--log-sync never): wait for the writer thread.
  const auto size = static_cast<int64_t>(long1.size() + long2.size() + 3 * 8 + 5 + 2);
  for (int i = 0; i < 500 && log.call("size").as<int64_t>() < size; ++i)
    std::this_thread::sleep_for(10ms);
  REQUIRE(log.call("size") == size);

  patro::Value got = log.call("read", 0, 100);
  REQUIRE(line_count(got) == 6);
  CHECK(got["lines"][0].as<std::string>() == long1);
  CHECK(got["lines"][1] == "short 0");
  CHECK(got["lines"][3] == "short 2");
  CHECK(got["lines"][4].as<std::string>() == long2);
  CHECK(got["lines"][5] == "last");
  CHECK(got["next"] == size);

  // max_lines is honoured and next resumes exactly after the last line returned.
  got = log.call("read", 0, 1);
  REQUIRE(line_count(got) == 1);
  CHECK(got["lines"][0].as<std::string>().size() == long1.size());
  const int64_t next = got["next"].as<int64_t>();
  CHECK(next == static_cast<int64_t>(long1.size() + 1));
  got = log.call("follow", next, 1000);
  REQUIRE(line_count(got) == 5);
  CHECK(got["lines"][0] == "short 0");
  CHECK(got["lines"][3].as<std::string>() == long2);

  // A follower parked before a long line is written gets it whole.
  auto follower = patro::get_proxy(w.front, "events");
  auto waiting =
      std::async(std::launch::async, [&] { return follower.call("follow", size, 20000); });
  std::this_thread::sleep_for(200ms);
  log.call("write", long1);
  got = waiting.get();
  REQUIRE(line_count(got) == 1);
  CHECK(got["lines"][0].as<std::string>() == long1);
  CHECK(w.proc->stop() == 0);
}
