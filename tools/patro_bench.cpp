// patro-bench: Patro's speed as ratios against a ZeroMQ floor measured in the same run.
//
// The floor is a raw ZeroMQ echo through a forwarding broker process (client DEALER -> broker
// ROUTER front, ROUTER back -> server DEALER and back), written with plain cppzmq and no Patro
// code, with the frames and payload size of a Patro request. Patro runs the same shapes through
// its own broker and server. Both stacks run side by side for the whole run, and each Patro case
// runs right after its floor case, so drift on a shared machine touches both alike.
//
// Every process is this program started again with a role (/proc/self/exe --role ...), so the
// pinning (--pin) applies to each process by its part: clients, brokers, servers.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include <nlohmann/json.hpp>
#include <patro/patro.hpp>

#include "cli/options.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The floor's request body: the size of a Patro get request for p["k"] (a Request table with its
// identifier, ids, timeout, op and a one-key path), and its reply (a Reply with one integer).
constexpr size_t kFloorRequestBytes = 112;
constexpr size_t kFloorReplyBytes = 72;

// ---------------------------------------------------------------------------------------------
// Child processes

struct Child {
  pid_t pid = -1;
  int in = -1;   // we write to its stdin
  int out = -1;  // we read its stdout
  std::string buffer;

  std::optional<std::string> line(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      auto nl = buffer.find('\n');
      if (nl != std::string::npos) {
        std::string l = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        return l;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(out, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      buffer.append(buf, static_cast<size_t>(n));
    }
  }
  void say(const std::string& s) const { (void)!::write(in, s.data(), s.size()); }
  void stop() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
    ::close(in);
    ::close(out);
  }
};

std::vector<int> g_cpus;  // online CPUs we may use

Child spawn(std::vector<std::string> args, int cpu) {
  int to[2], from[2];
  if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe");
  // Everything the child needs is made before fork: it only calls what is safe after a fork in
  // a process with threads, then execs.
  std::string self = "/proc/self/exe";
  std::vector<char*> argv;
  argv.push_back(self.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu >= 0) CPU_SET(cpu, &set);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (cpu >= 0) ::sched_setaffinity(0, sizeof set, &set);
    ::dup2(to[0], 0);
    ::dup2(from[1], 1);
    ::execv(self.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(to[0]);
  ::close(from[1]);
  Child c;
  c.pid = pid;
  c.in = to[1];
  c.out = from[0];
  return c;
}

/// Nanoseconds the process's threads have run (the sum of /proc/PID/task/*/schedstat).
uint64_t cpu_ns(pid_t pid) {
  uint64_t total = 0;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/schedstat");
    uint64_t ns = 0;
    if (f >> ns) total += ns;
  }
  ::closedir(d);
  return total;
}

// ---------------------------------------------------------------------------------------------
// Measurements

struct Run {
  uint64_t count = 0;
  double seconds = 0;
  double p50_us = 0, p99_us = 0;
  double per_s() const { return seconds > 0 ? count / seconds : 0; }
};

std::string run_line(const Run& r) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%" PRIu64 " %.6f %.3f %.3f\n", r.count, r.seconds, r.p50_us,
                r.p99_us);
  return buf;
}
Run parse_run(const std::string& l) {
  Run r;
  std::istringstream in(l);
  in >> r.count >> r.seconds >> r.p50_us >> r.p99_us;
  return r;
}

/// Latencies gathered over several chunks of one case.
struct Latencies {
  std::vector<uint32_t> ns;
  uint64_t count = 0;
  double seconds = 0;
  Run merged() {
    Run r;
    r.count = count;
    r.seconds = seconds;
    if (!ns.empty()) {
      std::sort(ns.begin(), ns.end());
      r.p50_us = ns[ns.size() / 2] / 1000.0;
      r.p99_us = ns[std::min(ns.size() - 1, ns.size() * 99 / 100)] / 1000.0;
    }
    return r;
  }
};

/// Sequential round trips: up to count, or until time is up; each one's latency goes to lat.
Run sequential(const std::function<void(uint64_t)>& once, uint64_t count,
               std::chrono::milliseconds time, Latencies& lat) {
  const auto start = Clock::now();
  const auto end = start + time;
  auto t = start;
  uint64_t i = 0;
  for (; i < count && t < end; ++i) {
    once(lat.count + i);
    const auto now = Clock::now();
    lat.ns.push_back(static_cast<uint32_t>(std::min<int64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - t).count(), UINT32_MAX)));
    t = now;
  }
  Run r;
  r.count = i;
  r.seconds = std::chrono::duration<double>(t - start).count();
  lat.count += r.count;
  lat.seconds += r.seconds;
  return r;
}

