// patro-worker's identity across restarts (its server id kept in --data, each object's id from its
// name), its logs' followers across rotations (a position names the file's generation), and its
// logs' formats (--log-format json, write_fields).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <future>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// patro-worker registered with an outside broker (which outlives it, as under systemd); ready once
// it wrote its config (after every lane registered).
std::unique_ptr<Process> start_worker(const TempDir& dir, const std::string& broker_back,
                                      const std::string& data, std::vector<std::string> objects) {
  const std::string cfg = dir.file("worker.conf");
  std::remove(cfg.c_str());
  std::vector<std::string> argv{program("PATRO_WORKER"), "--broker", broker_back,    "--data", data,
                                "--heartbeat-ms",        "100",      "--config-out", cfg};
  argv.insert(argv.end(), objects.begin(), objects.end());
  auto p = std::make_unique<Process>(argv);
  REQUIRE(wait_for_file(cfg, 30s));
  return p;
}

// patro-worker with its own broker serving the log "events" at path.
struct LogWorker {
  std::unique_ptr<Process> proc;
  std::string front;
  LogWorker(const TempDir& dir, const std::string& path, std::vector<std::string> options = {}) {
    const std::string eps = dir.file("endpoints");
    std::remove(eps.c_str());
    std::vector<std::string> argv{
        program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back", "tcp://127.0.0.1:*",
        "--endpoints-file",      eps,       "--heartbeat-ms",    "250"};
    argv.insert(argv.end(), options.begin(), options.end());
    for (const char* w : {"log", "events"}) argv.emplace_back(w);
    argv.push_back(path);
    proc = std::make_unique<Process>(argv);
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front;
    if (!patro::test::resolve_when_up(front, "events")) FAIL("the worker did not register its log");
  }
};

patro::Value position(int64_t generation, int64_t offset) {
  return patro::Value(patro::ValueHash{{"generation", generation}, {"offset", offset}});
}

// Every line from the position on, across the files after it, until a read finds none.
std::vector<std::string> read_all(patro::Proxy& log, patro::Value at, bool* skipped = nullptr) {
  std::vector<std::string> got;
  for (int i = 0; i < 10000; ++i) {
    const patro::Value r = log.call("read", at, 1000);
    if (skipped && r["skipped"] == true) *skipped = true;
    if (r["lines"].size() == 0) break;
    for (const patro::Value& l : *r["lines"].if_array()) got.push_back(l.as<std::string>());
    at = position(r["generation"].as<int64_t>(), r["next"].as<int64_t>());
  }
  return got;
}

// Waits (up to timeout) until the file holds at least n lines; the lines it holds.
std::vector<std::string> lines_of(const std::string& file, size_t n,
                                  std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<std::string> lines;
    std::istringstream in(read_file(file));
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    if (lines.size() >= n || std::chrono::steady_clock::now() >= deadline) return lines;
    std::this_thread::sleep_for(20ms);
  }
}

// patro-worker serving the counter "n" with its direct path on, registered with the broker at
// back; identity: how it knows its id (--data DIR, or --server-id and --server-secret). Ready
// once it wrote cfg.
std::unique_ptr<Process> start_direct_counter(const std::string& back, const std::string& cfg,
                                              std::vector<std::string> identity) {
  std::remove(cfg.c_str());
  std::vector<std::string> argv{program("PATRO_WORKER"), "--broker", back};
  argv.insert(argv.end(), identity.begin(), identity.end());
  for (const char* a : {"--direct", "tcp://127.0.0.1:*", "--heartbeat-ms", "100", "--config-out"})
    argv.emplace_back(a);
  for (const std::string& a : {cfg, std::string("counter"), std::string("n")}) argv.push_back(a);
  auto p = std::make_unique<Process>(argv);
  REQUIRE(wait_for_file(cfg, 30s));
  return p;
}

