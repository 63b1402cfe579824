// The patro CLI against the real patro-worker (its own broker): the queue flow from a shell (take
// in one process, ack in another; take --exec), typed input (--json-args, -x, @FILE), valid JSON
// for any value, and the options every binary shares (--version, --opt=value, host:port); several
// brokers (--broker A,B: each one's view in ls and stats, a dead one skipped).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/loopback_port.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

struct Run {
  int status = -1;
  std::string out;
};

// Runs argv to completion (60 s at most) with its stdout in a file of dir.
Run run(const TempDir& dir, std::vector<std::string> argv) {
  static int runs = 0;
  const std::string out = dir.file("run-" + std::to_string(++runs));
  Process p(std::move(argv), out);
  Run r;
  auto st = p.wait(60s);
  REQUIRE(st.has_value());
  r.status = *st;
  r.out = read_file(out);
  return r;
}

// patro-worker with its own broker on free ports, serving a queue, a hash and a log.
struct Worker {
  TempDir dir;
  std::unique_ptr<Process> proc;
  std::string front, host_port;

  Worker() {
    const std::string eps = dir.file("worker-endpoints");
    proc = std::make_unique<Process>(std::vector<std::string>{
        program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back", "tcp://127.0.0.1:*",
        "--endpoints-file", eps, "--heartbeat-ms", "250", "--visibility", "600000", "queue", "jobs",
        "hash", "kv", "log", "events", dir.file("events.log")});
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front;
    host_port = front.substr(std::string("tcp://").size());
    if (!patro::test::resolve_when_up(front, "events"))
      FAIL("the worker did not register its objects");
  }
  ~Worker() { proc->stop(); }

  // patro with the broker from PATRO_BROKER as HOST:PORT (the test environment sets PATRO_BROKER
  // to the broker's program, so it is replaced here).
  std::vector<std::string> argv(std::vector<std::string> args) const {
    std::vector<std::string> a{"/usr/bin/env", "PATRO_BROKER=" + host_port, program("PATRO_CLI")};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }
  Run cli(std::vector<std::string> args) const { return run(dir, argv(std::move(args))); }
  std::string out(std::vector<std::string> args) const {
    Run r = cli(std::move(args));
    CHECK(r.status == 0);
    return r.out;
  }
  // A shell pipeline; PATRO is the CLI with this worker's broker.
  Run shell(const std::string& script) const {
    return run(dir, {"/bin/sh", "-c",
                     "PATRO='" + program("PATRO_CLI") + " --broker " + front + "'; " + script});
  }
};

Worker& worker() {
  static Worker w;
  return w;
}

}  // namespace

TEST_CASE("--version and --help on every binary") {
  TempDir dir;
  // Not a structured binding: CAPTURE's lambda cannot capture one under clang 14.
  for (const auto& binary :
       std::vector<std::pair<const char*, std::string>>{{"PATRO_CLI", "patro"},
                                                        {"PATRO_BROKER", "patro-broker"},
                                                        {"PATRO_WORKER", "patro-worker"},
                                                        {"PATRO_LOCKS", "patro-locks"},
                                                        {"PATRO_BENCH", "patro-bench"}}) {
    const char* env = binary.first;
    const std::string& name = binary.second;
    CAPTURE(name);
    Run r = run(dir, {program(env), "--version"});
    CHECK(r.status == 0);
    CHECK(r.out.rfind(name + " ", 0) == 0);
    CHECK(r.out.size() > name.size() + 2);
    r = run(dir, {program(env), "--help"});
    CHECK(r.status == 0);
    CHECK(r.out.find("--version") != std::string::npos);
    CHECK(run(dir, {program(env), "--no-such-option"}).status == 2);
  }
}

