// The patro CLI against a broker and a server in their own processes: every subcommand, its
// output (text and --json) and its exit status.
#include <doctest/doctest.h>

#include <signal.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "../support/cli_cluster.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::CliCluster;
using patro::test::CliRun;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

using Run = CliRun;

// The broker and the CLI test server, shared by every test case in this file.
struct Cluster : CliCluster {
  std::string out(std::vector<std::string> args) {
    CliRun r = run(std::move(args));
    CHECK(r.status == 0);
    return r.out;
  }
};

Cluster& cluster() {
  static Cluster c;
  return c;
}

}  // namespace

TEST_CASE("help and usage errors") {
  auto& c = cluster();
  Run r = c.run({"--help"}, false);
  CHECK(r.status == 0);
  CHECK(r.out.find("Exit status: 0 ok; 1 a Patro error") != std::string::npos);
  r = c.run({"help"}, false);
  CHECK(r.status == 0);
  CHECK(r.out.find("Exit status: 0 ok; 1 a Patro error") != std::string::npos);
  CHECK(r.out.find("Usage: patro [OPTIONS] SUBCOMMAND") != std::string::npos);
  CHECK(c.run({"help", "bogus"}, false).status == 2);
  r = c.run({"--version"}, false);
  CHECK(r.status == 0);
  CHECK(r.out.rfind("patro ", 0) == 0);
  r = c.run({"help", "lock"}, false);
  CHECK(r.status == 0);
  CHECK(r.out.find("Usage: patro lock NAME") != std::string::npos);
  for (const char* sub : {"get", "set", "call", "push", "pop", "take", "ack", "lock", "ls", "locks",
                          "tail", "stats"}) {
    r = c.run({sub, "--help"}, false);
    CHECK(r.status == 0);
    CHECK(r.out.find(std::string("Usage: patro ") + sub) != std::string::npos);
  }
  CHECK(c.run({}, false).status == 2);
  // An unknown word is named (CLI11 alone says "A subcommand is required"); stderr read here.
  for (const std::string word : {"frobnicate", "--frobnicate"}) {
    const std::string out = c.dir.file("unknown" + word);
    Process p({"/bin/sh", "-c", "exec \"$0\" \"$1\" 2>&1", program("PATRO_CLI"), word}, out);
    CHECK(p.wait(20s) == 2);
    CHECK(read_file(out).find((word[0] == '-' ? "unknown option '" : "unknown subcommand '") +
                              word + "'") != std::string::npos);
  }
  CHECK(c.run({"get"}).status == 2);
  CHECK(c.run({"--broker", "no-port", "get", "h"}, false).status == 2);  // not an endpoint
  CHECK(c.run({"get", "h", "--bogus"}).status == 2);
  CHECK(c.run({"get", "h", "--wait", "5"}).status == 2);  // not an option of get
  CHECK(c.run({"get", "h", "--timeout", "soon"}).status == 2);
  CHECK(c.run({"lock", "kv"}).status == 2);  // no command
}

TEST_CASE("patro errors exit 1") {
  auto& c = cluster();
  CHECK(c.run({"get", "no-such-name"}).status == 1);
  CHECK(c.run({"--broker", "tcp://127.0.0.1:1", "--timeout", "300ms", "get", "h"}, false).status ==
        1);
  CHECK(c.run({"call", "hits", "no_such_method"}).status == 1);
}