// Adds one to n until its calls take the direct path (the server counts them); the adds made.
int64_t add_until_direct(patro::Proxy& n, const std::string& front, const patro::ClientOptions& o) {
  int64_t total = 0;
  uint64_t direct = 0;
  for (int i = 0; i < 200 && direct == 0; ++i) {
    CHECK(n.call("add", 1) == ++total);
    for (const auto& s : patro::broker_info(front, o).servers) direct += s.direct;
    if (direct == 0) std::this_thread::sleep_for(20ms);
  }
  REQUIRE(direct > 0);
  return total;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE(
    "--data: proxies made before a restart keep working after kill -9 and after SIGTERM, with the "
    "objects named in another order") {
  TempDir dir;
  // A 3 s window: a client's call without a route waits twice that for its server to come back
  // (a worker killed with -9 is replaced at once by its restart, which holds the secret).
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "30");
  const std::string data = dir.file("data");
  const std::vector<std::string> objects{"queue", "jobs", "hash", "kv", "counter", "n"};
  const std::vector<std::string> reordered{"counter", "n", "hash", "kv", "queue", "jobs"};
  auto worker = start_worker(dir, broker.back, data, objects);
  const std::string id = read_file(data + "/server-id");
  CHECK(id.size() == 17);  // 16 hex digits and a newline

  // Through the broker: see the next case.
  patro::ClientOptions o;
  o.route = patro::Route::broker;
  patro::Proxy kv = patro::get_proxy(broker.front, "kv", o);
  patro::Proxy n = patro::get_proxy(broker.front, "n", o);
  patro::Proxy jobs = patro::get_proxy(broker.front, "jobs", o);
  kv.call("set", "k", "v1");
  CHECK(n.call("add", 5) == 5);
  jobs.call("push", "job 1");

  worker->signal(SIGKILL);
  CHECK(worker->wait(10s).has_value());
  // The new process proves it is the same server (DIR/server-secret) and replaces the old one.
  worker = start_worker(dir, broker.back, data, reordered);
  CHECK(read_file(data + "/server-id") == id);
  CHECK(kv.call("get", "k") == "v1");
  CHECK(n.call("add", 1) == 6);
  CHECK(jobs.call("size") == 1);

  // A clean stop; a call made while no worker runs completes once the next one registers.
  CHECK(worker->stop() == 0);
  auto during = std::async(std::launch::async, [&] { return n.call("get"); });
  worker = start_worker(dir, broker.back, data, objects);
  CHECK(during.get() == 6);
  CHECK(kv.call("get", "k") == "v1");
  CHECK(jobs.call("take", 1000).size() > 0);
  CHECK(read_file(data + "/server-id") == id);
  CHECK(worker->stop() == 0);
}