TEST_CASE("--opt=value on patro-broker and patro-worker; host:port and PATRO_BROKER for patro") {
  TempDir dir;
  const std::string eps = dir.file("broker-endpoints"), conf = dir.file("worker.conf");
  // By hand, not through BrokerProcess: the --opt=value spelling of its options is the subject.
  Process broker({program("PATRO_BROKER"), "--front=tcp://127.0.0.1:*", "--back=tcp://127.0.0.1:*",
                  "--heartbeat-ms=100", "--liveness=5", "--endpoints-file=" + eps});
  REQUIRE(wait_for_file(eps, 20s));
  std::string front, back;
  std::istringstream(read_file(eps)) >> front >> back;
  Process w({program("PATRO_WORKER"), "--broker=" + back, "--threads=1", "--heartbeat-ms=100",
             "--visibility=5000", "--config-out=" + conf, "queue", "work"});
  REQUIRE(wait_for_file(conf, 20s));
  const std::string host_port = front.substr(std::string("tcp://").size());
  Run r = run(dir, {program("PATRO_CLI"), "--broker=" + host_port, "ls"});
  CHECK(r.status == 0);
  CHECK(r.out.find("\nwork\tPatro::Queue\t") != std::string::npos);
  r = run(dir,
          {"/usr/bin/env", "PATRO_BROKER=" + host_port, program("PATRO_CLI"), "push", "work", "x"});
  CHECK(r.status == 0);
  CHECK(r.out == "1\n");
  r = run(dir, {"/usr/bin/env", "PATRO_BROKER=" + front, program("PATRO_CLI"), "--timeout=5s",
                "call", "work", "size"});
  CHECK(r.out == "1\n");
  // Usage errors exit 2 with a message: a bad endpoint, a bad option value.
  CHECK(run(dir, {"/usr/bin/env", "PATRO_BROKER=nowhere", program("PATRO_CLI"), "ls"}).status == 2);
  CHECK(run(dir, {program("PATRO_CLI"), "--broker=" + front, "take", "work", "--wait=-1"}).status ==
        2);
  CHECK(run(dir, {program("PATRO_BROKER"), "--liveness=0"}).status == 2);
  CHECK(run(dir, {program("PATRO_WORKER"), "--threads=many", "queue", "q"}).status == 2);
  CHECK(w.stop() == 0);
  CHECK(broker.stop() == 0);
}

TEST_CASE("the queue flow from a shell: take in one process, ack in another") {
  auto& w = worker();
  CHECK(w.out({"push", "jobs", "resize photo 17"}) == "1\n");
  CHECK(w.out({"take", "jobs"}) == "1\t1\tresize photo 17\n");
  // The take process is gone; its lease is not: the job is neither redelivered nor lost.
  CHECK(w.out({"call", "jobs", "leased"}) == "1\n");
  CHECK(w.cli({"take", "jobs"}).status == 3);
  CHECK(w.cli({"ack", "jobs", "1", "1"}).status == 0);
  {  // tail on an object that is not a log: says what the object is and what it serves
    const std::string err = w.dir.file("tail-hash.err");
    CHECK(run(w.dir, patro::test::redirected(w.argv({"tail", "kv"}), err)).status == 1);
    const std::string text = read_file(err);
    CAPTURE(text);
    CHECK(text.find("the object is a Patro::Hash, which serves the methods ") != std::string::npos);
    CHECK(text.find(" get, ") != std::string::npos);
  }
  {  // settled already: refused, and stderr says why
    const std::string err = w.dir.file("ack-again.err");
    CHECK(run(w.dir, patro::test::redirected(w.argv({"ack", "jobs", "1", "1"}), err)).status == 1);
    CHECK(read_file(err).find("patro: jobs refused to ack job 1 delivery 1: it is not leased under "
                              "that delivery") != std::string::npos);
  }
  CHECK(w.out({"call", "jobs", "leased"}) == "0\n");
  CHECK(w.out({"call", "jobs", "size"}) == "0\n");

  // --lease: a lease of its own, shorter than the queue's; once past, the job comes back.
  CHECK(w.out({"push", "jobs", "short"}) == "2\n");
  CHECK(w.out({"--json", "take", "jobs", "--lease", "300"}) ==
        "{\"id\":2,\"delivery\":2,\"job\":\"short\"}\n");
  Run again;
  for (int i = 0; i < 100; ++i) {  // up to 10 s
    again = w.cli({"take", "jobs", "--wait", "100"});
    if (again.status == 0) break;
  }
  CHECK(again.out == "2\t3\tshort\n");
  CHECK(w.cli({"ack", "jobs", "2", "2"}).status == 1);  // the old delivery is void
  CHECK(w.cli({"ack", "jobs", "2", "3"}).status == 0);

  // A job with a newline, a tab and a backslash stays on its line, escaped.
  CHECK(w.out({"--json-args", "push", "jobs", "\"two\\nlines\\tand \\\\\""}) == "3\n");
  CHECK(w.out({"take", "jobs"}) == "3\t4\ttwo\\nlines\\tand \\\\\n");
  CHECK(w.cli({"ack", "jobs", "3", "4"}).status == 0);
}