TEST_CASE("get and set on a served hash, values typed from the command line") {
  auto& c = cluster();
  CHECK(c.out({"get", "h", "abc"}) == "123\n");
  CHECK(c.out({"get", "h", "def", "1"}) == "mno\n");
  CHECK(c.out({"get", "h", "def", "-2"}) == "456\n");
  CHECK(c.out({"--json", "get", "h", "nope"}) == "null\n");
  CHECK(c.run({"get", "h", "nope", "--strict"}).status == 3);
  c.out({"set", "h", "i", "42"});
  c.out({"set", "h", "f", "2.5"});
  c.out({"set", "h", "b", "true"});
  c.out({"set", "h", "n", "null"});
  c.out({"set", "h", "s", "12abc"});
  c.out({"set", "h", "deep", "x", "0", "v"});  // autovivification
  CHECK(c.out({"get", "h", "i", "--json"}) == "42\n");
  CHECK(c.out({"get", "h", "f", "--json"}) == "2.5\n");
  CHECK(c.out({"get", "h", "b", "--json"}) == "true\n");
  CHECK(c.out({"get", "h", "n", "--json"}) == "null\n");
  CHECK(c.out({"get", "h", "s", "--json"}) == "\"12abc\"\n");
  CHECK(c.out({"get", "h", "deep", "x", "0"}) == "v\n");
  const std::string whole = c.out({"--json", "get", "h"});
  CHECK(whole.find("\"abc\":123") != std::string::npos);
  CHECK(whole.find("\"i\":42") != std::string::npos);
}

TEST_CASE("get, set and call on served objects (a worker's hash and counter)") {
  auto& c = cluster();
  CHECK(c.out({"set", "kv", "color", "blue"}).empty());  // set prints nothing
  CHECK(c.out({"get", "kv", "color"}) == "blue\n");
  CHECK(c.out({"--json", "get", "kv", "shape"}) == "null\n");
  CHECK(c.run({"get", "kv", "shape", "--strict"}).status == 3);
  CHECK(c.out({"call", "hits", "add", "5"}) == "5\n");
  CHECK(c.out({"call", "hits", "add", "-2"}) == "3\n");
  CHECK(c.out({"get", "hits"}) == "3\n");
  c.out({"set", "hits", "10"});
  CHECK(c.out({"get", "hits"}) == "10\n");
  CHECK(c.out({"call", "hits", "cas", "10", "11"}) == "true\n");
  CHECK(c.out({"--json", "call", "kv", "keys"}) == "[\"color\"]\n");
  CHECK(c.out({"--json", "call", "kv", "keys", "--list"}) == "[\"color\"]\n");  // the default
  CHECK(c.out({"set", "kv", "size", "m"}).empty());
  CHECK(c.out({"call", "kv", "keys"}) == "color\nsize\n");  // every key, one per line
  CHECK(c.out({"get", "kv"}) == "{\"color\":\"blue\",\"size\":\"m\"}\n");  // the whole hash
  CHECK(c.out({"--json", "call", "hits", "add", "0", "--scalar"}) == "11\n");
}

TEST_CASE("isa: true for the object's class (exit 0), false for another (exit 3)") {
  auto& c = cluster();
  CHECK(c.out({"isa", "kv", "hash"}) == "true\n");
  const auto no = c.run({"isa", "kv", "queue"});
  CHECK(no.status == 3);
  CHECK(no.out == "false\n");
  CHECK(c.out({"--json", "isa", "jobs", "queue"}) == "true\n");
  CHECK(c.run({"isa", "kv"}).status == 2);  // usage: NAME CLASS
}

TEST_CASE("push, pop and take on a served array") {
  auto& c = cluster();
  CHECK(c.out({"push", "arr", "a", "b", "c"}) == "3\n");
  CHECK(c.out({"--json", "get", "arr"}) == "[\"a\",\"b\",\"c\"]\n");
  CHECK(c.out({"pop", "arr"}) == "c\n");
  CHECK(c.out({"pop", "arr", "--shift"}) == "a\n");
  CHECK(c.out({"take", "arr"}) == "b\n");
  CHECK(c.run({"take", "arr"}).status == 3);
  CHECK(c.run({"pop", "arr"}).status == 3);
}