TEST_CASE(
    "--data in plaintext: a worker restarted after kill -9 replaces its old process at once by the "
    "secret beside its id; a worker with the id and not the secret is refused") {
  TempDir dir;
  // A 60 s window (100 ms x 600): without the proof the old process would hold the id that long,
  // and every wait below is bounded well under it.
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "600");
  const std::string data = dir.file("data");
  auto worker = start_worker(dir, broker.back, data, {"hash", "kv", "counter", "n"});
  const std::string id = read_file(data + "/server-id");
  const std::string secret = read_file(data + "/server-secret");
  CHECK(secret.size() == 65);  // 64 hex digits and a newline
  struct stat st {};
  REQUIRE(::stat((data + "/server-secret").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  patro::ClientOptions o;
  o.call_timeout = 20s;  // a third of the window: a call waiting for the old process fails
  // Through the broker, whose SERVER_DOWN names the old process's requests. (On the direct path a
  // call sent to the old process's endpoint before that SERVER_DOWN is read fails with
  // outcome_unknown: a known race, not this case's subject.)
  o.route = patro::Route::broker;
  patro::Proxy kv = patro::get_proxy(broker.front, "kv", o);
  patro::Proxy n = patro::get_proxy(broker.front, "n", o);
  kv.call("set", "k", "v1");
  CHECK(n.call("add", 5) == 5);

  REQUIRE(worker->kill());
  // start_worker waits (30 s at most) for the config, written once every lane registered.
  worker = start_worker(dir, broker.back, data, {"counter", "n", "hash", "kv"});
  CHECK(read_file(data + "/server-id") == id);
  CHECK(read_file(data + "/server-secret") == secret);
  CHECK(kv.call("get", "k") == "v1");
  CHECK(n.call("add", 1) == 6);

  // Another directory holding a copy of the id and no secret: the worker makes a secret of its
  // own, which is not the one the id was registered with, and is refused while the first lives.
  const std::string copy = dir.file("copy");
  REQUIRE(std::system(("mkdir -p " + copy).c_str()) == 0);
  patro::test::write_file(copy + "/server-id", id);
  const std::string err = dir.file("impostor.err");
  Process impostor(patro::test::redirected({program("PATRO_WORKER"), "--broker", broker.back,
                                            "--data", copy, "--heartbeat-ms", "100", "hash", "kv"},
                                           err));
  const auto status = impostor.wait(40s);
  REQUIRE(status.has_value());
  CHECK(*status != 0);
  CHECK(read_file(copy + "/server-secret").size() == 65);
  CHECK(read_file(copy + "/server-secret") != secret);
  CHECK(read_file(err).find("restart proof") != std::string::npos);
  // The first worker is still the one served.
  CHECK(kv.call("get", "k") == "v1");
  CHECK(n.call("get") == 6);

  // A damaged secret stops the start, and is left as it was.
  CHECK(worker->stop() == 0);
  patro::test::write_file(data + "/server-secret", "not a secret\n");
  Process damaged({program("PATRO_WORKER"), "--broker", broker.back, "--data", data, "hash", "kv"});
  CHECK(damaged.wait(20s) == 1);
  CHECK(read_file(data + "/server-secret") == "not a secret\n");
}

TEST_CASE(
    "--server-id with --server-secret (no --data): a restart after kill -9 replaces the old "
    "process "
    "at once; another secret is refused; a secret others can read is refused") {
  TempDir dir;
  // A 60 s window, as above: only the proof lets a restart in sooner.
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "600");
  const std::string secret = dir.file("secret"), other = dir.file("other");
  patro::test::write_file(secret, std::string(64, 'a') + "\n");
  patro::test::write_file(other, std::string(64, 'b') + "\n");
  REQUIRE(::chmod(secret.c_str(), 0600) == 0);
  REQUIRE(::chmod(other.c_str(), 0600) == 0);
  const std::string cfg = dir.file("worker.conf");
  auto start = [&](const std::string& secret_file) {
    std::remove(cfg.c_str());
    return std::make_unique<Process>(
        std::vector<std::string>{program("PATRO_WORKER"), "--broker", broker.back, "--server-id",
                                 "00000000000000c1", "--server-secret", secret_file,
                                 "--heartbeat-ms", "100", "--config-out", cfg, "counter", "n"});
  };
  auto worker = start(secret);
  REQUIRE(wait_for_file(cfg, 30s));
  patro::ClientOptions o;
  o.call_timeout = 20s;
  o.route = patro::Route::broker;
  patro::Proxy n = patro::get_proxy(broker.front, "n", o);
  CHECK(n.call("add", 5) == 5);

  REQUIRE(worker->kill());
  worker = start(secret);
  REQUIRE(wait_for_file(cfg, 30s));
  CHECK(n.call("add", 1) == 1);  // the new process (no --data: the counter starts again)

  // The id with another secret is refused while the first lives, and it is still served.
  auto impostor = start(other);
  const auto status = impostor->wait(40s);
  REQUIRE(status.has_value());
  CHECK(*status != 0);
  CHECK(n.call("add", 1) == 2);

  REQUIRE(::chmod(other.c_str(), 0644) == 0);
  Process readable(
      {program("PATRO_WORKER"), "--server-id", "c1", "--server-secret", other, "counter", "n"});
  CHECK(readable.wait(20s) == 2);
  patro::test::write_file(other, "not a secret\n");
  REQUIRE(::chmod(other.c_str(), 0600) == 0);
  Process damaged(
      {program("PATRO_WORKER"), "--server-id", "c1", "--server-secret", other, "counter", "n"});
  CHECK(damaged.wait(20s) == 2);
  Process without_id({program("PATRO_WORKER"), "--server-secret", secret, "counter", "n"});
  CHECK(without_id.wait(20s) == 2);
  CHECK(worker->stop() == 0);
}

