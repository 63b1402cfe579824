// patro-worker and patro-broker as daemons: the log writer's follow and long lines, log lines,
// levels, SIGHUP, --data, duplicate names, and write-ahead log compaction. Each case drives the
// real binaries.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/loopback_port.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerOptions;
using patro::test::BrokerProcess;
using patro::test::LoopbackPort;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::redirected;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// Under ThreadSanitizer a lane decoding a message of many megabytes takes longer than the
// heartbeat window, so the cases with the largest values use smaller ones there.
#if defined(__SANITIZE_THREAD__)
constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kThreadSanitizer = true;
#else
constexpr bool kThreadSanitizer = false;
#endif
#else
constexpr bool kThreadSanitizer = false;
#endif

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
    if (!patro::test::resolve_when_up(front, objects.at(1)))
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
  const std::string long1(100 << 10, 'a');                             // 100 KiB
  const std::string long2(kThreadSanitizer ? 1 << 20 : 3 << 20, 'b');  // MiBs
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

namespace {

// Runs a program to its end (bounded), stderr to a file; returns the exit code and the stderr.
std::pair<int, std::string> run_to_end(const TempDir& dir, std::vector<std::string> argv,
                                       std::vector<std::string> env = {}) {
  const std::string err = dir.file("run.err");
  std::remove(err.c_str());
  Process p(redirected(std::move(argv), err, std::move(env)));
  const std::optional<int> rc = p.wait(20s);
  if (!rc) p.stop();
  return {rc.value_or(-1), read_file(err)};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// "2026-11-28T21:00:00.123Z " at the start, by hand (GCC 12 warns falsely inside <regex>).
bool starts_with_iso_time(const std::string& l) {
  const std::string shape = "dddd-dd-ddTdd:dd:dd.dddZ ";
  if (l.size() < shape.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const bool ok = shape[i] == 'd' ? (l[i] >= '0' && l[i] <= '9') : l[i] == shape[i];
    if (!ok) return false;
  }
  return true;
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

int64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : -1;
}

std::string wait_for_text(const std::string& path, const std::string& what,
                          std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string text;
  while (std::chrono::steady_clock::now() < deadline) {
    text = read_file(path);
    if (contains(text, what)) break;
    std::this_thread::sleep_for(20ms);
  }
  return text;
}

}  // namespace

TEST_CASE("daemon logs: ISO-8601 UTC times, info by default, start-up lines naming endpoints") {
  TempDir dir;
  {
    Worker w(dir, {"log", "events", dir.file("events.log"), "queue", "jobs"}, {},
             {"-u", "PATRO_LOG_LEVEL"});
    CHECK(w.proc->stop() == 0);
    const std::string text = read_file(dir.file("worker.err"));
    INFO(text);
    CHECK(contains(text, "embedded broker: clients connect to " + w.front));
    CHECK(contains(text, "servers to " + w.back));
    CHECK(contains(text, "serving log 'events' into " + dir.file("events.log")));
    CHECK(contains(text, "serving queue 'jobs'"));
    CHECK(contains(text, "registered with " + w.back));
    const auto lines = lines_of(text);
    REQUIRE(!lines.empty());
    for (const auto& l : lines) CHECK(starts_with_iso_time(l));
    CHECK(contains(lines.front(), " INFO worker["));
  }
  // The broker: its endpoints at the default level.
  BrokerOptions bo;
  bo.heartbeat_ms = bo.liveness = "";  // the defaults
  bo.err_file = dir.file("broker.err");
  bo.env = {"-u", "PATRO_LOG_LEVEL"};
  BrokerProcess broker(dir, bo);
  const std::string text = wait_for_text(dir.file("broker.err"), "serving clients at");
  CHECK(broker.proc->stop() == 0);
  INFO(text);
  CHECK(contains(text, "serving clients at " + broker.front + ", servers at " + broker.back));
  for (const auto& l : lines_of(text)) CHECK(starts_with_iso_time(l));
}

TEST_CASE("daemon logs: journal priority prefixes when stderr is the journal's stream") {
  TempDir dir;
  const std::string err = dir.file("worker.err");
  { std::ofstream(err).flush(); }
  struct stat st {};
  REQUIRE(::stat(err.c_str(), &st) == 0);
  const std::string stream = std::to_string(static_cast<unsigned long long>(st.st_dev)) + ":" +
                             std::to_string(static_cast<unsigned long long>(st.st_ino));
  Worker w(dir, {"queue", "jobs"}, {"--log-level", "Debug"}, {"JOURNAL_STREAM=" + stream});
  CHECK(w.proc->stop() == 0);
  const std::string text = read_file(err);
  INFO(text);
  const auto lines = lines_of(text);
  REQUIRE(!lines.empty());
  for (const auto& l : lines) CHECK((l.rfind("<6>", 0) == 0 || l.rfind("<7>", 0) == 0));
  CHECK(contains(text, "<6>worker: serving queue 'jobs'"));
}

TEST_CASE("log levels: names in any case; unknown ones are refused with a clear error") {
  TempDir dir;
  {
    Worker w(dir, {"queue", "jobs"}, {}, {"PATRO_LOG_LEVEL=INFO"});
    CHECK(w.proc->stop() == 0);
    CHECK(contains(read_file(dir.file("worker.err")), "serving queue 'jobs'"));
  }
  {
    std::remove(dir.file("worker.err").c_str());
    Worker w(dir, {"queue", "jobs"}, {"--log-level", "Error"});
    CHECK(w.proc->stop() == 0);
    CHECK(!contains(read_file(dir.file("worker.err")), "serving"));
  }
  auto [rc, err] = run_to_end(dir, {program("PATRO_WORKER"), "--log-level", "loud", "queue", "q"});
  CHECK(rc == 2);
  CHECK(contains(err, "'loud' is not a level"));
  std::tie(rc, err) =
      run_to_end(dir, {program("PATRO_WORKER"), "queue", "q"}, {"PATRO_LOG_LEVEL=verbosely"});
  CHECK(rc == 2);
  CHECK(contains(err, "PATRO_LOG_LEVEL='verbosely' is not a level"));
  // Started by hand, not through BrokerProcess: the broker must refuse its command line and exit
  // before it writes an endpoints file.
  std::tie(rc, err) = run_to_end(dir, {program("PATRO_BROKER"), "--log-level", "chatty"});
  CHECK(rc == 2);
  CHECK(contains(err, "'chatty' is not a level"));
}

TEST_CASE("log levels and selections: verbose is above info and below debug; components chosen") {
  TempDir dir;
  auto worker_log = [&dir](std::vector<std::string> options, std::vector<std::string> env) {
    std::remove(dir.file("worker.err").c_str());
    Worker w(dir, {"queue", "jobs"}, std::move(options), std::move(env));
    CHECK(w.proc->stop() == 0);
    return read_file(dir.file("worker.err"));
  };
  // Debug: the start-up lines and the embedded broker's debug lines (a client connected).
  std::string text = worker_log({}, {"PATRO_LOG_LEVEL=debug"});
  CHECK(contains(text, " DEBUG broker["));
  // Verbose: the info lines, not the debug ones. --log-level verbose is the same.
  for (const auto& [options, env] :
       std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>{
           {{}, {"PATRO_LOG_LEVEL=Verbose"}}, {{"--log-level", "verbose"}, {}}}) {
    text = worker_log(options, env);
    INFO(text);
    CHECK(contains(text, " INFO worker["));
    CHECK(contains(text, "serving queue 'jobs'"));
    CHECK(contains(text, "embedded broker: clients connect to"));
    CHECK(!contains(text, " DEBUG "));
  }
  // Only the worker's lines, not its embedded broker's, and the other way round.
  text = worker_log({}, {"PATRO_LOG_LEVEL=info", "PATRO_LOG_SELECTIONS=-broker"});
  CHECK(contains(text, "serving queue 'jobs'"));
  CHECK(!contains(text, " broker["));
  text = worker_log({}, {"PATRO_LOG_LEVEL=debug", "PATRO_LOG_SELECTIONS=broker"});
  CHECK(contains(text, " DEBUG broker["));
  CHECK(contains(text, " INFO broker["));
  CHECK(!contains(text, "worker["));
  // Bad selections are refused at start, by the worker and by the broker.
  auto [rc, err] = run_to_end(dir, {program("PATRO_WORKER"), "queue", "q"},
                              {"PATRO_LOG_SELECTIONS=worker --broker"});
  CHECK(rc == 2);
  CHECK(contains(err, "PATRO_LOG_SELECTIONS='worker --broker'"));
  CHECK(contains(err, "'--broker' is not a selection"));
  std::tie(rc, err) = run_to_end(dir, {program("PATRO_BROKER")}, {"PATRO_LOG_SELECTIONS=-"});
  CHECK(rc == 2);
  CHECK(contains(err, "'-' is not a selection"));
}

TEST_CASE("numeric options: a word or a negative number is refused briefly, naming the value") {
  TempDir dir;
  auto [rc, err] = run_to_end(dir, {program("PATRO_WORKER"), "--visibility", "abc", "queue", "q"});
  CHECK(rc == 2);
  CHECK(contains(err, "'abc' is not a number"));
  CHECK(err.size() < 200);  // not the bounds of a double in full (about 300 digits)
  std::tie(rc, err) =
      run_to_end(dir, {program("PATRO_WORKER"), "--heartbeat-ms", "-5", "queue", "q"});
  CHECK(rc == 2);
  CHECK(contains(err, "'-5' is negative"));
  // By hand, as above: a broker that refuses its options never writes its endpoints.
  std::tie(rc, err) = run_to_end(dir, {program("PATRO_BROKER"), "--heartbeat-ms", "5"});
  CHECK(rc == 2);
  CHECK(contains(err, "'5' is out of range (10 to 3600000)"));
}

TEST_CASE("patro-worker whose broker does not answer says it did not register there") {
  TempDir dir;
  // A port bound but not listening: connections to it are refused, and no one else can take it.
  const LoopbackPort port(false);
  const std::string& endpoint = port.endpoint;
  auto [rc, err] = run_to_end(dir, {program("PATRO_WORKER"), "--broker", endpoint, "counter", "c"});
  CHECK(rc != 0);
  CAPTURE(err);
  CHECK(contains(err, "the broker at " + endpoint + " did not accept the registration within"));
  CHECK(!contains(err, "accepted"));
}

TEST_CASE("patro-broker on a port already in use says the port is in use (os_failure)") {
  TempDir dir;
  const LoopbackPort port(true);
  const std::string& endpoint = port.endpoint;
  // By hand, not through BrokerProcess: this broker fails to start, which is what is tested.
  auto [rc, err] = run_to_end(
      dir, {program("PATRO_BROKER"), "--front", endpoint, "--back", "tcp://127.0.0.1:*"});
  CHECK(rc == 1);
  CAPTURE(err);
  CHECK(contains(err, "os_failure: broker cannot bind " + endpoint + " (the port is in use)"));
  CHECK(!contains(err, "invalid_argument"));
}

TEST_CASE("SIGHUP reopens served logs and the worker's own log: the old file stops growing") {
  TempDir dir;
  const std::string path = dir.file("events.log"), own = dir.file("worker.log");
  Worker w(dir, {"log", "events", path}, {"--log-file", own, "--log-level", "info"});
  auto log = patro::get_proxy(w.front, "events");
  auto settle = [&](int64_t bytes) {
    for (int i = 0; i < 500 && log.call("size").as<int64_t>() < bytes; ++i)
      std::this_thread::sleep_for(10ms);
  };
  for (int i = 0; i < 10; ++i) log.call("write", "before " + std::to_string(i));
  settle(10 * 9);
  CHECK(contains(read_file(own), "serving log 'events'"));
  // logrotate's "create": move the files away, then SIGHUP.
  REQUIRE(std::rename(path.c_str(), (path + ".1").c_str()) == 0);
  REQUIRE(std::rename(own.c_str(), (own + ".1").c_str()) == 0);
  w.proc->signal(SIGHUP);
  const std::string own_text = wait_for_text(own, "log files reopened");
  CHECK(contains(own_text, "log files reopened"));
  for (int i = 0; i < 10; ++i) log.call("write", "after " + std::to_string(i));
  settle(10 * 8);
  CHECK(!w.proc->wait(200ms).has_value());  // still running
  const auto old_lines = lines_of(read_file(path + ".1"));
  const auto new_lines = lines_of(read_file(path));
  REQUIRE(old_lines.size() == 10);
  REQUIRE(new_lines.size() == 10);
  CHECK(old_lines.back() == "before 9");
  CHECK(new_lines.front() == "after 0");
  CHECK(!contains(read_file(own + ".1"), "reopened"));
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("patro-worker and patro-broker raise their soft descriptor limit to the hard one") {
  rlimit mine{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &mine) == 0);
  if (mine.rlim_max != RLIM_INFINITY && mine.rlim_max <= 512) return;  // nothing to raise to
  // The daemons inherit a soft limit of 512, as a unit without LimitNOFILE= gets 1,024.
  rlimit low = mine;
  low.rlim_cur = 512;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  struct Restore {  // this process's limit, on every path out
    rlimit limit;
    ~Restore() { ::setrlimit(RLIMIT_NOFILE, &limit); }
  } restore{mine};
  TempDir dir;
  // The soft limit of a process, as /proc shows it ("Max open files  SOFT  HARD  files").
  auto soft_limit = [](int pid) {
    std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/limits"));
    for (std::string line; std::getline(in, line);)
      if (line.rfind("Max open files", 0) == 0) return line.substr(14);
    return std::string();
  };
  auto words = [](const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
  };
  {
    Worker w(dir, {"queue", "jobs"});  // serving: past its start-up
    BrokerOptions bo;
    bo.heartbeat_ms = bo.liveness = "";  // the defaults
    bo.err_file = dir.file("broker.err");
    BrokerProcess b(dir, bo);  // bound: past its start-up too
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &mine) == 0);
    for (const int pid : {w.proc->pid(), b.proc->pid()}) {
      std::vector<std::string> limits;
      for (int i = 0; i < 200; ++i) {  // the broker raises it as it starts: wait for that
        limits = words(soft_limit(pid));
        if (limits.size() >= 2 && limits[0] == limits[1]) break;
        std::this_thread::sleep_for(25ms);
      }
      REQUIRE(limits.size() >= 2);
      CHECK(limits[0] != "512");
      CHECK(limits[0] == limits[1]);
    }
  }
}