TEST_CASE("a job queue: push, take, ack, nack, pop") {
  auto& c = cluster();
  CHECK(c.out({"push", "jobs", "j1"}) == "1\n");
  CHECK(c.out({"push", "jobs", "j2", "j3"}) == "2\n3\n");
  CHECK(c.out({"take", "jobs"}) == "1\t1\tj1\n");
  CHECK(c.run({"ack", "jobs", "1", "1"}).status == 0);
  CHECK(c.run({"ack", "jobs", "1", "1"}).status == 1);  // settled already
  CHECK(c.out({"--json", "take", "jobs"}) == "{\"id\":2,\"delivery\":2,\"job\":\"j2\"}\n");
  CHECK(c.run({"ack", "jobs", "2", "2", "--nack"}).status == 0);  // back in the queue
  CHECK(c.out({"pop", "jobs"}) == "j2\n");                        // taken and acked
  CHECK(c.out({"pop", "jobs", "--wait", "100"}) == "j3\n");
  CHECK(c.run({"take", "jobs", "--wait", "100"}).status == 3);
  CHECK(c.out({"call", "jobs", "leased"}) == "0\n");

  // A take that waits on the server gets a job pushed meanwhile.
  const std::string out = c.dir.file("blocking-take");
  Process taker(c.argv({"take", "jobs", "--wait", "20000"}), out);
  std::this_thread::sleep_for(300ms);
  c.out({"push", "jobs", "late"});
  CHECK(taker.wait(30s) == 0);
  CHECK(read_file(out) == "4\t5\tlate\n");  // job 4, its fifth delivery in this queue
  CHECK(c.run({"ack", "jobs", "4", "5"}).status == 0);
}

TEST_CASE("lock runs a command under the lock; others are refused meanwhile; locks shows it") {
  auto& c = cluster();
  const std::string token = c.dir.file("token");
  Run r = c.run({"lock", "kv", "--", "sh", "-c", "echo $PATRO_LOCK_TOKEN > " + token + "; exit 7"});
  CHECK(r.status == 7);
  CHECK(std::atoll(read_file(token).c_str()) > 0);

  const std::string ready = c.dir.file("ready"), go = c.dir.file("go");
  Process holder(c.argv({"lock", "kv", "--", "sh", "-c",
                         "touch " + ready + "; i=0; while [ ! -e " + go +
                             " ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done"}));
  // touch makes an empty file (wait_for_file wants content): wait for it to exist.
  for (int i = 0; i < 200 && !std::ifstream(ready); ++i) std::this_thread::sleep_for(50ms);
  REQUIRE(std::ifstream(ready).good());
  CHECK(c.run({"lock", "kv", "--wait", "100", "--", "true"}).status == 4);
  const std::string locks = c.out({"--json", "locks", "kv"});
  CHECK(locks.find("\"depth\":1") != std::string::npos);
  CHECK(locks.find("\"holder\":null") == std::string::npos);
  const std::string all = c.out({"locks"});
  CHECK(all.find("kv\t") != std::string::npos);
  CHECK(all.find("jobs\t-\t0") != std::string::npos);
  { std::ofstream(go) << "go\n"; }
  CHECK(holder.wait(30s) == 0);
  CHECK(c.out({"--json", "locks", "kv"}).find("\"holder\":null") != std::string::npos);
  CHECK(c.run({"lock", "kv", "--wait", "5000", "--", "true"}).status == 0);

  // A signal to patro lock reaches the command; the lock is released either way.
  const std::string ready2 = c.dir.file("ready2");
  Process killed(c.argv({"lock", "kv", "--", "sh", "-c", "touch " + ready2 + "; exec sleep 30"}));
  for (int i = 0; i < 200 && !std::ifstream(ready2); ++i) std::this_thread::sleep_for(50ms);
  REQUIRE(std::ifstream(ready2).good());
  killed.signal(SIGTERM);
  CHECK(killed.wait(30s) == 128 + SIGTERM);
  CHECK(c.run({"lock", "kv", "--wait", "10000", "--", "true"}).status == 0);
}

