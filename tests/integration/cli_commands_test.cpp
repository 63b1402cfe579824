// patro lock NAME -- CMD and patro take --exec CMD when patro itself is SIGKILLed: the command
// and its descendants are gone before the lock or the job goes to anyone else.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <thread>

#include "../support/cli_cluster.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::CliCluster;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// A broker whose window (100 ms x 30 = 3 s) is the default's, and the CLI test server.
struct Cluster : CliCluster {
  Cluster() : CliCluster("30") {}
};

Cluster& cluster() {
  static Cluster c;
  return c;
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

pid_t pid_in(const std::string& file) {
  REQUIRE(wait_for_file(file, 20s));
  const pid_t pid = static_cast<pid_t>(std::atol(read_file(file).c_str()));
  REQUIRE(pid > 0);
  return pid;
}

// Kills every pid still there (a failed test leaves no process behind).
struct Sweep {
  std::vector<pid_t> pids;
  ~Sweep() {
    for (pid_t p : pids)
      if (p > 0) ::kill(p, SIGKILL);
  }
};

// A command for the next holder: says whether each pid was alive when it was granted.
std::vector<std::string> report(const std::vector<pid_t>& pids, const std::string& out) {
  std::string sh = ": > " + out + ";";
  for (pid_t p : pids)
    sh += " if kill -0 " + std::to_string(p) + " 2>/dev/null; then echo alive >> " + out +
          "; else echo gone >> " + out + "; fi;";
  return {"sh", "-c", sh};
}

}  // namespace

TEST_CASE("kill -9 of patro lock NAME -- sleep 60: sleep is gone before the next holder runs") {
  auto& c = cluster();
  const std::string pid_file = c.dir.file("sleep.pid"), seen = c.dir.file("seen-1");
  Sweep sweep;
  Process holder(
      c.argv({"lock", "kv", "--", "sh", "-c", "echo $$ > " + pid_file + "; exec sleep 60"}));
  const pid_t sleep_pid = pid_in(pid_file);
  sweep.pids.push_back(sleep_pid);
  REQUIRE(alive(sleep_pid));
  holder.signal(SIGKILL);
  CHECK(holder.wait(10s) == 128 + SIGKILL);
  std::vector<std::string> next{"lock", "kv", "--wait", "30000", "--"};
  for (auto& w : report({sleep_pid}, seen)) next.push_back(w);
  CHECK(c.run(next).status == 0);
  CHECK(read_file(seen) == "gone\n");
}

TEST_CASE("a command that ignores SIGTERM, and its descendants, are killed with it") {
  auto& c = cluster();
  const std::string pid_file = c.dir.file("stubborn.pid"), kid_file = c.dir.file("kid.pid"),
                    seen = c.dir.file("seen-2");
  Sweep sweep;
  // The shell ignores SIGTERM (SIGKILL after the grace period ends it); its background child
  // is a descendant in the same process group.
  Process holder(c.argv({"lock", "kv", "--", "sh", "-c",
                         "trap '' TERM; sleep 60 & echo $! > " + kid_file + "; echo $$ > " +
                             pid_file + "; while :; do sleep 0.2; done"}));
  const pid_t shell = pid_in(pid_file), kid = pid_in(kid_file);
  sweep.pids = {shell, kid};
  holder.signal(SIGKILL);
  CHECK(holder.wait(10s) == 128 + SIGKILL);
  std::vector<std::string> next{"lock", "kv", "--wait", "30000", "--"};
  for (auto& w : report({shell, kid}, seen)) next.push_back(w);
  CHECK(c.run(next).status == 0);
  CHECK(read_file(seen) == "gone\ngone\n");
}

TEST_CASE("kill -9 of patro take --exec CMD: CMD is gone before the job is delivered again") {
  // patro-worker's queue: a job leased by a connection goes back when the broker declares that
  // client gone (its heartbeat window: 1 s x 3, the defaults).
  TempDir dir;
  const std::string eps = dir.file("endpoints");
  Process w({program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back", "tcp://127.0.0.1:*",
             "--endpoints-file", eps, "--threads", "2", "--visibility", "600000", "--name",
             "cli-commands-" + std::to_string(::getpid()), "queue", "jobs"});
  REQUIRE(wait_for_file(eps, 30s));
  std::string front;
  std::istringstream(read_file(eps)) >> front;
  auto patro = [&](std::vector<std::string> args) {
    std::vector<std::string> a{program("PATRO_CLI"), "--broker", front};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  };
  const std::string pid_file = dir.file("worker.pid"), seen = dir.file("seen");
  Sweep sweep;
  {
    Process push(patro({"push", "jobs", "job-under-exec"}));
    REQUIRE(push.wait(60s) == 0);
  }
  Process taker(
      patro({"take", "jobs", "--exec", "sh", "-c", "echo $$ > " + pid_file + "; exec sleep 60"}));
  const pid_t worker = pid_in(pid_file);
  sweep.pids.push_back(worker);
  taker.signal(SIGKILL);
  CHECK(taker.wait(10s) == 128 + SIGKILL);
  Process next(
      patro({"take", "jobs", "--wait", "30000", "--exec", "sh", "-c",
             "cat >> " + seen + "; echo >> " + seen + "; " + report({worker}, seen + ".pids")[2]}));
  CHECK(next.wait(60s) == 0);
  CHECK(read_file(seen) == "job-under-exec\n");
  CHECK(read_file(seen + ".pids") == "gone\n");
  CHECK(w.stop() == 0);
}

TEST_CASE("the command's status, a command that cannot be run, and signals passed on") {
  auto& c = cluster();
  CHECK(c.run({"lock", "kv", "--", "sh", "-c", "exit 9"}).status == 9);
  CHECK(c.run({"lock", "kv", "--", "/nonexistent/command"}).status == 127);
  const std::string pid_file = c.dir.file("term.pid");
  Process holder(
      c.argv({"lock", "kv", "--", "sh", "-c", "echo $$ > " + pid_file + "; exec sleep 60"}));
  const pid_t sleep_pid = pid_in(pid_file);
  Sweep sweep{{sleep_pid}};
  holder.signal(SIGTERM);  // passed on to the command, whose status patro returns
  CHECK(holder.wait(30s) == 128 + SIGTERM);
  CHECK_FALSE(alive(sleep_pid));
}