TEST_CASE("sd_notify: READY=1 once serving, STOPPING=1 on SIGTERM") {
  TempDir dir;
  const std::string sock_path = dir.file("notify.sock");
  const int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(sock >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(sock_path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size());
  REQUIRE(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  auto receive = [&](int timeout_ms) {
    pollfd p{sock, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return std::string();
    char buf[512];
    const ssize_t n = ::recv(sock, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  for (const char* which : {"PATRO_WORKER", "PATRO_BROKER"}) {
    std::vector<std::string> argv{program(which), "--front", "tcp://127.0.0.1:*", "--back",
                                  "tcp://127.0.0.1:*"};
    if (std::string(which) == "PATRO_WORKER") argv.insert(argv.end(), {"queue", "jobs"});
    Process p(redirected(argv, dir.file("notify.err"), {"NOTIFY_SOCKET=" + sock_path}));
    std::string got;
    for (int i = 0; i < 10 && !contains(got, "READY=1"); ++i) got += receive(2000);
    CHECK_MESSAGE(contains(got, "READY=1"), which);
    CHECK(!p.wait(0ms).has_value());
    p.signal(SIGTERM);
    got.clear();
    for (int i = 0; i < 10 && !contains(got, "STOPPING=1"); ++i) got += receive(1000);
    CHECK_MESSAGE(contains(got, "STOPPING=1"), which);
    CHECK(p.wait(10s) == 0);
  }
  ::close(sock);
}

TEST_CASE("--data creates its directory (0750); duplicate object names are refused") {
  TempDir dir;
  const std::string data = dir.file("a/b/data");
  {
    Worker w(dir, {"counter", "n", "queue", "jobs"}, {"--data", data});
    CHECK(patro::get_proxy(w.front, "n").call("add", 5) == 5);
    CHECK(w.proc->stop() == 0);
  }
  struct stat st {};
  REQUIRE(::stat(data.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0777) == 0750);
  CHECK(file_size(data + "/counter-n.wal") > 0);
  CHECK(file_size(data + "/queue-jobs.wal") >= 0);

  auto [rc, err] = run_to_end(
      dir, {program("PATRO_WORKER"), "--data", data, "queue", "q", "hash", "kv", "queue", "q"});
  CHECK(rc == 2);
  CHECK(contains(err, "two objects are named 'q'"));
  std::tie(rc, err) =
      run_to_end(dir, {program("PATRO_WORKER"), "log", "x", dir.file("x.log"), "counter", "x"});
  CHECK(rc == 2);
  CHECK(contains(err, "two objects are named 'x'"));
}

TEST_CASE(
    "write-ahead logs compact online: adds do not grow a counter's log; an erased value "
    "leaves the disk") {
  TempDir dir;
  const std::string data = dir.file("data");
  const std::vector<std::string> objects{"counter", "n", "hash", "kv", "queue", "jobs"};
  {
    // A threshold of 0 bytes: compaction as soon as the log holds twice the live state.
    Worker w(dir, objects, {"--data", data, "--compact-min-bytes", "0"});
    auto n = patro::get_proxy(w.front, "n");
    const int64_t one = file_size(data + "/counter-n.wal");
    for (int i = 0; i < 20; ++i) n.call("add", 1);
    int64_t after = 0;
    for (int i = 0; i < 200 && (after = file_size(data + "/counter-n.wal")) > 3 * one + 16; ++i)
      std::this_thread::sleep_for(10ms);
    INFO("one record: " << one << " bytes; after 20 adds: " << after);
    CHECK(after <= 3 * one + 16);  // not 21 records
    CHECK(n.call("get") == 20);
    auto q = patro::get_proxy(w.front, "jobs");
    for (int i = 0; i < 200; ++i) q.call("push", "job " + std::to_string(i));
    for (int i = 0; i < 190; ++i) {
      const patro::Value got = q.call("take", 0);
      REQUIRE(!got.is_null());
      q.call("ack", got[0], got[2]);
    }
    CHECK(file_size(data + "/queue-jobs.wal") < 200 * 20);
    CHECK(w.proc->stop() == 0);
  }
  {
    // Default thresholds (2x the live state and 1 MiB): a 10 MB value set, then erased.
    Worker w(dir, objects, {"--data", data});
    CHECK(patro::get_proxy(w.front, "n").call("get") == 20);
    auto q = patro::get_proxy(w.front, "jobs");
    CHECK(q.call("size") == 10);
    auto kv = patro::get_proxy(w.front, "kv");
    kv.call("set", "small", "kept");
    const size_t big = kThreadSanitizer ? 2 << 20 : 10 << 20;
    kv.call("set", "big", std::string(big, 'x'));
    CHECK(file_size(data + "/hash-kv.wal") > static_cast<int64_t>(big));
    kv.call("erase", "big");
    int64_t size = 0;
    for (int i = 0; i < 500 && (size = file_size(data + "/hash-kv.wal")) > (1 << 20); ++i)
      std::this_thread::sleep_for(10ms);
    CHECK(size < 4096);
    CHECK(w.proc->stop() == 0);
  }
  Worker w(dir, objects, {"--data", data});
  auto kv = patro::get_proxy(w.front, "kv");
  CHECK(kv.call("get", "small") == "kept");
  CHECK(kv.call("exists", "big") == false);
  CHECK(patro::get_proxy(w.front, "jobs").call("size") == 10);
  CHECK(w.proc->stop() == 0);
}

TEST_CASE("online compaction under load, then kill -9: nothing acknowledged is lost") {
  TempDir dir;
  const std::string data = dir.file("data");
  const std::vector<std::string> objects{"queue", "jobs", "hash", "kv", "counter", "n"};
  // Compact every few KiB, so that many compactions race with the appends.
  const std::vector<std::string> options{"--data",          data, "--compact-min-bytes", "4096",
                                         "--compact-ratio", "1.5"};
  auto w = std::make_unique<Worker>(dir, objects, options);
  // The producer and the changes are cut off by the kill: their call in flight is retried until
  // its deadline, 15 s here rather than the client's 60 s (still far above any call's time).
  auto client = [](std::vector<std::string> args, bool cut_off = false) {
    if (cut_off) args.insert(args.begin(), {"--timeout-ms", "15000"});
    args.insert(args.begin(), program("PATRO_WORKER_CLIENT"));
    return std::make_unique<Process>(args);
  };
  auto count_lines = [](const std::string& path) { return lines_of(read_file(path)).size(); };
  auto numbers = [](const std::string& path) {
    std::vector<long> out;
    std::istringstream in(read_file(path));
    for (long v; in >> v;) out.push_back(v);
    return out;
  };
  auto producer =
      client({"produce", w->front, "jobs", "0", "20000", "100", dir.file("pushed")}, true);
  auto changes = client({"changes", w->front, "kv", "n", "1000000", dir.file("changed")}, true);
  for (int i = 0; i < 600 && (count_lines(dir.file("pushed")) < 3000 ||
                              count_lines(dir.file("changed")) < 1000);
       ++i)
    std::this_thread::sleep_for(50ms);
  // Take and acknowledge some jobs too, so that the queue's log has garbage to drop.
  std::set<long> acked_before;
  {
    auto q = patro::get_proxy(w->front, "jobs");
    for (int i = 0; i < 500; ++i) {
      const patro::Value got = q.call("take", 0);
      if (got.is_null()) break;
      if (q.call("ack", got[0], got[2]) == true) acked_before.insert(got[1].as<int64_t>());
    }
  }
  w->proc->signal(SIGKILL);
  CHECK(w->proc->wait(10s).has_value());
  patro::remove_stale_lock_segments();
  // Cut off, they would retry their calls in flight until the deadline: what they wrote down
  // (acknowledged) is all the test needs, so they are stopped at once.
  CHECK(producer->kill());
  CHECK(changes->kill());
  const std::vector<long> pushed = numbers(dir.file("pushed"));
  const std::vector<long> changed = numbers(dir.file("changed"));
  REQUIRE(pushed.size() >= 3000);
  REQUIRE(changed.size() >= 1000);
  // The counter's log was compacted while it ran: about the threshold, not a record per add.
  const int64_t counter_log = file_size(data + "/counter-n.wal");
  CHECK(counter_log < 8192);
  CHECK(counter_log < static_cast<int64_t>(changed.size()) * 10);

  w = std::make_unique<Worker>(dir, objects, options);
  auto consumer = client({"consume", w->front, "jobs", "100", dir.file("acked"), "2000"});
  CHECK(consumer->wait(300s) == 0);
  const std::vector<long> acked = numbers(dir.file("acked"));
  const std::set<long> delivered(acked.begin(), acked.end());
  size_t missing = 0;
  // Every job whose push was acknowledged, and that was not acknowledged before the kill, is
  // delivered after the restart.
  for (long j : pushed) missing += delivered.count(j) == 0 && acked_before.count(j) == 0;
  CHECK(acked_before.size() > 0);
  CHECK(missing == 0);
  auto kv = patro::get_proxy(w->front, "kv");
  size_t lost_keys = 0;
  for (long i : changed) lost_keys += !(kv.call("get", "k" + std::to_string(i)) == i);
  CHECK(lost_keys == 0);
  const int64_t n = patro::get_proxy(w->front, "n").call("get").as<int64_t>();
  CHECK(n >= static_cast<int64_t>(changed.size()));
  CHECK(n <= static_cast<int64_t>(changed.size()) + 1);
  CHECK(w->proc->stop() == 0);
}

TEST_CASE("patro-broker: SIGHUP reopens --log-file and the broker keeps routing") {
  TempDir dir;
  const std::string own = dir.file("broker.log");
  BrokerOptions bo;
  bo.heartbeat_ms = bo.liveness = "";  // the defaults
  bo.extra = {"--log-file", own, "--log-level", "info"};
  bo.err_file = dir.file("broker.err");
  BrokerProcess broker(dir, bo);
  CHECK(contains(wait_for_text(own, "serving clients at"), "serving clients at"));
  REQUIRE(std::rename(own.c_str(), (own + ".1").c_str()) == 0);
  broker.proc->signal(SIGHUP);
  CHECK(contains(wait_for_text(own, "log file reopened"), "log file reopened"));
  CHECK(!contains(read_file(own + ".1"), "reopened"));
  CHECK(!broker.proc->wait(200ms).has_value());
  CHECK(patro::broker_info(broker.front).servers.empty());  // still answering
  CHECK(broker.proc->stop() == 0);
  CHECK(contains(read_file(own), "stopped"));
  CHECK(read_file(dir.file("broker.err")).empty());
}

TEST_CASE("log read: a line 1 KiB short of the message limit reads back whole" *
          doctest::skip(kThreadSanitizer)) {
  TempDir dir;
  Worker w(dir, {"log", "events", dir.file("events.log")});
  auto log = patro::get_proxy(w.front, "events");
  const size_t longest = patro::Limits{}.max_message_size - 1024;
  log.call("write", std::string(longest, 'z'));
  log.call("write", "after");
  for (int i = 0; i < 500 && log.call("size").as<int64_t>() < static_cast<int64_t>(longest + 7);
       ++i)
    std::this_thread::sleep_for(10ms);
  patro::Value got = log.call("read", 0, 10);
  REQUIRE(line_count(got) >= 1);
  CHECK(got["lines"][0].as<std::string>().size() == longest);
  CHECK(got["truncated"].is_null());
  if (line_count(got) == 1) got = log.call("follow", got["next"], 1000);  // the next reply
  CHECK(got["lines"][line_count(got) - 1] == "after");
  CHECK(got["next"] == static_cast<int64_t>(longest + 7));
  CHECK(w.proc->stop() == 0);
}