TEST_CASE(
    "patro lock NAME -- cmd in two shells at once runs the two commands one after the other") {
  auto& c = cluster();
  const std::string trace = c.dir.file("trace");
  // Each command writes "start", pauses, writes "end": overlapping runs would interleave them.
  auto cmd = [&](const char* who) {
    return c.argv({"lock", "kv", "--wait", "60000", "--", "sh", "-c",
                   std::string("echo start ") + who + " >> " + trace + "; sleep 0.3; echo end " +
                       who + " >> " + trace});
  };
  Process one(cmd("one")), two(cmd("two"));
  CHECK(one.wait(60s) == 0);
  CHECK(two.wait(60s) == 0);
  const std::string t = read_file(trace);
  CHECK((t == "start one\nend one\nstart two\nend two\n" ||
         t == "start two\nend two\nstart one\nend one\n"));
}

TEST_CASE("ls lists servers and names") {
  auto& c = cluster();
  const std::string text = c.out({"ls"});
  for (const char* n :
       {"jobs\tqueue", "applog\tlog", "kv\thash", "hits\tcounter", "h\tHASH", "arr\tARRAY"})
    CHECK(text.find(n) != std::string::npos);
  const std::string json = c.out({"ls", "--json"});
  CHECK(json.find("\"lanes\":4") != std::string::npos);
  CHECK(json.find("{\"id\":") != std::string::npos);
  CHECK(json.find("\"name\":\"applog\"") != std::string::npos);
}

TEST_CASE("tail prints a log's last lines, and -f follows it until interrupted") {
  auto& c = cluster();
  for (const char* l : {"one", "two", "three"})
    CHECK(c.out({"call", "applog", "write", l}) == "true\n");
  CHECK(c.out({"tail", "applog", "-n", "2"}) == "two\nthree\n");
  CHECK(c.out({"tail", "applog"}) == "one\ntwo\nthree\n");
  CHECK(c.out({"tail", "applog", "--from", "1"}) == "two\nthree\n");
  CHECK(c.out({"--json", "tail", "applog", "-n", "2"}) == "\"two\"\n\"three\"\n");  // JSON lines
  const std::string out = c.dir.file("follow");
  Process follower(c.argv({"tail", "-f", "-n", "0", "applog"}), out);
  std::this_thread::sleep_for(300ms);
  c.out({"call", "applog", "write", "four"});
  bool seen = false;
  for (int i = 0; i < 400 && !seen; ++i) {
    seen = read_file(out).find("four\n") != std::string::npos;
    if (!seen) std::this_thread::sleep_for(50ms);
  }
  CHECK(seen);
  CHECK(read_file(out).find("three") == std::string::npos);
  follower.signal(SIGINT);
  CHECK(follower.wait(30s) == 0);
}

TEST_CASE("stats: rates, clients, servers, queue depths, lock waiters") {
  auto& c = cluster();
  c.out({"push", "jobs", "s1", "s2"});
  const std::string json = c.out({"stats", "--json", "--interval", "200"});
  CHECK(json.find("\"requests_per_second\":") != std::string::npos);
  CHECK(json.find("\"servers\":1") != std::string::npos);
  CHECK(json.find("\"jobs\":{\"type\":\"queue\",\"depth\":2,\"leased\":0,\"lock_waiters\":0}") !=
        std::string::npos);
  const std::string text = c.out({"stats", "--interval", "100"});
  CHECK(text.find("requests/s") != std::string::npos);
  CHECK(text.find("jobs\tqueue\t2\t0\t0") != std::string::npos);
  CHECK(c.out({"take", "jobs"}).find("s1") != std::string::npos);
}

TEST_CASE("--config: objects by index or by name") {
  auto& c = cluster();
  CHECK(c.run({"--config", c.conf, "get", "4", "abc"}, false).out == "123\n");
  CHECK(c.run({"--config", c.conf, "get", "kv", "color"}, false).out == "blue\n");
  CHECK(c.run({"--config", c.conf, "get", "17"}, false).status == 1);
  CHECK(c.run({"--config", c.dir.file("missing.conf"), "get", "0"}, false).status == 1);
  CHECK(c.run({"--config", c.conf, "--broker", c.front, "get", "0"}, false).status == 2);
}