/// A throughput loop: step() does some work and returns how many units it finished.
Run throughput(const std::function<uint64_t()>& step, uint64_t count,
               std::chrono::milliseconds time) {
  const auto start = Clock::now();
  const auto end = start + time;
  uint64_t done = 0;
  while (done < count && Clock::now() < end) done += step();
  Run r;
  r.count = done;
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

// ---------------------------------------------------------------------------------------------
// The floor: plain cppzmq

zmq::message_t bytes(size_t n, char fill) {
  zmq::message_t m(n);
  std::memset(m.data(), fill, n);
  return m;
}

int role_floor_broker() {
  zmq::context_t ctx(1);
  zmq::socket_t front(ctx, zmq::socket_type::router), back(ctx, zmq::socket_type::router);
  for (auto* s : {&front, &back}) {
    s->set(zmq::sockopt::router_mandatory, 1);
    s->set(zmq::sockopt::sndhwm, 100000);
    s->set(zmq::sockopt::rcvhwm, 100000);
    s->set(zmq::sockopt::linger, 0);
  }
  front.bind("tcp://127.0.0.1:*");
  back.bind("tcp://127.0.0.1:*");
  std::printf("%s %s\n", front.get(zmq::sockopt::last_endpoint).c_str(),
              back.get(zmq::sockopt::last_endpoint).c_str());
  std::fflush(stdout);
  std::vector<std::string> lanes;
  zmq::pollitem_t items[] = {{front.handle(), 0, ZMQ_POLLIN, 0}, {back.handle(), 0, ZMQ_POLLIN, 0}};
  std::vector<zmq::message_t> m;
  auto recv_all = [&](zmq::socket_t& s) {
    m.clear();
    for (;;) {
      zmq::message_t f;
      if (!s.recv(f, m.empty() ? zmq::recv_flags::dontwait : zmq::recv_flags::none)) return false;
      const bool more = f.more();
      m.push_back(std::move(f));
      if (!more) return true;
    }
  };
  auto send_all = [](zmq::socket_t& s, std::vector<zmq::message_t>& fs) {
    for (size_t i = 0; i < fs.size(); ++i)
      (void)s.send(fs[i], i + 1 < fs.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  };
  std::vector<zmq::message_t> out;
  for (;;) {
    zmq::poll(items, 2, std::chrono::milliseconds(-1));
    for (int i = 0; i < 256 && recv_all(back); ++i) {
      if (m.size() == 2) {  // [lane][ready]
        lanes.emplace_back(m[0].to_string_view());
        continue;
      }
      if (m.size() != 5) continue;  // [lane][hdr][client][rid][body]
      out.clear();
      out.push_back(std::move(m[2]));
      out.push_back(std::move(m[1]));
      out.push_back(std::move(m[3]));
      out.push_back(std::move(m[4]));
      send_all(front, out);
    }
    for (int i = 0; i < 256 && recv_all(front); ++i) {
      if (m.size() != 5 || lanes.empty()) continue;  // [client][hdr][oid][rid][body]
      const std::string client(m[0].to_string_view());
      const std::string& lane = lanes[std::hash<std::string>{}(client) % lanes.size()];
      out.clear();
      out.push_back(zmq::message_t(lane.data(), lane.size()));
      out.push_back(std::move(m[1]));
      out.push_back(std::move(m[0]));
      out.push_back(std::move(m[2]));
      out.push_back(std::move(m[3]));
      out.push_back(std::move(m[4]));
      send_all(back, out);
    }
  }
}

int role_floor_server(const std::string& back, int threads) {
  zmq::context_t ctx(1);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      zmq::socket_t s(ctx, zmq::socket_type::dealer);
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::sndhwm, 100000);
      s.set(zmq::sockopt::rcvhwm, 100000);
      s.connect(back);
      (void)s.send(zmq::str_buffer("READY"), zmq::send_flags::none);
      std::vector<zmq::message_t> m;
      for (;;) {
        m.clear();
        for (;;) {
          zmq::message_t f;
          (void)s.recv(f);
          const bool more = f.more();
          m.push_back(std::move(f));
          if (!more) break;
        }
        if (m.size() != 5) continue;  // [hdr][client][oid][rid][body]
        zmq::message_t reply = bytes(kFloorReplyBytes, 'r');
        (void)s.send(m[0], zmq::send_flags::sndmore);
        (void)s.send(m[1], zmq::send_flags::sndmore);
        (void)s.send(m[3], zmq::send_flags::sndmore);
        (void)s.send(reply, zmq::send_flags::none);
      }
    });
  }
  std::printf("ready\n");
  std::fflush(stdout);
  for (auto& t : ts) t.join();
  return 0;
}