TEST_CASE(
    "the direct path: a call made after the server's kill -9 is never sent to the dead process; "
    "it waits for the restart and runs there once") {
  TempDir dir;
  // A 60 s window: the broker still holds the dead process when the call is made.
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "600");
  const std::string secret = dir.file("secret");
  patro::test::write_file(secret, std::string(64, 'c') + "\n");
  REQUIRE(::chmod(secret.c_str(), 0600) == 0);
  const std::string cfg = dir.file("worker.conf");
  auto start = [&] {
    return start_direct_counter(broker.back, cfg,
                                {"--server-id", "00000000000000c2", "--server-secret", secret});
  };
  auto worker = start();
  patro::ClientOptions o;  // route=auto
  o.call_timeout = 30s;
  patro::Proxy n = patro::get_proxy(broker.front, "n", o);
  add_until_direct(n, broker.front, o);

  REQUIRE(worker->kill());
  std::this_thread::sleep_for(200ms);  // the client's socket has seen its connection close
  // Not idempotent: sent to the dead process it could only end as outcome_unknown.
  auto after = std::async(std::launch::async, [&] { return n.call("add", 1); });
  std::this_thread::sleep_for(300ms);
  worker = start();
  CHECK(after.get() == 1);  // the restart's counter starts at 0 (no --data): it ran once, there
  CHECK(n.call("get") == 1);
  CHECK(worker->stop() == 0);
}

TEST_CASE(
    "the direct path, --data: kill -9 while a thread adds one by one and a restart: each call is "
    "answered once or ends outcome_unknown (the one in flight), none runs twice") {
  TempDir dir;
  // A 60 s window: the broker still holds the dead process when the lost call goes through it.
  BrokerProcess broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "600");
  const std::string data = dir.file("data");
  const std::string cfg = dir.file("worker.conf");
  auto start = [&] { return start_direct_counter(broker.back, cfg, {"--data", data}); };
  auto worker = start();
  patro::ClientOptions o;  // route=auto
  o.call_timeout = 30s;
  patro::Proxy n = patro::get_proxy(broker.front, "n", o);
  const int64_t total = add_until_direct(n, broker.front, o);

  std::atomic<int64_t> answered{0}, unknown{0};
  std::atomic<bool> stop{false}, failed{false};
  std::string other;  // the other error that ended the thread, read after the join
  std::thread adds([&] {
    while (!stop) {
      try {
        n.call("add", 1);
        ++answered;
      } catch (const patro::Error& e) {
        if (e.code() != patro::Errc::outcome_unknown) {
          other = e.what();
          failed = true;
          return;
        }
        ++unknown;
      }
    }
  });
  auto wait_until = [](auto done, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  };
  wait_until([&] { return answered >= 50 || failed; }, 10s);
  REQUIRE(worker->kill());
  const int64_t at_kill = answered;
  std::this_thread::sleep_for(200ms);
  worker = start();
  wait_until([&] { return answered >= at_kill + 50 || failed; }, 20s);
  stop = true;
  adds.join();
  CHECK(other == "");
  CHECK(answered >= at_kill + 50);
  const int64_t value = n.call("get").as<int64_t>();
  // Each answered add ran once; the one in flight at the kill (sequential calls: at most one) may
  // have run at the dead process: outcome_unknown says so, and it did not run again.
  CHECK(value >= total + answered);
  CHECK(value <= total + answered + unknown);
  CHECK(unknown <= 1);
  CHECK(worker->stop() == 0);
}

