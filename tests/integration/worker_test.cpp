// patro-worker across processes: the job queue, the log writer, and persistence through kill -9.
#include <doctest/doctest.h>

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/exactly_once.hpp"
#include "../support/process.hpp"
#include "../support/sanitizers.hpp"

using namespace std::chrono_literals;
using patro::test::check_exactly_once;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::read_numbers;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

struct Worker {
  std::unique_ptr<Process> proc;
  std::string front, back;
  // Starts patro-worker with its own broker; front/back "*" picks free ports.
  Worker(const TempDir& dir, std::vector<std::string> objects,
         std::vector<std::string> options = {}, const std::string& front_ep = "tcp://127.0.0.1:*",
         const std::string& back_ep = "tcp://127.0.0.1:*") {
    const std::string eps = dir.file("worker-endpoints");
    std::remove(eps.c_str());
    std::vector<std::string> argv{
        program("PATRO_WORKER"), "--front", front_ep,         "--back", back_ep,
        "--endpoints-file",      eps,       "--heartbeat-ms", "250"};  // a 750 ms window under load
    argv.insert(argv.end(), options.begin(), options.end());
    argv.insert(argv.end(), objects.begin(), objects.end());
    proc = std::make_unique<Process>(argv);
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front >> back;
    // Ready once a name resolves (the worker registers after binding).
    if (!patro::test::resolve_when_up(front, objects.at(1)))
      FAIL("the worker did not register its objects");
  }
};

Process client(std::vector<std::string> args) {
  args.insert(args.begin(), program("PATRO_WORKER_CLIENT"));
  return Process(args);
}

// A client that a kill -9 of the worker cuts off: its call in flight is retried until the call's
// deadline, so the deadline is 15 s here rather than 60 s (still far above any call's time).
Process client_cut_off(std::vector<std::string> args) {
  args.insert(args.begin(), {"--timeout-ms", "15000"});
  return client(std::move(args));
}

// The jobs of the two exactly-once runs and the lines of the served log's: a fifth as many under
// a sanitizer (support/sanitizers.hpp), where the clients and the worker run ten times slower.
constexpr long kJobs = patro::test::scaled(100'000, 5);
constexpr long kLinesPerClient = patro::test::scaled(25'000, 5);

// The two producers' arguments: half the jobs each.
std::vector<std::string> produce(const std::string& front, int k, const std::string& out) {
  return {"produce", front, "jobs", std::to_string(k * kJobs / 2), std::to_string(kJobs / 2),
          "100",     out};
}

size_t lines_in(const std::string& path) {
  size_t n = 0;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) ++n;
  return n;
}

}  // namespace