TEST_CASE("take --exec: acked when the command exits 0, back in the queue otherwise") {
  auto& w = worker();
  const std::string got = w.dir.file("exec-got");
  CHECK(w.out({"push", "jobs", "payload"}) == "4\n");
  Run r = w.cli({"take", "jobs", "--exec", "sh", "-c",
                 "cat > " + got + "; echo \" $PATRO_JOB_ID $PATRO_JOB_DELIVERY\" >> " + got});
  CHECK(r.status == 0);
  CHECK(read_file(got) == "payload 4 5\n");
  CHECK(w.out({"call", "jobs", "leased"}) == "0\n");
  CHECK(w.out({"call", "jobs", "size"}) == "0\n");

  CHECK(w.out({"push", "jobs", "fails"}) == "5\n");
  r = w.cli({"take", "jobs", "--exec", "--", "sh", "-c", "cat >/dev/null; exit 5"});
  CHECK(r.status == 5);
  CHECK(w.out({"call", "jobs", "leased"}) == "0\n");
  CHECK(w.out({"take", "jobs"}) == "5\t7\tfails\n");  // delivered again
  CHECK(w.cli({"ack", "jobs", "5", "7"}).status == 0);

  // ^C while take --exec waits for a job ends it (128+SIGINT); no job is left leased.
  Process waiting(w.argv({"take", "jobs", "--wait", "30000", "--exec", "true"}));
  std::this_thread::sleep_for(500ms);
  waiting.signal(SIGINT);
  CHECK(waiting.wait(10s) == 128 + SIGINT);
  CHECK(w.out({"call", "jobs", "leased"}) == "0\n");

  CHECK(w.cli({"take", "jobs", "--exec", "true"}).status == 3);  // nothing to take
  CHECK(w.cli({"take", "jobs", "--exec"}).status == 2);          // no command
}

TEST_CASE("--json prints valid JSON for a value that is not UTF-8") {
  auto& w = worker();
  CHECK(w.out({"set", "kv", "bin", std::string("\xff\xfe ok\x80")}).empty());
  Run r = w.cli({"--json", "get", "kv", "bin"});
  CHECK(r.status == 0);
  CHECK(r.out == "{\"$base64\":\"//4gb2uA\"}\n");
  const std::string file = w.dir.file("bin.json");
  { std::ofstream(file) << r.out; }
  CHECK(run(w.dir, {"/usr/bin/python3", "-m", "json.tool", file}).status == 0);
  // The whole hash too (get on a worker's hash prints it as one JSON object).
  r = w.cli({"--json", "get", "kv"});
  { std::ofstream(file) << r.out; }
  CHECK(r.out.find("\"bin\":{\"$base64\":\"//4gb2uA\"}") != std::string::npos);
  CHECK(run(w.dir, {"/usr/bin/python3", "-m", "json.tool", file}).status == 0);
  // Text output gives the bytes as they are.
  CHECK(w.out({"get", "kv", "bin"}) == std::string("\xff\xfe ok\x80\n"));
}