TEST_CASE("--server-id: a bad id is refused; one that differs from --data's is refused") {
  TempDir dir;
  Process bad({program("PATRO_WORKER"), "--server-id", "xyz", "hash", "kv"});
  CHECK(bad.wait(20s) == 2);
  Process zero({program("PATRO_WORKER"), "--server-id", "0", "hash", "kv"});
  CHECK(zero.wait(20s) == 2);

  const std::string data = dir.file("data");
  REQUIRE(std::system(("mkdir -p " + data).c_str()) == 0);
  {
    std::FILE* f = std::fopen((data + "/server-id").c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs("00000000000000aa\n", f);
    std::fclose(f);
  }
  Process other({program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back",
                 "tcp://127.0.0.1:*", "--data", data, "--server-id", "bb", "hash", "kv"});
  CHECK(other.wait(20s) == 1);
  // A damaged id file stops the start rather than giving the directory another identity.
  {
    std::FILE* f = std::fopen((data + "/server-id").c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs("not an id\n", f);
    std::fclose(f);
  }
  Process damaged({program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back",
                   "tcp://127.0.0.1:*", "--data", data, "hash", "kv"});
  CHECK(damaged.wait(20s) == 1);
  CHECK(read_file(data + "/server-id") == "not an id\n");
}

TEST_CASE(
    "a follower across three rotations (rotate; mv, a line, SIGHUP; rotate) gets every line once, "
    "whole, in order") {
  TempDir dir;
  const std::string path = dir.file("events.log"), out = dir.file("tail-out");
  LogWorker w(dir, path);
  patro::Proxy log = patro::get_proxy(w.front, "events");
  const int64_t first = log.call("read", 0, 1)["generation"].as<int64_t>();
  auto line = [](int i) {
    return "line " + std::to_string(i) + " " + std::string(static_cast<size_t>(i % 97), 'x');
  };
  log.call("write", line(0));
  Process tail({program("PATRO_CLI"), "--broker", w.front, "tail", "-f", "--from", "0", "events"},
               out);
  REQUIRE(lines_of(out, 1, 20s).size() == 1);  // following before the first rotation

  constexpr int kLines = 400;
  for (int i = 1; i < kLines; ++i) {
    if (i == 100 || i == 300) CHECK(log.call("rotate") == true);
    if (i == 200) REQUIRE(std::rename(path.c_str(), (path + ".moved").c_str()) == 0);
    log.call("write", line(i));  // line 200: between the mv and the SIGHUP, into the moved file
    if (i == 200) w.proc->signal(SIGHUP);
  }
  std::vector<std::string> expected;
  for (int i = 0; i < kLines; ++i) expected.push_back(line(i));

  const std::vector<std::string> followed = lines_of(out, kLines, 30s);
  tail.signal(SIGINT);
  CHECK(tail.wait(20s) == 0);
  CHECK(lines_of(out, kLines, 0ms) == expected);
  CHECK(followed.size() == expected.size());

  // Read afterwards from the first file's start: every file in turn, the moved one included.
  bool skipped = false;
  CHECK(read_all(log, position(first, 0), &skipped) == expected);
  CHECK(!skipped);
  // A plain offset still means the current file (as older clients send it).
  CHECK(log.call("read", 0, 1000)["lines"].size() == kLines - 300);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("--log-keep 1: one rotated file is kept; a follower of a file no longer kept is told") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  LogWorker w(dir, path, {"--log-keep", "1"});
  patro::Proxy log = patro::get_proxy(w.front, "events");
  const int64_t first = log.call("read", 0, 1)["generation"].as<int64_t>();
  for (int r = 0; r < 3; ++r) {
    log.call("write", "file " + std::to_string(r));
    CHECK(log.call("rotate") == true);
  }
  log.call("write", "file 3");
  CHECK(exists(path + ".1"));
  CHECK(!exists(path + ".2"));
  CHECK(read_file(path + ".1") == "file 2\n");
  bool skipped = false;
  CHECK(read_all(log, position(first, 0), &skipped) ==
        std::vector<std::string>{"file 2", "file 3"});
  CHECK(skipped);
  // A bad position is a clear error.
  CHECK_THROWS_AS(log.call("read", "nowhere", 10), patro::Error);
  CHECK_THROWS_AS(log.call("follow", patro::Value(patro::ValueHash{{"generation", first}}), 10),
                  patro::Error);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("--log-keep-bytes: the oldest rotated files go until the rest fit; PATH.1 stays") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  // Files of 100 bytes (ten lines of ten), at most 250 bytes of them: two rotated files kept.
  LogWorker w(dir, path, {"--log-keep", "10", "--log-keep-bytes", "250"});
  patro::Proxy log = patro::get_proxy(w.front, "events");
  auto file_of = [&](int r) {
    log.call("write_many",
             patro::Value(patro::ValueArray(10, "file " + std::to_string(r) + "...")));
    CHECK(log.call("rotate") == true);
  };
  for (int r = 0; r < 5; ++r) file_of(r);
  CHECK(read_file(path + ".1").rfind("file 4...\n", 0) == 0);
  CHECK(read_file(path + ".2").rfind("file 3...\n", 0) == 0);
  CHECK(read_file(path + ".1").size() == 100);
  CHECK(!exists(path + ".3"));  // 300 bytes with it: past the bound
  CHECK(!exists(path + ".5"));
  // A file larger than the bound alone: it stays as PATH.1, and every older one goes.
  log.call("write_many", patro::Value(patro::ValueArray(30, std::string(9, 'y'))));
  CHECK(log.call("rotate") == true);
  CHECK(read_file(path + ".1").size() == 300);
  CHECK(!exists(path + ".2"));
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("a follower's position survives a worker restart after a rotation") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  auto w = std::make_unique<LogWorker>(dir, path);
  patro::Proxy log = patro::get_proxy(w->front, "events");
  log.call("write", "a");
  const patro::Value r = log.call("read", 0, 1000);
  const int64_t gen = r["generation"].as<int64_t>();
  const int64_t next = r["next"].as<int64_t>();
  log.call("write", "b");
  CHECK(log.call("rotate") == true);
  log.call("write", "c");
  CHECK(w->proc->stop() == 0);
  w = std::make_unique<LogWorker>(dir, path);
  patro::Proxy again = patro::get_proxy(w->front, "events");
  bool skipped = false;
  CHECK(read_all(again, position(gen, next), &skipped) == std::vector<std::string>{"b", "c"});
  CHECK(!skipped);
  CHECK(w->proc->stop() == 0);
}

TEST_CASE("--log-format json: one object per line with fields; tail --json prints the objects") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  LogWorker w(dir, path, {"--log-format", "json"});
  patro::Proxy log = patro::get_proxy(w.front, "events");
  CHECK(log.call("write", "two\nlines\n") == true);
  CHECK(log.call("write_fields", "disk full",
                 patro::Value(patro::ValueHash{
                     {"level", "warn"}, {"disk", "/dev/sda"}, {"free", int64_t{0}}})) == true);
  // A level that is not a string is refused, and nothing is written.
  CHECK_THROWS_AS(log.call("write_fields", "x", patro::Value(patro::ValueHash{{"level", 3}})),
                  patro::Error);
  const std::vector<std::string> lines = lines_of(path, 2, 20s);
  REQUIRE(lines.size() == 2);
  // {"ts":"2026-…Z","host":"…","sender":"<16 hex>","level":…,"line":…(,"fields":{…})}
  for (const std::string& l : lines) {
    CAPTURE(l);
    CHECK(l.rfind("{\"ts\":\"", 0) == 0);
    CHECK(l.find("Z\",\"host\":\"") == 30);
    const size_t sender = l.find("\",\"sender\":\"");
    REQUIRE(sender != std::string::npos);
    CHECK(l.compare(sender + 28, 11, "\",\"level\":\"") == 0);  // 16 hex digits between
  }
  CHECK(lines[0].find("\"level\":\"info\",\"line\":\"two\\nlines\"}") != std::string::npos);
  CHECK(lines[1].find("\"level\":\"warn\",\"line\":\"disk full\","
                      "\"fields\":{\"disk\":\"/dev/sda\",\"free\":0}}") != std::string::npos);
  // patro tail --json prints each line as its object, not as a string holding it.
  const std::string out = dir.file("tail.out");
  Process tail({program("PATRO_CLI"), "--broker", w.front, "--json", "tail", "events"}, out);
  REQUIRE(tail.wait(30s) == 0);
  CHECK(lines_of(out, 2, 0ms) == lines);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("write_fields in a text log: key=value pairs after the line, quoted where needed") {
  TempDir dir;
  const std::string path = dir.file("events.log");
  LogWorker w(dir, path);
  patro::Proxy log = patro::get_proxy(w.front, "events");
  CHECK(log.call("write_fields", "disk full",
                 patro::Value(patro::ValueHash{{"disk", "/dev/sda"},
                                               {"note", "two words"},
                                               {"free", int64_t{0}},
                                               {"tags", patro::ValueArray{"a", "b"}}})) == true);
  CHECK(lines_of(path, 1, 20s) ==
        std::vector<std::string>{
            R"(disk full disk=/dev/sda free=0 note="two words" tags=["a","b"])"});
  // tail --json prints a text line as a JSON string.
  const std::string out = dir.file("tail.out");
  Process tail({program("PATRO_CLI"), "--broker", w.front, "--json", "tail", "events"}, out);
  REQUIRE(tail.wait(30s) == 0);
  CHECK(lines_of(out, 1, 0ms) ==
        std::vector<std::string>{
            R"("disk full disk=/dev/sda free=0 note=\"two words\" tags=[\"a\",\"b\"]")"});
  CHECK(w.proc->stop() == 0);
}