TEST_CASE("2 producers and 4 consumers move 100,000 jobs (a fifth under a sanitizer): each once") {
  TempDir dir;
  Worker w(dir, {"queue", "jobs"});
  std::vector<Process> consumers;
  for (int k = 0; k < 4; ++k)
    consumers.push_back(
        client({"consume", w.front, "jobs", "50", dir.file("acked" + std::to_string(k)), "3000"}));
  Process p1 = client(produce(w.front, 0, dir.file("pushed1")));
  Process p2 = client(produce(w.front, 1, dir.file("pushed2")));
  CHECK(p1.wait(300s) == 0);
  CHECK(p2.wait(300s) == 0);
  std::vector<long> acked;
  for (int k = 0; k < 4; ++k) {
    CHECK(consumers[k].wait(300s) == 0);
    for (long v : read_numbers(dir.file("acked" + std::to_string(k)))) acked.push_back(v);
  }
  check_exactly_once(acked, kJobs);
  auto q = patro::get_proxy(w.front, "jobs");
  CHECK(q.call("size") == 0);
  CHECK(q.call("leased") == 0);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("the same run with a consumer kill -9ed while holding leases: its jobs go to others") {
  TempDir dir;
  // A long visibility timeout: redelivery here comes from the taker's death, not the timeout.
  Worker w(dir, {"queue", "jobs"}, {"--visibility", "600000"});
  Process p1 = client(produce(w.front, 0, dir.file("pushed1")));
  Process p2 = client(produce(w.front, 1, dir.file("pushed2")));
  Process holder = client({"hold", w.front, "jobs", "500", dir.file("held")});
  REQUIRE(wait_for_file(dir.file("held"), 60s));
  const size_t held = read_numbers(dir.file("held")).size();
  CHECK(held > 0);
  holder.signal(SIGKILL);
  std::vector<Process> consumers;
  for (int k = 0; k < 3; ++k)
    consumers.push_back(
        client({"consume", w.front, "jobs", "50", dir.file("acked" + std::to_string(k)), "3000"}));
  CHECK(p1.wait(300s) == 0);
  CHECK(p2.wait(300s) == 0);
  std::vector<long> acked;
  for (int k = 0; k < 3; ++k) {
    CHECK(consumers[k].wait(300s) == 0);
    for (long v : read_numbers(dir.file("acked" + std::to_string(k)))) acked.push_back(v);
  }
  check_exactly_once(acked, kJobs);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("--data: kill -9 the worker mid-run; after a restart nothing acknowledged is lost") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE(std::system(("mkdir -p " + data).c_str()) == 0);
  const std::vector<std::string> objects{"queue", "jobs", "hash", "kv", "counter", "n"};
  auto w = std::make_unique<Worker>(dir, objects, std::vector<std::string>{"--data", data});
  const std::string front = w->front, back = w->back;
  Process producer =
      client_cut_off({"produce", front, "jobs", "0", "1000000", "100", dir.file("pushed")});
  Process changes = client_cut_off({"changes", front, "kv", "n", "1000000", dir.file("changed")});
  for (int i = 0;
       i < 600 && (lines_in(dir.file("pushed")) < 5000 || lines_in(dir.file("changed")) < 200); ++i)
    std::this_thread::sleep_for(50ms);
  w->proc->signal(SIGKILL);
  CHECK(w->proc->wait(10s).has_value());
  // Cut off, they would retry their calls in flight until the calls' deadlines: what they wrote
  // down (acknowledged) is all the test needs, so they are stopped at once.
  CHECK(producer.kill());
  CHECK(changes.kill());
  const std::vector<long> pushed = read_numbers(dir.file("pushed"));
  const std::vector<long> changed = read_numbers(dir.file("changed"));
  REQUIRE(pushed.size() >= 5000);
  REQUIRE(changed.size() >= 200);

  w = std::make_unique<Worker>(dir, objects, std::vector<std::string>{"--data", data}, front, back);
  Process consumer = client({"consume", front, "jobs", "100", dir.file("acked"), "2000"});
  CHECK(consumer.wait(300s) == 0);
  const std::vector<long> acked = read_numbers(dir.file("acked"));
  const std::set<long> delivered(acked.begin(), acked.end());
  size_t missing = 0;
  for (long j : pushed) missing += delivered.count(j) == 0;
  CHECK(missing == 0);  // every job whose push was acknowledged is delivered
  auto kv = patro::get_proxy(front, "kv");
  size_t lost_keys = 0;
  for (long i : changed) lost_keys += !(kv.call("get", "k" + std::to_string(i)) == i);
  CHECK(lost_keys == 0);
  // The counter holds every acknowledged add (and at most the one in flight at the kill).
  const int64_t n = patro::get_proxy(front, "n").call("get").as<int64_t>();
  CHECK(n >= static_cast<int64_t>(changed.size()));
  CHECK(n <= static_cast<int64_t>(changed.size()) + 1);
  CHECK(w->proc->stop() == 0);
}

TEST_CASE("4 clients x 25,000 lines (a fifth under a sanitizer) into one served log: all whole") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  Worker w(dir, {"log", "events", path});
  std::vector<Process> writers;
  for (int k = 0; k < 4; ++k)
    writers.push_back(
        client({"log", w.front, "events", "w" + std::to_string(k), std::to_string(kLinesPerClient),
                "100", dir.file("wrote" + std::to_string(k))}));
  for (auto& p : writers) CHECK(p.wait(300s) == 0);
  CHECK(w.proc->stop() == 0);  // a clean stop writes everything
  // A whole line is "w<k> <i> " and 40 x's: nothing more, nothing less.
  auto parse = [](const std::string& l, int& k, long& i) {
    if (l.size() < 4 || l[0] != 'w' || l[1] < '0' || l[1] > '3' || l[2] != ' ') return false;
    const size_t sp = l.find(' ', 3);
    if (sp == std::string::npos || sp == 3 || l.size() != sp + 1 + 40) return false;
    for (size_t c = 3; c < sp; ++c)
      if (l[c] < '0' || l[c] > '9') return false;
    if (l.compare(sp + 1, 40, std::string(40, 'x')) != 0) return false;
    k = l[1] - '0';
    i = std::stol(l.substr(3, sp - 3));
    return true;
  };
  std::map<int, std::set<long>> seen;
  size_t lines = 0, broken = 0;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) {
    ++lines;
    int k = 0;
    long i = 0;
    if (!parse(l, k, i)) {
      ++broken;
      continue;
    }
    seen[k].insert(i);
  }
  CHECK(lines == static_cast<size_t>(4 * kLinesPerClient));
  CHECK(broken == 0);
  for (int k = 0; k < 4; ++k) CHECK(seen[k].size() == static_cast<size_t>(kLinesPerClient));
}