struct FloorClient {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  uint64_t next = 1;
  explicit FloorClient(const std::string& front) {
    s.set(zmq::sockopt::linger, 0);
    s.connect(front);
  }
  void send() {
    const uint8_t hdr[4] = {'P', 'T', 1, 3};
    uint8_t oid[16] = {};
    uint64_t rid = next++;
    (void)s.send(zmq::buffer(hdr, 4), zmq::send_flags::sndmore);
    (void)s.send(zmq::buffer(oid, 16), zmq::send_flags::sndmore);
    (void)s.send(zmq::buffer(&rid, 8), zmq::send_flags::sndmore);
    zmq::message_t body = bytes(kFloorRequestBytes, 'q');
    (void)s.send(body, zmq::send_flags::none);
  }
  void recv() {
    zmq::message_t f;
    do {
      (void)s.recv(f);
    } while (f.more());
  }
};

// ---------------------------------------------------------------------------------------------
// Patro's side: the served objects

struct BenchObject {
  int64_t echo(int64_t v) { return v; }
};

struct JobQueue {
  std::mutex mu;
  std::deque<int64_t> jobs;
};

/// A small log writer: whole lines appended to one file through a buffer that is written out
/// when it passes 64 KiB and on flush.
struct LogWriter {
  std::mutex mu;
  int fd = -1;
  std::string buf;
  uint64_t lines = 0;
  void write_out() {
    size_t off = 0;
    while (off < buf.size()) {
      const ssize_t w = ::write(fd, buf.data() + off, buf.size() - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    buf.clear();
  }
};

void register_classes() {
  patro::Class<BenchObject>("BenchObject").method("echo", &BenchObject::echo);
  patro::Class<JobQueue>("BenchJobQueue")
      .method("push_many",
              [](JobQueue& q, int64_t first, int64_t n) {
                std::lock_guard<std::mutex> lock(q.mu);
                for (int64_t i = 0; i < n; ++i) q.jobs.push_back(first + i);
                return static_cast<int64_t>(q.jobs.size());
              })
      .method("take",
              [](JobQueue& q) -> patro::Value {
                std::lock_guard<std::mutex> lock(q.mu);
                if (q.jobs.empty()) return patro::Value();
                const int64_t j = q.jobs.front();
                q.jobs.pop_front();
                return j;
              })
      .method("take_batch", [](JobQueue& q, int64_t n) -> patro::Value {
        std::lock_guard<std::mutex> lock(q.mu);
        patro::ValueArray out;
        while (n-- > 0 && !q.jobs.empty()) {
          out.emplace_back(q.jobs.front());
          q.jobs.pop_front();
        }
        return patro::Value(std::move(out));
      });
  patro::Class<LogWriter>("BenchLogWriter")
      .method("line",
              [](LogWriter& w, const std::string& line) {
                std::lock_guard<std::mutex> lock(w.mu);
                w.buf += line;
                ++w.lines;
                if (w.buf.size() >= (64u << 10)) w.write_out();
              })
      .method("flush", [](LogWriter& w) {
        std::lock_guard<std::mutex> lock(w.mu);
        w.write_out();
        return static_cast<int64_t>(w.lines);
      });
}

// With curve, a fresh key pair and CURVE on both ports (no allow list: the handshake's ZAP
// check costs once per connection, the encryption every message); its public key is printed
// after the endpoints.
int role_patro_broker(bool curve) {
  patro::TerminationSignals signals;
  patro::BrokerOptions o;
  o.frontend = "tcp://127.0.0.1:*";
  o.backend = "tcp://127.0.0.1:*";
  if (curve) o.curve = patro::curve_keypair();
  patro::Broker broker(o);
  std::printf("%s %s %s\n", broker.frontend_endpoint().c_str(), broker.backend_endpoint().c_str(),
              broker.public_key().c_str());
  std::fflush(stdout);
  std::thread waiter([&] {
    signals.wait();
    broker.stop();
  });
  broker.run();
  waiter.join();
  return 0;
}

int role_patro_server(const std::string& back, const std::string& dir, int threads,
                      const std::string& broker_key) {
  patro::TerminationSignals signals;
  register_classes();
  patro::ServerOptions o;
  o.broker = back;
  o.curve.broker_key = broker_key;  // the config it writes carries it to the clients
  o.threads = static_cast<unsigned>(threads);
  auto log = std::make_shared<LogWriter>();
  log->fd = ::open((dir + "/lines.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  auto fh = patro::FileHandle::open(dir + "/print.log", ">>");
  {
    auto cfg = patro::patronize(o, patro::Hash{{"k", 1}}, std::make_shared<BenchObject>(),
                                std::make_shared<JobQueue>(), log, fh);
    cfg.to_file(dir + "/patro.conf");
    std::printf("ready\n");
    std::fflush(stdout);
    signals.wait();
  }
  ::close(log->fd);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Client roles: connect and warm up, say "ready", then for each 'g' on stdin run one chunk of the
// case and print its Run line; on 'e' print the Run of every chunk together and exit. Chunks of a
// floor case and of its Patro cases alternate, so both see the same machine.

struct Params {
  uint64_t count = 20000;  // per chunk
  std::chrono::milliseconds time{2000};
};

template <class Chunk>
int chunk_loop(Chunk chunk, Latencies& lat) {
  std::printf("ready\n");
  std::fflush(stdout);
  Run total;
  char c;
  while (::read(0, &c, 1) == 1) {
    if (c == 'e') break;
    const Run r = chunk();
    total.count += r.count;
    total.seconds += r.seconds;
    std::fputs(run_line(r).c_str(), stdout);
    std::fflush(stdout);
  }
  if (!lat.ns.empty()) total = lat.merged();
  std::fputs(run_line(total).c_str(), stdout);
  std::fflush(stdout);
  return 0;
}

int role_floor_client(const std::string& front, const std::string& mode, int window,
                      const Params& prm) {
  FloorClient c(front);
  for (int i = 0; i < 200; ++i) {  // connect and warm up
    c.send();
    c.recv();
  }
  Latencies lat;
  return chunk_loop(
      [&]() -> Run {
        if (mode == "seq") {
          return sequential(
              [&](uint64_t) {
                c.send();
                c.recv();
              },
              prm.count, prm.time, lat);
        }
        for (int i = 0; i < window; ++i) c.send();  // pipelined: window requests in flight
        Run r = throughput(
            [&]() -> uint64_t {
              c.recv();
              c.send();
              return 1;
            },
            prm.count, prm.time);
        for (int i = 0; i < window; ++i) c.recv();
        return r;
      },
      lat);
}

int role_patro_client(const std::string& conf, const std::string& mode, int window, int64_t arg,
                      const Params& prm) {
  auto ps = patro::get_proxies(conf);
  patro::Proxy h = ps.at(0), obj = ps.at(1), jobs = ps.at(2), log = ps.at(3), fh = ps.at(4);
  auto k = h["k"];
  for (int i = 0; i < 200; ++i) {  // warm up
    (void)k.get();
    (void)obj.call("echo", 1);
  }
  if (mode == "lock") {
    for (int i = 0; i < 50; ++i) {
      patro::lock(h);
      patro::unlock(h);
    }
  }
  Latencies lat;
  const std::string line = "a log line of about sixty bytes from a bench client, number ";
  uint64_t n = 0;
  return chunk_loop(
      [&]() -> Run {
        if (mode == "get")
          return sequential([&](uint64_t) { (void)k.get(); }, prm.count, prm.time, lat);
        if (mode == "set")
          return sequential([&](uint64_t i) { k = static_cast<int64_t>(i); }, prm.count, prm.time,
                            lat);
        if (mode == "call")
          return sequential([&](uint64_t i) { (void)obj.call("echo", static_cast<int64_t>(i)); },
                            prm.count, prm.time, lat);
        if (mode == "lock")
          return sequential(
              [&](uint64_t) {
                patro::lock(h);
                patro::unlock(h);
              },
              prm.count, prm.time, lat);
        if (mode == "async") {
          std::deque<patro::Future<patro::Value>> inflight;
          for (int i = 0; i < window; ++i) inflight.push_back(k.async_get());
          Run r = throughput(
              [&]() -> uint64_t {
                inflight.front().get();
                inflight.pop_front();
                inflight.push_back(k.async_get());
                return 1;
              },
              prm.count, prm.time);
          for (auto& f : inflight) f.get();
          return r;
        }
        if (mode == "take") {
          uint64_t got = 0;
          Run r = throughput(
              [&]() -> uint64_t {
                if (jobs.call("take").is_null()) return prm.count;  // empty: done
                ++got;
                return 1;
              },
              prm.count, prm.time);
          r.count = got;
          return r;
        }
        if (mode == "take_batch") {
          uint64_t got = 0;
          Run r = throughput(
              [&]() -> uint64_t {
                const auto m = jobs.call("take_batch", arg).size();
                got += m;
                return m == 0 ? prm.count : m;
              },
              prm.count, prm.time);
          r.count = got;
          return r;
        }
        // Log lines: 64 per step; the oneway ones count once the server acknowledged them all.
        const auto start = Clock::now();
        Run r = throughput(
            [&]() -> uint64_t {
              for (int i = 0; i < 64; ++i) {
                std::string l = line + std::to_string(n++) + "\n";
                if (mode == "lines")
                  log.call("line", std::move(l));
                else if (mode == "lines_oneway")
                  log.send("line", std::move(l));
                else
                  fh.print_async(std::move(l));
              }
              return 64;
            },
            prm.count, prm.time);
        if (patro::await_oneway(log) != 0) std::fprintf(stderr, "oneway lines failed\n");
        r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
        return r;
      },
      lat);
}

// ---------------------------------------------------------------------------------------------
// The orchestrator

struct Case {
  std::string name;
  std::optional<double> p50, p99, per_s, floor_p50, floor_per_s, ratio;
  std::string note;
};

std::string num(const std::optional<double>& v, int prec = 2) {
  if (!v) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, *v);
  return buf;
}

struct Bench {
  std::string pin = "cross";
  bool dma = false;
  bool quick = false;
  bool json = false;
  int threads = 4;
  std::string only = "seq,pipe,multi,jobs,lines";
  bool want(const std::string& c) const {
    return ("," + only + ",").find("," + c + ",") != std::string::npos;
  }
  std::string dir;
  Child floor_broker, floor_server, patro_broker, patro_server, curve_broker, curve_server;
  std::string floor_front, patro_conf, curve_conf;
  std::vector<Case> cases;

  int client_cpu() const {
    if (pin == "none" || g_cpus.empty()) return -1;
    return g_cpus.front();
  }
  int service_cpu() const {
    if (pin == "none" || g_cpus.empty()) return -1;
    if (pin == "same") return g_cpus.front();
    return g_cpus.size() > 1 ? g_cpus[1] : g_cpus.front();
  }
  Params params(uint64_t count, std::chrono::milliseconds time) const {
    Params p;
    p.count = quick ? std::min<uint64_t>(count, 300) : count;
    p.time = quick ? std::min(time, std::chrono::milliseconds(150)) : time;
    return p;
  }
  static std::vector<std::string> param_args(const Params& p) {
    return {std::to_string(p.count), std::to_string(p.time.count())};
  }

  struct Group {
    std::vector<Child> procs;
    double per_s_sum = 0;  // the sum over chunks of the chunk's rate times its time
    double seconds = 0;
    Run last;
  };
  Group spawn_group(int n, std::vector<std::string> args) {
    Group g;
    for (int i = 0; i < n; ++i) g.procs.push_back(spawn(args, client_cpu()));
    for (auto& c : g.procs)
      if (c.line(30s) != "ready") throw std::runtime_error("a client did not start: " + args[3]);
    return g;
  }
  Group floor_group(int n, const std::string& mode, int window, const Params& p) {
    std::vector<std::string> a{"--role", "floor-client", floor_front, mode, std::to_string(window)};
    for (auto& x : param_args(p)) a.push_back(x);
    return spawn_group(n, a);
  }
  Group patro_group(int n, const std::string& mode, int window, int64_t arg, const Params& p,
                    const std::string& conf = {}) {
    std::vector<std::string> a{"--role", "patro-client",         conf.empty() ? patro_conf : conf,
                               mode,     std::to_string(window), std::to_string(arg)};
    for (auto& x : param_args(p)) a.push_back(x);
    return spawn_group(n, a);
  }
  /// One chunk on every process of the group at once: their summed count over the longest time.
  void chunk(Group& g) {
    for (auto& c : g.procs) c.say("g");
    uint64_t total = 0;
    double longest = 0;
    for (auto& c : g.procs) {
      auto l = c.line(180s);
      if (!l) throw std::runtime_error("a client did not finish a chunk");
      const Run r = parse_run(*l);
      total += r.count;
      longest = std::max(longest, r.seconds);
    }
    g.per_s_sum += total;
    g.seconds += longest;
  }
  /// Ends the group: its rate over every chunk, and the first process's merged Run.
  std::pair<Run, double> end(Group& g) {
    Run first;
    bool have = false;
    for (auto& c : g.procs) {
      c.say("e");
      auto l = c.line(30s);
      if (l && !have) {
        first = parse_run(*l);
        have = true;
      }
    }
    for (auto& c : g.procs) c.stop();
    return {first, g.seconds > 0 ? g.per_s_sum / g.seconds : 0};
  }

  void start() {
    char tmpl[] = "/tmp/patro-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
    dir = tmpl;
    floor_broker = spawn({"--role", "floor-broker"}, service_cpu());
    auto eps = floor_broker.line(10s);
    if (!eps) throw std::runtime_error("the floor broker did not start");
    std::istringstream in(*eps);
    std::string back;
    in >> floor_front >> back;
    floor_server = spawn({"--role", "floor-server", back, std::to_string(threads)}, service_cpu());
    if (floor_server.line(10s) != "ready")
      throw std::runtime_error("the floor server did not start");
    patro_broker = spawn({"--role", "patro-broker"}, service_cpu());
    eps = patro_broker.line(10s);
    if (!eps) throw std::runtime_error("the Patro broker did not start");
    std::istringstream pin_(*eps);
    std::string pfront, pback;
    pin_ >> pfront >> pback;
    patro_server =
        spawn({"--role", "patro-server", pback, dir, std::to_string(threads)}, service_cpu());
    if (patro_server.line(20s) != "ready")
      throw std::runtime_error("the Patro server did not start");
    patro_conf = dir + "/patro.conf";
    if (want("curve")) {
      // The same broker and server with CURVE, beside the plaintext ones.
      curve_broker = spawn({"--role", "patro-broker", "curve"}, service_cpu());
      eps = curve_broker.line(10s);
      if (!eps) throw std::runtime_error("the CURVE broker did not start");
      std::istringstream cin_(*eps);
      std::string cfront, cback, ckey;
      cin_ >> cfront >> cback >> ckey;
      const std::string cdir = dir + "/curve";
      if (::mkdir(cdir.c_str(), 0700) != 0) throw std::runtime_error("mkdir " + cdir);
      curve_server = spawn({"--role", "patro-server", cback, cdir, std::to_string(threads), ckey},
                           service_cpu());
      if (curve_server.line(20s) != "ready")
        throw std::runtime_error("the CURVE server did not start");
      curve_conf = cdir + "/patro.conf";
    }
    std::this_thread::sleep_for(200ms);  // the floor server's lanes say READY
  }

  void finish() {
    curve_server.stop();
    curve_broker.stop();
    patro_server.stop();
    patro_broker.stop();
    floor_server.stop();
    floor_broker.stop();
    if (!dir.empty()) {
      for (const char* f : {"/curve/patro.conf", "/curve/lines.log", "/curve/print.log"})
        std::remove((dir + f).c_str());
      ::rmdir((dir + "/curve").c_str());
      std::remove((dir + "/patro.conf").c_str());
      std::remove((dir + "/lines.log").c_str());
      std::remove((dir + "/print.log").c_str());
      ::rmdir(dir.c_str());
    }
  }

  void run() {
    const int rounds = quick ? 2 : 4;
    // One client, sequential, in rounds: floor, get, set, call, lock+unlock. The brokers' and
    // servers' CPU per request come from the floor and get chunks.
    const Params seq = params(5000, 600ms);
    if (want("seq")) {
      Group fseq_g = floor_group(1, "seq", 1, seq);
      const std::vector<std::string> modes{"get", "set", "call", "lock"};
      std::vector<Group> pseq_g;
      for (const auto& m : modes) pseq_g.push_back(patro_group(1, m, 1, 0, seq));
      uint64_t fb = 0, fs = 0, pb = 0, ps = 0;
      for (int r = 0; r < rounds; ++r) {
        uint64_t b0 = cpu_ns(floor_broker.pid), s0 = cpu_ns(floor_server.pid);
        chunk(fseq_g);
        fb += cpu_ns(floor_broker.pid) - b0;
        fs += cpu_ns(floor_server.pid) - s0;
        for (size_t i = 0; i < modes.size(); ++i) {
          b0 = cpu_ns(patro_broker.pid);
          s0 = cpu_ns(patro_server.pid);
          chunk(pseq_g[i]);
          if (i == 0) {
            pb += cpu_ns(patro_broker.pid) - b0;
            ps += cpu_ns(patro_server.pid) - s0;
          }
        }
      }
      auto [fseq, fseq_rate] = end(fseq_g);
      cases.push_back({"floor: raw ZeroMQ echo via broker, 1 client", fseq.p50_us, fseq.p99_us,
                       fseq_rate, fseq.p50_us, fseq_rate, 1.0,
                       std::to_string(kFloorRequestBytes) + " B request, " +
                           std::to_string(kFloorReplyBytes) + " B reply"});
      for (size_t i = 0; i < modes.size(); ++i) {
        auto [r, rate] = end(pseq_g[i]);
        const std::string name =
            modes[i] == "lock" ? "lock+unlock pair, 1 client" : modes[i] + ", 1 client";
        cases.push_back({name, r.p50_us, r.p99_us, rate, fseq.p50_us, fseq_rate,
                         r.p50_us / fseq.p50_us, "p99 ratio " + num(r.p99_us / fseq.p99_us)});
        if (i == 0) {
          const double n = static_cast<double>(std::max<uint64_t>(r.count, 1));
          const double fn = static_cast<double>(std::max<uint64_t>(fseq.count, 1));
          cases.push_back({"broker CPU us per request (get)", pb / 1000.0 / n, std::nullopt,
                           std::nullopt, fb / 1000.0 / fn, std::nullopt, (pb / n) / (fb / fn),
                           "CPU time, not latency"});
          cases.push_back({"server CPU us per request (get)", ps / 1000.0 / n, std::nullopt,
                           std::nullopt, fs / 1000.0 / fn, std::nullopt, (ps / n) / (fs / fn),
                           "CPU time, not latency"});
        }
      }
    }
    // CURVE against plaintext: the same get, sequential and 64 in flight, chunks alternating.
    if (want("curve")) {
      Group plain = patro_group(1, "get", 1, 0, seq),
            curve = patro_group(1, "get", 1, 0, seq, curve_conf);
      for (int r = 0; r < rounds; ++r) {
        chunk(plain);
        chunk(curve);
      }
      auto [pr, prate] = end(plain);
      auto [cr, crate] = end(curve);
      cases.push_back({"CURVE get, 1 client (floor: plaintext get)", cr.p50_us, cr.p99_us, crate,
                       pr.p50_us, prate, cr.p50_us / pr.p50_us,
                       "p50 ratio; p99 ratio " + num(cr.p99_us / pr.p99_us)});
      const Params cpipe = params(100000, 400ms);
      Group pp = patro_group(1, "async", 64, 0, cpipe),
            cp = patro_group(1, "async", 64, 0, cpipe, curve_conf);
      for (int r = 0; r < rounds; ++r) {
        chunk(pp);
        chunk(cp);
      }
      const double pprate = end(pp).second, cprate = end(cp).second;
      cases.push_back({"CURVE async get, 64 in flight (floor: plaintext)", std::nullopt,
                       std::nullopt, cprate, std::nullopt, pprate, cprate / pprate, "calls/s"});
    }
    // Pipelined, one client, in rounds.
    const Params pipe = params(100000, 400ms);
    for (int w : {1, 8, 64}) {
      if (!want("pipe")) break;
      Group f = floor_group(1, "pipe", w, pipe), p = patro_group(1, "async", w, 0, pipe);
      for (int r = 0; r < rounds; ++r) {
        chunk(f);
        chunk(p);
      }
      const double frate = end(f).second, prate = end(p).second;
      cases.push_back({"async get, " + std::to_string(w) + " in flight", std::nullopt, std::nullopt,
                       prate, std::nullopt, frate, prate / frate, "calls/s"});
    }
    // Client processes, synchronous get, in rounds.
    const Params multi = params(50000, 500ms);
    double floor4 = 0;
    for (int n : {1, 2, 4}) {
      if (!want("multi") && n != 4) continue;
      Group f = floor_group(n, "seq", 1, multi), p = patro_group(n, "get", 1, 0, multi);
      for (int r = 0; r < rounds; ++r) {
        chunk(f);
        chunk(p);
      }
      const double frate = end(f).second, prate = end(p).second;
      if (n == 4) floor4 = frate;
      cases.push_back({std::to_string(n) + " client processes, sync get", std::nullopt,
                       std::nullopt, prate, std::nullopt, frate, prate / frate, "calls/s"});
    }
    // The job queue, 4 consumers: one job per request, and batches of 100 (one chunk each, from
    // a queue filled beforehand).
    const uint64_t jobs = quick ? 2000 : 400000;
    for (const std::string mode : {"take", "take_batch"}) {
      if (!want("jobs")) break;
      Group p = patro_group(4, mode, 1, 100, params(jobs, 3000ms));
      {
        auto proxies = patro::get_proxies(patro_conf);
        proxies.at(2).call("push_many", 0, static_cast<int64_t>(jobs));
      }
      chunk(p);
      const double prate = end(p).second;
      cases.push_back(
          {"job queue, 4 consumers, " +
               std::string(mode == "take" ? "one job per request" : "batched take (100)"),
           std::nullopt, std::nullopt, prate, std::nullopt, floor4, prate / floor4,
           "jobs/s; ratio to the floor's 4-client rate"});
      auto proxies = patro::get_proxies(patro_conf);  // drain what is left
      while (proxies.at(2).call("take_batch", 10000).size() > 0) {
      }
    }
    // Log lines from 4 clients into one file.
    const uint64_t lines = quick ? 2000 : 2000000;
    for (const std::string mode : {"lines", "lines_oneway", "print_oneway"}) {
      if (!want("lines")) break;
      Group p = patro_group(4, mode, 1, 0, params(mode == "lines" ? lines / 20 : lines, 2000ms));
      chunk(p);
      const double prate = end(p).second;
      const std::string name = mode == "lines"          ? "log lines, 4 clients, synchronous"
                               : mode == "lines_oneway" ? "log lines, 4 clients, oneway batched"
                                                        : "FileHandle print_async, 4 clients";
      cases.push_back({name, std::nullopt, std::nullopt, prate, std::nullopt, floor4,
                       prate / floor4, "lines/s; ratio to the floor's 4-client rate"});
    }
    auto proxies = patro::get_proxies(patro_conf);
    proxies.at(3).call("flush");
  }

  void report(const std::string& machine) const {
    FILE* table = json ? stderr : stdout;
    std::fprintf(table, "%-52s %9s %9s %12s %9s %12s %7s\n", "case", "p50_us", "p99_us", "per_s",
                 "floor_p50", "floor_per_s", "ratio");
    for (const Case& c : cases)
      std::fprintf(table, "%-52s %9s %9s %12s %9s %12s %7s  %s\n", c.name.c_str(),
                   num(c.p50).c_str(), num(c.p99).c_str(), num(c.per_s, 0).c_str(),
                   num(c.floor_p50).c_str(), num(c.floor_per_s, 0).c_str(), num(c.ratio).c_str(),
                   c.note.c_str());
    if (!json) return;
    auto number = [](const std::optional<double>& v) {
      return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json(nullptr);
    };
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const Case& c : cases)
      list.push_back({{"name", c.name},
                      {"p50_us", number(c.p50)},
                      {"p99_us", number(c.p99)},
                      {"per_s", number(c.per_s)},
                      {"floor_p50_us", number(c.floor_p50)},
                      {"floor_per_s", number(c.floor_per_s)},
                      {"ratio", number(c.ratio)}});
    const nlohmann::ordered_json out = {{"machine", machine},
                                        {"pin", pin},
                                        {"dma_latency", dma},
                                        {"threads", threads},
                                        {"cases", list}};
    std::printf("%s\n",
                out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  }
};

std::string machine_description() {
  utsname u{};
  ::uname(&u);
  std::string model;
  std::ifstream cpu("/proc/cpuinfo");
  std::string l;
  while (std::getline(cpu, l))
    if (l.rfind("model name", 0) == 0) {
      model = l.substr(l.find(':') + 2);
      break;
    }
  return std::string(u.machine) + ", " + std::to_string(std::thread::hardware_concurrency()) +
         " CPUs, " + model + ", Linux " + u.release;
}

int usage() {
  std::fprintf(stderr, "patro-bench: bad internal role (see patro-bench --help)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() >= 2 && args[0] == "--role") {
      const std::string& role = args[1];
      auto at = [&](size_t i) { return i < args.size() ? args[i] : std::string(); };
      auto prm = [&](size_t i) {
        Params p;
        p.count = std::stoull(at(i));
        p.time = std::chrono::milliseconds(std::stoll(at(i + 1)));
        return p;
      };
      if (role == "floor-broker") return role_floor_broker();
      if (role == "floor-server") return role_floor_server(at(2), std::stoi(at(3)));
      if (role == "patro-broker") return role_patro_broker(at(2) == "curve");
      if (role == "patro-server") return role_patro_server(at(2), at(3), std::stoi(at(4)), at(5));
      if (role == "floor-client") return role_floor_client(at(2), at(3), std::stoi(at(4)), prm(5));
      if (role == "patro-client") {
        return role_patro_client(at(2), at(3), std::stoi(at(4)), std::stoll(at(5)), prm(6));
      }
      return usage();
    }
    Bench b;
    CLI::App app("Patro against a raw ZeroMQ floor in one run (docs/BENCHMARKS.md).",
                 "patro-bench");
    patro::cli::setup(app);
    app.footer("Exit status: 0, 1 if a case failed, 2 on bad options.");
    std::string dma = "off";
    app.add_flag("--json", b.json, "print one JSON object on stdout (the table goes to stderr)");
    app.add_flag("--quick", b.quick, "tiny counts: a smoke run");
    app.add_option("--pin", b.pin,
                   "clients on one CPU and brokers and servers on the same (same) or another "
                   "(cross) CPU, or no pinning (none)")
        ->check(CLI::IsMember({"same", "cross", "none"}))
        ->capture_default_str();
    app.add_option("--dma-latency", dma, "on: hold /dev/cpu_dma_latency at 0 while running")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    app.add_option("--threads", b.threads, "server threads (lanes) of both servers")
        ->check(CLI::Range(1, 1024))
        ->capture_default_str();
    app.add_option("--cases", b.only,
                   "which groups of cases to run (also: curve, CURVE against plaintext)")
        ->capture_default_str();
    bool curve = false;
    app.add_flag("--curve", curve,
                 "also run CURVE against plaintext (get p50, 64 in flight) in the same run");
    if (auto status = patro::cli::parse(app, args)) return *status;
    if (curve && !b.want("curve")) b.only += ",curve";
    b.dma = dma == "on";
    cpu_set_t set;
    CPU_ZERO(&set);
    sched_getaffinity(0, sizeof set, &set);
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) g_cpus.push_back(c);
    int dma_fd = -1;
    if (b.dma) {
      // Held at 0 for the whole run: the CPUs do not go into deep idle states between messages.
      dma_fd = ::open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);
      const int32_t zero = 0;
      if (dma_fd < 0 || ::write(dma_fd, &zero, sizeof zero) != sizeof zero) {
        std::fprintf(stderr, "patro-bench: cannot hold /dev/cpu_dma_latency at 0: %s\n",
                     std::strerror(errno));
        return 1;
      }
    }
    ::signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    try {
      b.start();
      b.run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "patro-bench: %s\n", e.what());
      rc = 1;
    }
    b.finish();
    if (rc == 0) b.report(machine_description());
    if (dma_fd >= 0) ::close(dma_fd);
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "patro-bench: %s\n", e.what());
    return 1;
  }
}