TEST_CASE("typed input: --json-args, -x (a 10 MB value from stdin), @FILE") {
  auto& w = worker();
  CHECK(w.out({"--json-args", "set", "kv", "retries", "\"007\""}).empty());
  CHECK(w.out({"--json", "get", "kv", "retries"}) == "\"007\"\n");
  CHECK(w.out({"set", "kv", "inferred", "007"}).empty());
  CHECK(w.out({"--json", "get", "kv", "inferred"}) == "7\n");
  CHECK(w.out({"--json-args", "set", "kv", "list", "[1,2]"}).empty());
  CHECK(w.out({"--json", "get", "kv", "list"}) == "[1,2]\n");
  CHECK(w.out({"--json-args", "set", "kv", "obj", "{\"a\":[true,null,1.5]}"}).empty());
  CHECK(w.out({"--json", "get", "kv", "obj"}) == "{\"a\":[true,null,1.5]}\n");
  CHECK(w.cli({"--json-args", "set", "kv", "bad", "007"}).status == 2);  // not JSON
  CHECK(w.out({"--json-args", "call", "events", "write_many", "[\"a\",\"b\"]"}) == "2\n");

  Run r = w.shell("head -c 10485760 /dev/zero | tr '\\0' a | $PATRO -x set kv big");
  CHECK(r.status == 0);
  r = w.shell("$PATRO get kv big | wc -c");
  CHECK(r.status == 0);
  CHECK(std::atol(r.out.c_str()) == 10485760 + 1);  // and the newline after it

  const std::string file = w.dir.file("value.txt");
  { std::ofstream(file) << "from a file\n"; }
  CHECK(w.out({"set", "kv", "f", "@" + file}).empty());
  CHECK(w.out({"--json", "get", "kv", "f"}) == "\"from a file\\n\"\n");
  CHECK(w.out({"set", "kv", "at", "@@home"}).empty());
  CHECK(w.out({"get", "kv", "at"}) == "@home\n");
  CHECK(w.cli({"set", "kv", "g", "@" + w.dir.file("missing")}).status == 2);

  // call kv keys prints every key, one per line.
  const std::string keys = w.out({"call", "kv", "keys"});
  for (const char* k : {"retries\n", "inferred\n", "list\n", "big\n", "f\n"})
    CHECK(keys.find(k) != std::string::npos);
}

namespace {

// One broker of a cluster of several: a patro-worker with its own broker on free ports, serving
// one queue.
struct Member {
  std::unique_ptr<Process> proc;
  std::string front, back;

  Member(const TempDir& dir, const std::string& queue) {
    const std::string eps = dir.file(queue + "-endpoints");
    proc = std::make_unique<Process>(std::vector<std::string>{
        program("PATRO_WORKER"), "--front", "tcp://127.0.0.1:*", "--back", "tcp://127.0.0.1:*",
        "--endpoints-file", eps, "--heartbeat-ms", "250", "queue", queue});
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front >> back;
    REQUIRE(registered(front, queue));
  }
  ~Member() { proc->stop(); }

