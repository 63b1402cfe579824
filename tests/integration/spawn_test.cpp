// patro::spawn (remote processes): a local server process started, used and stopped
// through its proxies, leaving no process, zombie or /dev/shm lock segment; clear errors for a
// program that cannot run, exits at once or prints no config; a wrapper command in between, as
// ssh would be.
#include <doctest/doctest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::program;
using patro::test::TempDir;

namespace {

// The pids whose default-named lock segments are in /dev/shm ("patro-pid1234-…-locks").
std::set<int> segment_pids() {
  std::set<int> out;
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("patro-pid", 0) != 0) continue;
    out.insert(std::atoi(name.c_str() + 9));
  }
  ::closedir(d);
  return out;
}

bool process_gone(int pid) {
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

// Waits (bounded) until pid is gone; for a grandchild, which init reaps.
bool wait_gone(int pid, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!process_gone(pid)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// The state letter of pid in /proc/PID/stat (R, S, T, Z, ...); 0 if there is no such process.
char proc_state(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() ? line[paren + 2] : '\0';
}

// Waits (bounded) until pid's state is one of `states`.
bool wait_state(int pid, std::string_view states, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (states.find(proc_state(pid)) == std::string_view::npos) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// Waits (bounded) until pid is stopped (SIGSTOP).
bool wait_stopped(int pid, std::chrono::milliseconds timeout) {
  return wait_state(pid, "T", timeout);
}

// Waits (bounded) until pid has exited: a zombie (spawn has not reaped it yet), or gone.
bool wait_exited(int pid, std::chrono::milliseconds timeout) {
  return wait_state(pid, std::string_view("ZX\0", 3), timeout);
}

// No child of this test process is left unreaped (or running).
bool no_children() {
  int st = 0;
  return ::waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD;
}

std::vector<std::string> worker(std::vector<std::string> objects) {
  std::vector<std::string> argv{program("PATRO_WORKER")};
  argv.insert(argv.end(), objects.begin(), objects.end());
  return argv;
}

}  // namespace

TEST_CASE("spawn starts a local worker, serves through it, and stops it with the last proxy") {
  int pid = 0;
  {
    auto ps = patro::spawn(worker({"counter", "n", "queue", "jobs"}));
    REQUIRE(ps.size() == 2);
    pid = patro::spawned_pid(ps[0]);
    REQUIRE(pid > 0);
    CHECK(patro::spawned_pid(ps[1]) == pid);
    CHECK(segment_pids().count(pid) == 1);  // the check below means something
    CHECK(ps[0].call("add", 5) == 5);
    CHECK(ps[0].call("get") == 5);
    ps[1].call("push", "job-1");
    CHECK(ps[1].call("size") == 1);
    const patro::Value job = ps[1].call("take", 1000);
    CHECK(job.to_string().find("job-1") != std::string::npos);
    // A copy of a proxy keeps the process: the vector goes, the copy stays.
    patro::Proxy counter = ps[0];
    ps.clear();
    CHECK_FALSE(process_gone(pid));
    CHECK(counter.call("add", 1) == 6);
  }
  // The last proxy went: the worker was stopped (SIGTERM) and reaped.
  CHECK(process_gone(pid));
  CHECK(no_children());
  CHECK(segment_pids().count(pid) == 0);
}

TEST_CASE("spawn of a patronize() program; a proxy a call returned keeps it; stop_spawned") {
  TempDir dir;
  std::optional<patro::Proxy> tree;
  int pid = 0;
  {
    // patro-test-server writes its config to a file too; spawn reads the line patronize() prints.
    auto ps = patro::spawn({program("PATRO_TEST_SERVER"), dir.file("config")});
    REQUIRE(ps.size() >= 6);
    pid = patro::spawned_pid(ps[0]);
    ps[2]["n"] = 41;
    CHECK(ps[2]["n"].get() == 41);
    tree.emplace(ps[5]["nested"].get());  // a reference: a proxy on the same connection
  }
  CHECK_FALSE(process_gone(pid));
  CHECK((*tree)["x"].get() == 1);
  CHECK(patro::spawned_pid(*tree) == pid);
  CHECK(patro::stop_spawned(*tree) == 0);  // SIGTERM: a clean stop
  CHECK(patro::stop_spawned(*tree) == 0);  // idempotent
  CHECK(process_gone(pid));
  CHECK(no_children());
  CHECK(segment_pids().count(pid) == 0);
}

TEST_CASE("a server that does not stop on SIGTERM is killed after stop_timeout") {
  patro::SpawnOptions o;
  o.stop_timeout = 300ms;
  auto ps = patro::spawn(worker({"counter", "n"}), o);
  const int pid = patro::spawned_pid(ps.at(0));
  CHECK(ps[0].call("add", 2) == 2);
  CHECK(segment_pids().count(pid) == 1);
  // A stopped process leaves SIGTERM pending; only SIGKILL ends it.
  ::kill(pid, SIGSTOP);
  REQUIRE(wait_stopped(pid, 5s));
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(patro::stop_spawned(ps[0]) == 128 + SIGKILL);
  CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
  CHECK(process_gone(pid));
  CHECK(no_children());
  CHECK(segment_pids().count(pid) == 0);  // left by the kill, removed after the reaping
}

TEST_CASE(
    "through a command, as ssh would be: the worker prints its config, stops at stdin's end") {
  // env -u PATRO_SPAWNED: the far side of ssh does not get the variable, so the worker is told
  // --config-out - ; the shell stays between us and the worker (as ssh does) and dies on SIGTERM
  // without passing it on: the worker stops because its standard input ends (--watch-stdin).
  const std::set<int> before = segment_pids();
  auto ps = patro::spawn({"sh", "-c", "\"$@\"; echo wrapper-not-reached", "sh", "env", "-u",
                          "PATRO_SPAWNED", program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*",
                          "--back", "tcp://127.0.0.1:*", "--config-out", "-", "--watch-stdin",
                          "hash", "kv"});
  REQUIRE(ps.size() == 1);
  ps[0].call("set", "k", "v");
  CHECK(ps[0].call("get", "k") == "v");
  // The worker is the shell's child: its pid is in its lock segment's name.
  int worker_pid = 0;
  for (int p : segment_pids())
    if (before.count(p) == 0 && p != patro::spawned_pid(ps[0])) worker_pid = p;
  REQUIRE(worker_pid > 0);
  const int shell_pid = patro::spawned_pid(ps[0]);
  ps.clear();
  CHECK(process_gone(shell_pid));
  CHECK(no_children());
  CHECK(wait_gone(worker_pid, 10s));
  CHECK(segment_pids().count(worker_pid) == 0);  // a clean stop removed it
}

TEST_CASE("the watchdog: spawn's beats keep a busy server; it ends when they stop, lanes hung") {
  TempDir dir;
  SUBCASE("beats keep it while its only lane is busy for three silences") {
    // Margins for a loaded machine: a beat every 250 ms, and a second of silence to end it.
    patro::SpawnOptions o;
    o.watchdog = 1000ms;
    auto ps = patro::spawn({program("PATRO_TEST_SERVER"), dir.file("config"), "--threads", "1"}, o);
    const int pid = patro::spawned_pid(ps.at(0));
    CHECK(ps.at(3).call("add", 3000) == 1);  // Slow: sleeps 3 s in the lane
    CHECK_FALSE(process_gone(pid));
    CHECK(patro::stop_spawned(ps[0]) == 0);  // a clean stop: the watchdog never fired
    CHECK(segment_pids().count(pid) == 0);
  }
  SUBCASE("silence, or the end of the input, ends it") {
    // The beats come from this test through a pipe of its own (spawn's own beats go unread:
    // the shell puts the pipe on the server's standard input), so that it can stop them.
    int beats[2];
    REQUIRE(::pipe2(beats, O_CLOEXEC) == 0);
    REQUIRE(::fcntl(beats[0], F_SETFD, 0) == 0);  // the child's end crosses exec
    patro::SpawnOptions o;
    // spawn's own beats then meet a pipe nobody reads (the shell gave the server another
    // input): they must not kill this process (SIGPIPE). The env below sets the server's time.
    o.watchdog = 60s;
    auto beat = [&] { REQUIRE(::write(beats[1], "b", 1) == 1); };
    auto ps = patro::spawn({"sh", "-c", "exec \"$@\" <&" + std::to_string(beats[0]), "sh", "env",
                            "PATRO_WATCHDOG_MS=1500", program("PATRO_TEST_SERVER"),
                            dir.file("config"), "--threads", "1"},
                           o);
    ::close(beats[0]);
    beat();
    const int pid = patro::spawned_pid(ps.at(0));  // the server: sh and env exec it
    CHECK(segment_pids().count(pid) == 1);
    SUBCASE("silence, with its only lane hung in a method: SIGTERM, then _exit") {
      auto hung = ps.at(3).async_call("add", 30000);  // the lane sleeps 30 s
      for (int i = 0; i < 20; ++i) {                  // time for the call to reach the lane
        beat();
        std::this_thread::sleep_for(100ms);
      }
      CHECK(wait_exited(pid, 20s));            // 1.5 s of silence, then 1.5 s after SIGTERM
      CHECK(patro::stop_spawned(ps[0]) == 1);  // _exit(1): its stop waited for the lane
      ::close(beats[1]);
    }
    SUBCASE("the end of its input, idle: SIGTERM, and its own clean stop") {
      ::close(beats[1]);
      CHECK(wait_exited(pid, 20s));
      CHECK(patro::stop_spawned(ps[0]) == 0);
    }
    CHECK(segment_pids().count(pid) == 0);
  }
  CHECK(no_children());
}

TEST_CASE("spawn errors are clear and leave no process") {
  SUBCASE("no program") {
    CHECK_THROWS_WITH_AS(patro::spawn({}), doctest::Contains("no program"), patro::Error);
  }
  SUBCASE("not in PATH") {
    try {
      (void)patro::spawn({"patro-no-such-program-xyz"});
      FAIL("no error");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::invalid_argument);
      CHECK(std::string(e.what()).find("cannot find program") != std::string::npos);
    }
  }
  SUBCASE("cannot be run") {
    try {
      (void)patro::spawn({"/nonexistent/patro-server"});
      FAIL("no error");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::invalid_argument);
      CHECK(std::string(e.what()).find("No such file") != std::string::npos);
    }
  }
  SUBCASE("exits before printing a config") {
    try {
      (void)patro::spawn({"sh", "-c", "echo not a config; exit 3"});
      FAIL("no error");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::server_unavailable);
      CHECK(std::string(e.what()).find("exited with status 3") != std::string::npos);
    }
  }
  SUBCASE("a watchdog setting that is no number of milliseconds") {
    try {
      (void)patro::spawn(
          {"env", "PATRO_WATCHDOG_MS=soon", program("PATRO_WORKER"), "counter", "n"});
      FAIL("no error");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::server_unavailable);
      CHECK(std::string(e.what()).find("exited with status") != std::string::npos);
    }
    patro::SpawnOptions o;
    o.watchdog = -1ms;
    CHECK_THROWS_WITH_AS(patro::spawn(worker({"counter", "n"}), o),
                         doctest::Contains("negative watchdog"), patro::Error);
  }
  SUBCASE("prints no config in time") {
    patro::SpawnOptions o;
    o.start_timeout = 300ms;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      (void)patro::spawn({"sleep", "30"}, o);
      FAIL("no error");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::timeout);
      CHECK(std::string(e.what()).find("printed no config within 300 ms") != std::string::npos);
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);  // killed, not waited for
  }
  CHECK(no_children());
}

TEST_CASE("stop_spawned refuses a proxy that did not come from spawn") {
  auto cfg = patro::patronize(patro::Hash{{"a", 1}});
  auto ps = patro::get_proxies(cfg);
  CHECK(patro::spawned_pid(ps[0]) == 0);
  CHECK_THROWS_AS(patro::stop_spawned(ps[0]), patro::Error);
  ps.clear();
  cfg.stop();
}