TEST_CASE(
    "with --log-sync always, lines acknowledged before a kill -9 of the worker are in the "
    "file") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  Worker w(dir, {"log", "events", path}, {"--log-sync", "always"});
  Process a = client_cut_off({"log", w.front, "events", "a", "1000000", "1", dir.file("wrote-a")});
  Process b = client_cut_off({"log", w.front, "events", "b", "1000000", "1", dir.file("wrote-b")});
  for (int i = 0; i < 600 && lines_in(dir.file("wrote-a")) + lines_in(dir.file("wrote-b")) < 500;
       ++i)
    std::this_thread::sleep_for(50ms);
  w.proc->signal(SIGKILL);
  CHECK(w.proc->wait(10s).has_value());
  patro::remove_stale_lock_segments();  // the killed worker's, which no restart will sweep
  CHECK(a.kill());                      // cut off: stopped at once (see above)
  CHECK(b.kill());
  std::set<std::string> in_file;
  {
    std::ifstream in(path);
    for (std::string l; std::getline(in, l);) in_file.insert(l.substr(0, l.find(' ', 2)));
  }
  size_t missing = 0, acked = 0;
  for (const char* tag : {"a", "b"}) {
    for (long i : read_numbers(dir.file(std::string("wrote-") + tag))) {
      ++acked;
      missing += in_file.count(std::string(tag) + " " + std::to_string(i)) == 0;
    }
  }
  CHECK(acked >= 500);
  CHECK(missing == 0);
}

namespace {

// A worker start expected to fail: its exit status and what it said.
std::pair<std::optional<int>, std::string> failed_start(const TempDir& dir,
                                                        std::vector<std::string> args) {
  const std::string err = dir.file("failed-start.err");
  std::remove(err.c_str());
  args.insert(args.begin(), {program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back",
                             "tcp://127.0.0.1:*"});
  Process p(patro::test::redirected(args, err));
  const auto status = p.wait(30s);
  return {status, read_file(err)};
}

// Each file in dir (not the lock) with its inode and bytes: what "touches nothing" compares.
std::map<std::string, std::pair<ino_t, std::string>> snapshot_of(const std::string& dir) {
  std::map<std::string, std::pair<ino_t, std::string>> out;
  for (const std::string name : {"queue-jobs.wal", "hash-kv.wal", "counter-n.wal"}) {
    struct stat st {};
    if (::stat((dir + "/" + name).c_str(), &st) == 0)
      out[name] = {st.st_ino, read_file(dir + "/" + name)};
  }
  return out;
}

}  // namespace

TEST_CASE("--data: a second worker on the same directory refuses at once and touches nothing") {
  TempDir dir;
  const std::string data = dir.file("data");
  const std::vector<std::string> objects{"queue", "jobs", "hash", "kv", "counter", "n"};
  Worker w(dir, objects, {"--data", data});
  Process changes = client({"changes", w.front, "kv", "n", "50", dir.file("changed")});
  CHECK(changes.wait(60s) == 0);
  const auto before = snapshot_of(data);
  REQUIRE(before.size() == 3);
  const auto [status, err] = failed_start(dir, {"--data", data, "queue", "jobs", "hash", "kv"});
  CHECK(status == 1);
  CHECK(err.find("--data " + data + " is in use by another patro-worker (pid " +
                 std::to_string(w.proc->pid()) + ")") != std::string::npos);
  CHECK(snapshot_of(data) == before);  // no rename, no truncation, no compaction
  // The first worker goes on, into the files it has open; a restart finds all of it.
  auto kv = patro::get_proxy(w.front, "kv");
  kv.call("set", "after", 1);
  CHECK(w.proc->stop() == 0);
  Worker again(dir, objects, {"--data", data});
  auto kv2 = patro::get_proxy(again.front, "kv");
  CHECK(kv2.call("get", "after") == 1);
  CHECK(kv2.call("get", "k49") == 49);
  CHECK(patro::get_proxy(again.front, "n").call("get") == 50);
  CHECK(again.proc->stop() == 0);
}