  // Whether the broker at front knows name (asked for up to 5 s).
  static bool registered(const std::string& front, const std::string& name) {
    return patro::test::resolve_when_up(front, name).has_value();
  }
};

// A port on 127.0.0.1 that refuses connections: bound, never listening, held until the end.
using DeadPort = patro::test::LoopbackPort;

// patro with its stderr in its output too.
Run cli_with_stderr(const TempDir& dir, std::vector<std::string> args) {
  std::vector<std::string> a{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", program("PATRO_CLI")};
  a.insert(a.end(), args.begin(), args.end());
  return run(dir, std::move(a));
}

}  // namespace

TEST_CASE("several brokers: ls and stats show each one's view; a dead one is skipped") {
  TempDir dir;
  Member a(dir, "alpha"), b(dir, "beta");
  const std::string both = a.front + "," + b.front;
  const std::string cli = program("PATRO_CLI");
  // A short deadline for the commands that meet a dead broker (each costs it once).
  const std::string short_timeout = "--timeout=1s";

  // Each broker's names under its own header, in the order given.
  Run r = run(dir, {cli, "--broker", both, "ls"});
  CHECK(r.status == 0);
  const size_t at_a = r.out.find("broker " + a.front + "\nSERVER ");
  const size_t at_b = r.out.find("\n\nbroker " + b.front + "\nSERVER ");
  const size_t alpha = r.out.find("\nalpha\tPatro::Queue\t");
  const size_t beta = r.out.find("\nbeta\tPatro::Queue\t");
  CHECK(at_a == 0);
  REQUIRE(at_b != std::string::npos);
  CHECK((alpha > at_a && alpha < at_b));
  CHECK((beta != std::string::npos && beta > at_b));
  CHECK(r.out.rfind("alpha") < at_b);  // alpha only at A
  // The same with --broker given twice, and with HOST:PORT.
  Run twice = run(dir, {cli, "--broker", a.front, "--broker", b.front.substr(6), "ls"});
  CHECK(twice.status == 0);
  CHECK(twice.out.find("broker " + a.front + "\nSERVER ") == 0);
  CHECK(twice.out.find("\n\nbroker " + b.front + "\nSERVER ") != std::string::npos);
  CHECK(twice.out.find("\nbeta\tPatro::Queue\t") != std::string::npos);
  // --json: an array, one object per broker, its endpoint first.
  r = run(dir, {cli, "--json", "--broker", both, "ls"});
  CHECK(r.status == 0);
  CHECK(r.out.rfind("[{\"broker\":\"" + a.front + "\",\"servers\":[{", 0) == 0);
  CHECK(r.out.find("},{\"broker\":\"" + b.front + "\",\"servers\":[{") != std::string::npos);
  CHECK(r.out.find("\"name\":\"beta\",\"type\":\"Patro::Queue\"") != std::string::npos);
  {
    const std::string file = dir.file("ls.json");
    std::ofstream(file) << r.out;
    CHECK(run(dir, {"/usr/bin/python3", "-m", "json.tool", file}).status == 0);
  }

  // Commands use the list from PATRO_BROKER too (the name is at the first broker).
  r = run(dir, {"/usr/bin/env", "PATRO_BROKER=" + a.front.substr(6) + "," + b.front.substr(6), cli,
                "push", "alpha", "x"});
  CHECK(r.status == 0);
  CHECK(r.out == "1\n");
  // A broker that does not answer first: the command moves on to the next.
  {
    DeadPort dead;
    r = run(dir,
            {cli, short_timeout, "--broker", dead.endpoint + "," + a.front, "push", "alpha", "y"});
    CHECK(r.status == 0);
    CHECK(r.out == "2\n");
  }

  // stats samples each broker.
  r = run(dir, {cli, "--broker", both, "stats", "--interval", "100"});
  CHECK(r.status == 0);
  CHECK(r.out.rfind("broker " + a.front + "\nrequests/s ", 0) == 0);
  CHECK(r.out.find("\nalpha\tPatro::Queue\t2\t0\t0\n") != std::string::npos);
  CHECK(r.out.find("\n\nbroker " + b.front + "\nrequests/s ") != std::string::npos);
  CHECK(r.out.find("\nbeta\tPatro::Queue\t0\t0\t0\n") != std::string::npos);
  r = run(dir, {cli, "--json", "--broker", both, "stats", "--interval", "100"});
  CHECK(r.status == 0);
  CHECK(r.out.rfind("[{\"broker\":\"" + a.front + "\",\"requests_per_second\":", 0) == 0);
  CHECK(r.out.find("{\"broker\":\"" + b.front + "\",\"requests_per_second\":") !=
        std::string::npos);

  // A worker given both brokers (--broker twice) parses its objects after them and registers.
  {
    Process gamma({program("PATRO_WORKER"), "--broker", a.back, "--broker", b.back,
                   "--heartbeat-ms", "250", "queue", "gamma"});
    CHECK(Member::registered(a.front, "gamma"));
    CHECK(gamma.stop() == 0);
  }

  // B dies: ls shows it unreachable and A's view, and exits 0.
  b.proc->signal(SIGKILL);
  CHECK(b.proc->wait(10s) == 128 + SIGKILL);
  patro::remove_stale_lock_segments();
  r = run(dir, {cli, short_timeout, "--broker", both, "ls"});
  CHECK(r.status == 0);
  CHECK(r.out.find("\nalpha\tPatro::Queue\t") != std::string::npos);
  CHECK(r.out.find("\n\nbroker " + b.front + ": unreachable (") != std::string::npos);
  r = run(dir, {cli, short_timeout, "--json", "--broker", both, "ls"});
  CHECK(r.status == 0);
  CHECK(r.out.find(",{\"broker\":\"" + b.front + "\",\"error\":\"") != std::string::npos);
  r = run(dir, {cli, short_timeout, "--broker", both, "stats", "--interval", "100"});
  CHECK(r.status == 0);
  CHECK(r.out.find("\n\nbroker " + b.front + ": unreachable (") != std::string::npos);

  // Both dead: every broker said unreachable, a message on stderr, status 1.
  a.proc->signal(SIGKILL);
  CHECK(a.proc->wait(10s) == 128 + SIGKILL);
  patro::remove_stale_lock_segments();
  r = cli_with_stderr(dir, {short_timeout, "--broker", both, "ls"});
  CHECK(r.status == 1);
  CHECK(r.out.find("broker " + a.front + ": unreachable (") != std::string::npos);
  CHECK(r.out.find("broker " + b.front + ": unreachable (") != std::string::npos);
  CHECK(r.out.find("patro: none of the 2 brokers answered\n") != std::string::npos);

  // An empty list is bad usage.
  CHECK(run(dir, {cli, "--broker", ",", "ls"}).status == 2);
  CHECK(run(dir, {"/usr/bin/env", "PATRO_BROKER= , ", cli, "ls"}).status == 2);
}

namespace {

// patro-worker serving one queue "tasks" with --data and --max-deliveries 2, on fixed ports
// across a restart (front/back "*" the first time).
struct DataWorker {
  std::unique_ptr<Process> proc;
  std::string front, back;
  DataWorker(const TempDir& dir, const std::string& data, const std::string& front_ep,
             const std::string& back_ep) {
    const std::string eps = dir.file("data-worker-endpoints");
    std::remove(eps.c_str());
    proc = std::make_unique<Process>(std::vector<std::string>{
        program("PATRO_WORKER"), "--front", front_ep, "--back", back_ep, "--endpoints-file", eps,
        "--heartbeat-ms", "250", "--visibility", "600000", "--max-deliveries", "2", "--data", data,
        "queue", "tasks"});
    REQUIRE(wait_for_file(eps, 20s));
    std::istringstream(read_file(eps)) >> front >> back;
    if (!patro::test::resolve_when_up(front, "tasks"))
      FAIL("the worker did not register its objects");
  }
};

// ID and DELIVERY of a take's "ID<TAB>DELIVERY<TAB>JOB" line.
std::pair<std::string, std::string> id_delivery(const std::string& line) {
  std::istringstream in(line);
  std::string id, delivery;
  in >> id >> delivery;
  return {id, delivery};
}

}  // namespace

TEST_CASE("queue options from the CLI: priority, delay, ttr, touch, bury, buried, kick, stats") {
  TempDir dir;
  const std::string data = dir.file("data");
  auto w = std::make_unique<DataWorker>(dir, data, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
  const std::string front = w->front, back = w->back;
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {program("PATRO_CLI"), "--broker", front});
    return run(dir, args);
  };
  auto stat = [&](const char* key) {
    return patro::get_proxy(front, "tasks").call("stats")[key].as<int64_t>();
  };
  CHECK(cli({"push", "tasks", "low", "--priority", "5"}).out == "1\n");
  CHECK(cli({"push", "tasks", "high", "high2", "--priority", "-1"}).out == "2\n3\n");
  CHECK(cli({"push", "tasks", "short", "--ttr", "0.2", "--priority", "9"}).out == "4\n");
  CHECK(cli({"push", "tasks", "later", "--delay", "1500ms", "--priority", "1"}).out == "5\n");
  const Run s = cli({"stats", "tasks"});
  CAPTURE(s.out);
  CHECK(s.out.find("ready\t4\ndelayed\t1\nleased\t0\nburied\t0\n") == 0);
  CHECK(s.out.find("pushed\t5\nacknowledged\t0\n") != std::string::npos);
  // Bad input: a usage error, nothing pushed.
  CHECK(cli({"push", "tasks", "x", "--delay", "soon"}).status == 2);
  CHECK(cli({"push", "tasks", "x", "--priority", "first"}).status == 2);
  CHECK(cli({"push", "tasks", "x", "--ttr", "-1"}).status == 2);
  CHECK(cli({"kick", "tasks", "0"}).status == 2);
  CHECK(cli({"push", "tasks", "x", "y", "--dedup", "k"}).status == 2);
  CHECK(cli({"touch", "tasks", "1"}).status == 2);
  CHECK(cli({"--json", "stats", "tasks"}).out.find("\"pushed\":5") != std::string::npos);