TEST_CASE(
    "--data: a flipped byte stops the start (file and offset named, file kept); verify "
    "finds it; --repair keeps a copy and starts") {
  TempDir dir;
  const std::string data = dir.file("data");
  const std::vector<std::string> objects{"hash", "kv"};
  {
    Worker w(dir, objects, {"--data", data});
    auto kv = patro::get_proxy(w.front, "kv");
    for (int i = 0; i < 102; ++i) kv.call("set", "k" + std::to_string(i), i);
    CHECK(w.proc->stop() == 0);
  }
  const std::string wal = data + "/hash-kv.wal";
  std::string bad = read_file(wal);
  bad[bad.size() / 2] ^= 0x04;
  {
    std::ofstream out(wal, std::ios::binary | std::ios::trunc);
    out << bad;
  }
  const auto [status, err] = failed_start(dir, {"--data", data, "hash", "kv"});
  CHECK(status == 1);
  CHECK(err.find("write-ahead log " + wal + " at offset ") != std::string::npos);
  CHECK(read_file(wal) == bad);
  Process verify({program("PATRO_WORKER"), "verify", data}, dir.file("verify.out"));
  CHECK(verify.wait(30s) == 1);
  Process verify_clean({program("PATRO_WORKER"), "verify", dir.path()}, dir.file("verify2.out"));
  CHECK(verify_clean.wait(30s) == 0);  // no logs there: nothing wrong
  Worker w(dir, objects, {"--data", data, "--repair"});
  auto kv = patro::get_proxy(w.front, "kv");
  const int64_t kept = kv.call("size").as<int64_t>();
  CHECK(kept > 0);
  CHECK(kept < 102);
  CHECK(kv.call("get", "k0") == 0);
  size_t copies = 0;
  if (DIR* d = ::opendir(data.c_str())) {
    while (const dirent* e = ::readdir(d))
      copies += std::string(e->d_name).rfind("hash-kv.wal.corrupt-", 0) == 0;
    ::closedir(d);
  }
  CHECK(copies == 1);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("--data: a symbolic link in place of a log is refused; its target is left alone") {
  TempDir dir;
  const std::string data = dir.file("data");
  REQUIRE(std::system(("mkdir -p " + data).c_str()) == 0);
  const std::string target = dir.file("precious");
  {
    std::ofstream out(target);
    out << "not a log\n";
  }
  REQUIRE(::symlink(target.c_str(), (data + "/hash-kv.wal").c_str()) == 0);
  const auto [status, err] = failed_start(dir, {"--data", data, "hash", "kv"});
  CHECK(status == 1);
  CHECK(err.find("symbolic link") != std::string::npos);
  CHECK(read_file(target) == "not a log\n");
}

TEST_CASE("--data: a change over --max-record-bytes is refused with a clear error, not made") {
  TempDir dir;
  const std::string data = dir.file("data");
  Worker w(dir, {"hash", "kv", "queue", "jobs"}, {"--data", data, "--max-record-bytes", "1000"});
  auto kv = patro::get_proxy(w.front, "kv");
  try {
    kv.call("set", "big", std::string(2000, 'x'));
    FAIL("an oversized set was taken");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::message_too_large);
    CHECK(std::string(e.what()).find("over its limit of 1000 bytes") != std::string::npos);
  }
  CHECK(kv.call("exists", "big") == false);
  kv.call("set", "small", "y");
  auto jobs = patro::get_proxy(w.front, "jobs");
  CHECK_THROWS_AS(
      jobs.call("push_many", patro::Value(patro::ValueArray{"a", std::string(2000, 'x')})),
      patro::Error);
  CHECK(jobs.call("size") == 0);
  CHECK(w.proc->stop() == 0);
  Worker again(dir, {"hash", "kv", "queue", "jobs"}, {"--data", data});
  CHECK(patro::get_proxy(again.front, "kv").call("get", "small") == "y");
  CHECK(again.proc->stop() == 0);
}

namespace {
int64_t queue_stat(patro::Proxy& q, const char* key) {
  return q.call("stats")[key].as<int64_t>();
}
// Polls (bounded: 10 s) until stats()[key] is n.
bool wait_queue_stat(patro::Proxy& q, const char* key, int64_t n) {
  for (int i = 0; i < 1000; ++i) {
    if (queue_stat(q, key) == n) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}
std::vector<std::string> bodies(const patro::Value& taken) {
  std::vector<std::string> out;
  for (const patro::Value& t : *taken.if_array()) out.push_back(t[1].as<std::string>());
  return out;
}
}  // namespace

TEST_CASE(
    "--data: priorities, delays, time-to-run deadlines and buried jobs survive kill -9; "
    "--max-deliveries buries") {
  TempDir dir;
  const std::string data = dir.file("data");
  const std::vector<std::string> objects{"queue", "jobs"};
  // A long visibility timeout: a job comes back here only by its own time-to-run.
  const std::vector<std::string> options{"--data", data,           "--max-deliveries",
                                         "2",      "--visibility", "600000"};
  auto w = std::make_unique<Worker>(dir, objects, options);
  const std::string front = w->front, back = w->back;
  auto kill_and_restart = [&] {
    w->proc->signal(SIGKILL);
    REQUIRE(w->proc->wait(10s).has_value());
    w = std::make_unique<Worker>(dir, objects, options, front, back);
  };
  {
    auto q = patro::get_proxy(front, "jobs");
    q.call("push", "a", patro::Value::hash({{"priority", 2}}));
    q.call("push_many", patro::ValueArray{"b", "c"}, patro::Value::hash({{"priority", 1}}));
    q.call("push", "d", patro::Value::hash({{"delay_ms", 1000}}));
    q.call("push", "e", patro::Value::hash({{"ttr_ms", 250}}));
    CHECK(queue_stat(q, "delayed") == 1);
    const patro::Value e = q.call("take", 0);
    CHECK(e[1] == "e");  // priority 0; d is not ready yet
  }
  kill_and_restart();
  {
    auto q = patro::get_proxy(front, "jobs");
    CHECK(queue_stat(q, "pushed") == 5);
    // e's lease ends by its 250 ms time-to-run, d's delay ends: both ready, d first (its id).
    REQUIRE(wait_queue_stat(q, "ready", 5));
    CHECK(queue_stat(q, "leased") == 0);
    const patro::Value all = q.call("take_many", 10, 0);
    CHECK(bodies(all) == std::vector<std::string>{"d", "e", "b", "c", "a"});
    // e's second delivery: nacked, it has had its two and is buried.
    for (const patro::Value& t : *all.if_array()) {
      if (t[1] == "e")
        CHECK(q.call("nack", t[0], t[2]) == true);
      else
        CHECK(q.call("ack", t[0], t[2]) == true);
    }
    CHECK(queue_stat(q, "buried") == 1);
  }
  kill_and_restart();
  auto q = patro::get_proxy(front, "jobs");
  const patro::Value s = q.call("stats");
  CHECK(s["buried"] == 1);
  CHECK(s["ready"] == 0);
  CHECK(s["acknowledged"] == 4);
  CHECK(s["pushed"] == 5);
  const patro::Value b = q.call("buried", 10);
  REQUIRE(b.size() == 1);
  CHECK(b[0][1] == "e");
  CHECK(q.call("kick", 10) == 1);
  const patro::Value e = q.call("take", 0);
  CHECK(e[1] == "e");
  CHECK(q.call("touch", e[0], e[2]) == true);
  CHECK(q.call("bury", e[0], e[2]) == true);
  CHECK(q.call("touch", e[0], e[2]) == false);  // buried: no lease to touch
  CHECK_THROWS_AS(q.call("push", "x", patro::Value::hash({{"priority", "high"}})), patro::Error);
  CHECK_THROWS_AS(q.call("push", "x", "fast"), patro::Error);
  CHECK(queue_stat(q, "pushed") == 5);
  CHECK(w->proc->stop() == 0);
  Process verify({program("PATRO_WORKER"), "verify", data}, dir.file("verify.out"));
  CHECK(verify.wait(30s) == 0);
}