  const Run t = cli({"take", "tasks"});
  CHECK(t.out.find("\thigh\n") != std::string::npos);  // priority -1, pushed first
  const auto [id, delivery] = id_delivery(t.out);
  CHECK(cli({"touch", "tasks", id, delivery}).status == 0);
  CHECK(cli({"touch", "tasks", id, "999"}).status == 1);
  CHECK(cli({"bury", "tasks", id, delivery}).status == 0);
  CHECK(cli({"bury", "tasks", id, delivery}).status == 1);  // not leased any more
  CHECK(cli({"buried", "tasks"}).out == id + "\thigh\n");

  // kill -9: the buried job, the priorities and the delay survive.
  w->proc->signal(SIGKILL);
  REQUIRE(w->proc->wait(10s).has_value());
  w = std::make_unique<DataWorker>(dir, data, front, back);
  CHECK(cli({"buried", "tasks"}).out == id + "\thigh\n");
  for (int i = 0; i < 1000 && stat("delayed") > 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(stat("ready") == 4);
  CHECK(stat("delayed") == 0);
  std::string order;
  for (int i = 0; i < 4; ++i) {
    const Run r = cli({"pop", "tasks"});
    CHECK(r.status == 0);
    order += r.out;
  }
  CHECK(order == "high2\nlater\nlow\nshort\n");
  CHECK(cli({"pop", "tasks"}).status == 3);
  CHECK(cli({"kick", "tasks", "5"}).out == "1\n");
  CHECK(cli({"kick", "tasks"}).status == 3);
  CHECK(cli({"buried", "tasks"}).status == 3);
  CHECK(cli({"pop", "tasks"}).out == "high\n");
  // --dedup: a second push with a key answers the first's id and pushes nothing.
  const std::string dup = cli({"push", "tasks", "once", "--dedup", "order-1"}).out;
  CHECK(dup == "6\n");
  CHECK(cli({"push", "tasks", "twice", "--dedup", "order-1"}).out == dup);
  CHECK(cli({"pop", "tasks"}).out == "once\n");
  CHECK(cli({"stats", "tasks"}).out.find("pushed\t6\nacknowledged\t6\n") != std::string::npos);
  CHECK(w->proc->stop() == 0);
}
