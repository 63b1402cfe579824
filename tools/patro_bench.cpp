// patro-bench: Patro's speed as ratios against a ZeroMQ floor measured in the same run.
//
// The floor is a raw ZeroMQ echo through a forwarding broker process (client DEALER -> broker
// ROUTER front, ROUTER back -> server DEALER and back), written with plain cppzmq and no Patro
// code, with the frames and payload size of a Patro request. Patro runs the same shapes through
// its own broker and server. Both stacks run side by side for the whole run, and each Patro case
// runs right after its floor case, so drift on a shared machine touches both alike.
//
// Beside them, where it was built, a ZeroC Ice server and its clients run the same sequential,
// pipelined and N-client cases in the same rounds (tools/bench/ice_peer.*), and patro-worker's own
// job queue and log writer are measured as patro-worker serves them.
//
// Every process is this program started again with a role (/proc/self/exe --role ...), so the
// pinning (--pin) applies to each process by its part: clients, brokers, servers; patro-worker
// is started as a server.
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
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
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

#include "beanstalk_peer.hpp"
#include "cli/options.hpp"
#include "ice_peer.hpp"
#include "redis_peer.hpp"
#include "tcp_conn.hpp"

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

/// Starts program (by default this one again, with a role) on cpu (-1: anywhere).
Child spawn(std::vector<std::string> args, int cpu, std::string self = "/proc/self/exe") {
  int to[2], from[2];
  if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe");
  // Everything the child needs is made before fork: it only calls what is safe after a fork in
  // a process with threads, then execs.
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

/// The sum over the process's threads of what `read` takes from each one's FILE in
/// /proc/PID/task/TID/ (0 where the process is gone).
template <class Read>
uint64_t sum_over_threads(pid_t pid, const char* file, Read read) {
  uint64_t total = 0;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/" + file);
    total += read(f);
  }
  ::closedir(d);
  return total;
}

/// Nanoseconds the process's threads have run (their schedstat's first field).
uint64_t cpu_ns(pid_t pid) {
  return sum_over_threads(pid, "schedstat", [](std::ifstream& f) {
    uint64_t ns = 0;
    return f >> ns ? ns : 0;
  });
}

/// Times the process's threads went to sleep and were woken (their status's
/// voluntary_ctxt_switches).
uint64_t wakeups(pid_t pid) {
  return sum_over_threads(pid, "status", [](std::ifstream& f) -> uint64_t {
    for (std::string l; std::getline(f, l);)
      if (l.rfind("voluntary_ctxt_switches:", 0) == 0) return std::stoull(l.substr(24));
    return 0;
  });
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

/// A measured window on the steady clock (CLOCK_MONOTONIC: one clock for every process of the
/// host), the same for every process of a group: each starts calling at `warm`, so all of them are
/// calling by `start`, counts the calls that end in [start, end), and stops at the first to end
/// after it. The start-up of a chunk (reading the command, waking, the first calls after an idle
/// spell) falls before the window, and no process runs alone at either edge of it.
struct Window {
  Clock::time_point warm, start, end;
};

std::string window_line(const Window& w) {
  auto ns = [](Clock::time_point t) {
    return std::to_string(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
  };
  return "w " + ns(w.warm) + " " + ns(w.start) + " " + ns(w.end) + "\n";
}
std::optional<Window> parse_window(const std::string& l) {
  int64_t warm = 0, start = 0, end = 0;
  std::istringstream in(l);
  if (!(in >> warm >> start >> end) || !(warm <= start && start < end)) return std::nullopt;
  auto at = [](int64_t ns) { return Clock::time_point(std::chrono::nanoseconds(ns)); };
  return Window{at(warm), at(start), at(end)};
}

/// Sequential round trips over a window (Window); each counted one's latency goes to lat. The Run's
/// seconds are the window's; `late` is set when this process made its first call after the window
/// had opened (a machine too busy to start it in time: its count covers less than the window).
Run windowed(const std::function<void(uint64_t)>& once, const Window& w, Latencies& lat,
             bool& late) {
  std::this_thread::sleep_until(w.warm);
  auto t = Clock::now();
  late = t >= w.start;
  uint64_t i = 0, counted = 0;
  while (t < w.end) {
    once(lat.count + i++);
    const auto now = Clock::now();
    if (now >= w.start && now < w.end) {
      ++counted;
      lat.ns.push_back(static_cast<uint32_t>(std::min<int64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - t).count(), UINT32_MAX)));
    }
    t = now;
  }
  Run r;
  r.count = counted;
  r.seconds = std::chrono::duration<double>(w.end - w.start).count();
  lat.count += counted;
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

void register_classes() {
  patro::Class<BenchObject>("BenchObject")
      .method("echo", &BenchObject::echo)
      .method("self", [](BenchObject& b) -> BenchObject& { return b; });
}

// A broker process: prints its endpoints and its public key (empty without CURVE), runs until
// SIGTERM.
int role_patro_broker(const patro::BrokerOptions& o) {
  patro::TerminationSignals signals;
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

// The bench's broker: free ports. With curve, a fresh key pair and CURVE on both ports (no allow
// list: the handshake's ZAP check costs once per connection, the encryption every message).
int role_patro_broker(bool curve) {
  patro::BrokerOptions o;
  o.frontend = "tcp://127.0.0.1:*";
  o.backend = "tcp://127.0.0.1:*";
  if (curve) o.curve = patro::curve_keypair();
  return role_patro_broker(o);
}

// A broker at fixed endpoints ("*" ports: free ones) with the given heartbeat interval, for the
// fail-over case, which kills it and starts it again on the same ports.
int role_failover_broker(const std::string& front, const std::string& back, int heartbeat_ms) {
  patro::BrokerOptions o;
  o.frontend = front;
  o.backend = back;
  o.heartbeat.interval = std::chrono::milliseconds(heartbeat_ms);
  return role_patro_broker(o);
}

int role_patro_server(const std::string& back, const std::string& dir, int threads,
                      const std::string& broker_key) {
  patro::TerminationSignals signals;
  register_classes();
  patro::ServerOptions o;
  o.broker = back;
  o.curve.broker_key = broker_key;  // the config it writes carries it to the clients
  o.threads = static_cast<unsigned>(threads);
  auto fh = patro::FileHandle::open(dir + "/print.log", ">>");
  {
    auto cfg = patro::patronize(o, patro::Hash{{"k", 1}}, std::make_shared<BenchObject>(), fh);
    cfg.to_file(dir + "/patro.conf");
    std::printf("ready\n");
    std::fflush(stdout);
    signals.wait();
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Client roles: connect and warm up, say "ready", then for each 'g' on stdin run one chunk of the
// case and print its Run line; for each "w WARM START END" line (steady-clock ns) run the case's
// one call sequentially over that window (Window) and print its Run line and 1 if it started late,
// else 0; on 'e' print the Run of every chunk together and exit. Chunks of a floor case and of its
// Patro cases alternate, so both see the same machine.

struct Params {
  uint64_t count = 20000;  // per chunk
  std::chrono::milliseconds time{2000};
  // The orchestrator's: each chunk is a window of `time` (Window), not a loop bounded by count and
  // time from each process's own start.
  bool windows = false;
};

/// One line from stdin, read a byte at a time (the rest stays for the next command).
std::string read_line_from_stdin() {
  std::string l;
  char c;
  while (::read(0, &c, 1) == 1 && c != '\n') l.push_back(c);
  return l;
}

/// The role's command loop (above); `once` is its sequential call, for windows (none: the role
/// cannot run one).
template <class Chunk>
int chunk_loop(Chunk chunk, Latencies& lat, const std::function<void(uint64_t)>& once = {}) {
  std::printf("ready\n");
  std::fflush(stdout);
  Run total;
  char c;
  while (::read(0, &c, 1) == 1) {
    if (c == 'e') break;
    Run r;
    std::string late;
    if (c == 'w') {
      const std::string l = read_line_from_stdin();
      const auto w = parse_window(l);
      if (!w) throw std::runtime_error("a bad window: '" + l + "'");
      if (!once) throw std::runtime_error("this client has no sequential call for a window");
      bool started_late = false;
      r = windowed(once, *w, lat, started_late);
      late = started_late ? " 1" : " 0";
    } else {
      r = chunk();
    }
    total.count += r.count;
    total.seconds += r.seconds;
    std::string out = run_line(r);
    out.insert(out.size() - 1, late);
    std::fputs(out.c_str(), stdout);
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
  std::function<void(uint64_t)> once;
  if (mode == "seq")
    once = [&](uint64_t) {
      c.send();
      c.recv();
    };
  return chunk_loop(
      [&]() -> Run {
        if (once) return sequential(once, prm.count, prm.time, lat);
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
      lat, once);
}

/// The client options of a Patro client for --route (auto, direct or broker).
patro::ClientOptions client_options(const std::string& route) {
  patro::ClientOptions o;
  o.route = patro::parse_route(route);
  return o;
}
/// What the row names say of a route: auto goes direct here (the servers are on loopback).
std::string route_label(const std::string& route) {
  return route == "broker" ? "brokered" : "direct";
}

// One get awaited in a coroutine: the coroutine get row's step (run_sync runs it to its end).
patro::Task<> coroutine_get(patro::Proxy k) {
  (void)co_await k.async_get();
}

int role_patro_client(const std::string& conf, const std::string& route, const std::string& mode,
                      int window, const Params& prm) {
  auto ps = patro::get_proxies(conf, client_options(route));
  patro::Proxy h = ps.at(0), obj = ps.at(1), fh = ps.at(2);
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
  // The sequential modes' one call.
  std::function<void(uint64_t)> once;
  if (mode == "get") once = [&](uint64_t) { (void)k.get(); };
  if (mode == "coget") once = [&](uint64_t) { patro::run_sync(coroutine_get(k)); };
  if (mode == "set") once = [&](uint64_t i) { k = static_cast<int64_t>(i); };
  if (mode == "call") once = [&](uint64_t i) { (void)obj.call("echo", static_cast<int64_t>(i)); };
  // chain: self -> self -> echo, each pipelined on the one before (one round trip);
  // seq3: the same three calls, each waiting for the one before.
  if (mode == "chain")
    once = [&](uint64_t i) {
      (void)obj.async_call("self")
          .async_call("self")
          .async_call("echo", static_cast<int64_t>(i))
          .get();
    };
  // chainb: the chain made in a patro::Bundle: its three calls leave in one message.
  if (mode == "chainb")
    once = [&](uint64_t i) {
      patro::Future<patro::Value> f;
      {
        const patro::Bundle together(obj);
        f = obj.async_call("self").async_call("self").async_call("echo", static_cast<int64_t>(i));
      }
      (void)f.get();
    };
  // Three calls made by make() in one patro::Bundle on `on` (one message each way), each read.
  auto three_bundled = [](const patro::Proxy& on, const std::function<patro::Future<>()>& make) {
    std::array<patro::Future<>, 3> f;
    {
      const patro::Bundle together(on);
      for (auto& each : f) each = make();
    }
    for (auto& each : f) (void)each.get();
  };
  // get3b: three independent gets in a Bundle, nothing pipelined: the chain's yardstick for what
  // three calls cost beside one. call3b and self3b: three independent method calls likewise
  // (tools/bench/instructions.py).
  if (mode == "get3b") once = [&](uint64_t) { three_bundled(h, [&] { return k.async_get(); }); };
  if (mode == "call3b")
    once = [&](uint64_t i) {
      three_bundled(obj, [&] { return obj.async_call("echo", static_cast<int64_t>(i)); });
    };
  // self3b: the chain's three calls (self, self, echo), each on obj and none pipelined.
  if (mode == "self3b")
    once = [&](uint64_t i) {
      int made = 0;
      three_bundled(obj, [&] {
        return ++made < 3 ? obj.async_call("self")
                          : obj.async_call("echo", static_cast<int64_t>(i));
      });
    };
  if (mode == "seq3")
    once = [&](uint64_t i) {
      const patro::Proxy a(obj.call("self"));
      const patro::Proxy b(a.call("self"));
      (void)b.call("echo", static_cast<int64_t>(i));
    };
  if (mode == "lock")
    once = [&](uint64_t) {
      patro::lock(h);
      patro::unlock(h);
    };
  return chunk_loop(
      [&]() -> Run {
        if (once) return sequential(once, prm.count, prm.time, lat);
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
        // print_async: 64 lines per step, counted once the server acknowledged them all.
        const auto start = Clock::now();
        Run r = throughput(
            [&]() -> uint64_t {
              for (int i = 0; i < 64; ++i) fh.print_async(line + std::to_string(n++) + "\n");
              return 64;
            },
            prm.count, prm.time);
        if (patro::await_oneway(fh) != 0) std::fprintf(stderr, "oneway lines failed\n");
        r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
        return r;
      },
      lat, once);
}

/// A ZeroC Ice client: the floor's shapes (seq: one twoway get at a time; pipe: window AMI gets in
/// flight) against the Ice server.
int role_ice_client(const std::string& proxy, const std::string& mode, int window,
                    const Params& prm, const std::string& tls_dir) {
  patro::bench::IceClient c(proxy, tls_dir);
  for (int i = 0; i < 200; ++i) (void)c.get();  // connect and warm up
  Latencies lat;
  std::function<void(uint64_t)> once;
  if (mode == "seq") once = [&](uint64_t) { (void)c.get(); };
  return chunk_loop(
      [&]() -> Run {
        if (once) return sequential(once, prm.count, prm.time, lat);
        for (int i = 0; i < window; ++i) c.start_get();
        Run r = throughput(
            [&]() -> uint64_t {
              c.finish_oldest();
              c.start_get();
              return 1;
            },
            prm.count, prm.time);
        while (c.finish_oldest()) {
        }
        return r;
      },
      lat, once);
}

/// A client of patro-worker's queue (proxy 0) and log (proxy 1), as its users call them:
/// take_many: take_many(arg, 0) and ack_many of what it took, until the queue is empty;
/// take_flat: the same with take_flat(arg, 0), [id, job, delivery, …] in one flat array, and
/// ack_many of the flat [id, delivery, …];
/// take_one: take(0) and ack, one job per request each;
/// ack_take: take(0) once, then ack_take(id, delivery, 0): one call acknowledges a job and takes
/// the next;
/// write_oneway: 64-byte lines sent oneway ("write"), then one synchronous write, which the
/// worker answers only after every line before it (and under --log-sync always, once they are on
/// disk); its count includes that line.
int role_worker_client(const std::string& conf, const std::string& route, const std::string& mode,
                       int64_t arg, const Params& prm) {
  auto ps = patro::get_proxies(conf, client_options(route));
  patro::Proxy queue = ps.at(0), log = ps.at(1);
  (void)queue.call("size");
  Latencies lat;
  const std::string line = "a log line of about sixty bytes from a bench client, number ";
  uint64_t n = 0;
  patro::Value held;  // ack_take: the job this consumer holds (kept from one chunk to the next)
  return chunk_loop(
      [&]() -> Run {
        if (mode == "ack_take") {
          uint64_t acked = 0;
          Run r = throughput(
              [&]() -> uint64_t {
                if (held.is_null()) {
                  held = queue.call("take", 0);
                  if (held.is_null()) return prm.count;  // empty: done
                }
                held = queue.call("ack_take", held[0], held[2], 0);
                ++acked;
                return held.is_null() ? prm.count : 1;  // null: the last one acked, empty
              },
              prm.count, prm.time);
          r.count = acked;
          return r;
        }
        // Acknowledges a batch of m jobs with one ack_many (pairs: its argument, nested or flat).
        auto ack_batch = [&](patro::ValueArray pairs, size_t m, uint64_t& acked) -> uint64_t {
          const patro::Value ok = queue.call("ack_many", patro::Value(std::move(pairs)));
          for (size_t i = 0; i < ok.size(); ++i)
            if (!ok[i].as<bool>()) throw std::runtime_error("an ack was refused");
          acked += m;
          return m;
        };
        if (mode == "take_flat") {
          uint64_t acked = 0;
          Run r = throughput(
              [&]() -> uint64_t {
                const patro::Value got = queue.call("take_flat", arg, 0);
                const patro::ValueArray* items = got.if_array();
                const size_t m = items == nullptr ? 0 : items->size() / 3;
                if (m == 0) return prm.count;
                patro::ValueArray pairs;
                pairs.reserve(2 * m);
                for (size_t i = 0; i < m; ++i) {
                  pairs.push_back((*items)[3 * i]);
                  pairs.push_back((*items)[3 * i + 2]);
                }
                return ack_batch(std::move(pairs), m, acked);
              },
              prm.count, prm.time);
          r.count = acked;
          return r;
        }
        if (mode == "take_many" || mode == "take_one") {
          uint64_t acked = 0;
          Run r = throughput(
              [&]() -> uint64_t {
                if (mode == "take_one") {
                  const patro::Value j = queue.call("take", 0);
                  if (j.is_null()) return prm.count;  // empty: done
                  if (!queue.call("ack", j[0], j[2]).as<bool>())
                    throw std::runtime_error("an ack was refused");
                  ++acked;
                  return 1;
                }
                const patro::Value got = queue.call("take_many", arg, 0);
                const size_t m = got.size();
                if (m == 0) return prm.count;
                patro::ValueArray pairs;
                pairs.reserve(m);
                for (size_t i = 0; i < m; ++i)
                  pairs.push_back(patro::Value::array({got[i][0], got[i][2]}));
                return ack_batch(std::move(pairs), m, acked);
              },
              prm.count, prm.time);
          r.count = acked;
          return r;
        }
        const auto start = Clock::now();
        Run r = throughput(
            [&]() -> uint64_t {
              for (int i = 0; i < 64; ++i) log.send("write", line + std::to_string(n++));
              return 64;
            },
            prm.count, prm.time);
        if (patro::await_oneway(log) != 0) std::fprintf(stderr, "oneway lines failed\n");
        (void)log.call("write", line + std::to_string(n++));
        r.count += 1;
        r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
        return r;
      },
      lat);
}

/// A beanstalkd consumer of tube: reserve-with-timeout 0, then delete, one job at a time, until
/// none is ready.
int role_beanstalk_client(uint16_t port, const std::string& tube, const Params& prm) {
  patro::bench::BeanstalkClient c(port, tube);
  Latencies lat;
  return chunk_loop(
      [&]() -> Run {
        uint64_t deleted = 0;
        Run r = throughput(
            [&]() -> uint64_t {
              const auto id = c.reserve();
              if (!id) return prm.count;  // none ready: done
              c.remove(*id);
              ++deleted;
              return 1;
            },
            prm.count, prm.time);
        r.count = deleted;
        return r;
      },
      lat);
}

/// A Redis Streams consumer in group "bench" (consumer name: its pid): XREADGROUP COUNT batch,
/// then XACK of every id it read, until the stream has no new entries.
int role_redis_client(uint16_t port, const std::string& stream, uint64_t batch, const Params& prm) {
  patro::bench::RedisClient c(port);
  const std::string consumer = "c" + std::to_string(::getpid());
  Latencies lat;
  return chunk_loop(
      [&]() -> Run {
        uint64_t acked = 0;
        Run r = throughput(
            [&]() -> uint64_t {
              const auto ids = c.read_group(stream, "bench", consumer, batch);
              if (ids.empty()) return prm.count;  // nothing new: done
              c.ack(stream, "bench", ids);
              acked += ids.size();
              return ids.size();
            },
            prm.count, prm.time);
        r.count = acked;
        return r;
      },
      lat);
}

/// A program's path found in $PATH, or empty.
std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream in(path ? path : "");
  for (std::string d; std::getline(in, d, ':');) {
    if (d.empty()) continue;
    const std::string p = d + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

// The job every queue row pushes and takes: 16 bytes, as issue 25 measured.
const std::string kJobBody = "sixteen byte job";

// ---------------------------------------------------------------------------------------------
// The orchestrator

// The rows of several client processes run in windows (Window): the window's length (--phase-ms),
// and how long before it opens the orchestrator sends it (every process reads it and sleeps until
// warm) and the processes start calling (the ramp, whose calls are not counted).
constexpr int kDefaultPhaseMs = 1000;
constexpr auto kWindowLead = std::chrono::milliseconds(100);
constexpr auto kWindowRamp = std::chrono::milliseconds(50);

struct Case {
  std::string name;
  std::optional<double> p50, p99, per_s, floor_p50, floor_per_s, ratio;
  std::string note;
  // Ice's figure for the same case in the same rounds, and this row's over it (p50s of a
  // sequential case, rates otherwise); empty where Ice was not built or has no such case.
  std::optional<double> ice_p50 = std::nullopt, ice_per_s = std::nullopt, ice_ratio = std::nullopt;
};

std::optional<double> over(const std::optional<double>& a, const std::optional<double>& b) {
  if (!a || !b || *b <= 0) return std::nullopt;
  return *a / *b;
}

/// "1,2,4" -> {1, 2, 4}; throws on anything else.
std::vector<int> parse_counts(const std::string& list) {
  std::vector<int> out;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || n < 1 || n > 64)
      throw std::invalid_argument("--clients: a comma-separated list of 1 to 64, not '" + list +
                                  "'");
    out.push_back(n);
  }
  if (out.empty()) throw std::invalid_argument("--clients: empty list");
  return out;
}

/// patro-worker for the worker rows: $PATRO_WORKER, else beside this program in a build tree
/// (../worker/patro-worker) or an installation (patro-worker); empty if none is there.
std::string find_worker() {
  if (const char* e = std::getenv("PATRO_WORKER"); e && *e) return e;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  for (const auto& p : {self.parent_path().parent_path() / "worker" / "patro-worker",
                        self.parent_path() / "patro-worker"})
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  return {};
}

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
  std::string route = "auto";
  std::string clients_list = "1,2,4,8,16";
  std::vector<int> clients;
  // The window of the N-client-processes rows and of the CURVE 4-client row (Window).
  int phase_ms = kDefaultPhaseMs;
  std::string worker;  // patro-worker's path; empty: its rows are skipped
  // The queue rows' peers, found in $PATH; empty: their rows are skipped.
  std::string beanstalkd = find_in_path("beanstalkd");
  std::string redis_server = find_in_path("redis-server");
  bool want(const std::string& c) const {
    return ("," + only + ",").find("," + c + ",") != std::string::npos;
  }
  // The queue rows to run (their keys: patro1, beanstalk1, redis1, patro1t, patro100,
  // patro100f, redis100, patro1d, beanstalk1d, redis1d, patro100d); empty: all.
  std::string jobs_rows;
  uint64_t jobs_count = 50000;
  bool want_row(const std::string& key) const {
    return jobs_rows.empty() || ("," + jobs_rows + ",").find("," + key + ",") != std::string::npos;
  }
  std::string dir;
  Child floor_broker, floor_server, patro_broker, patro_server, curve_broker, curve_server,
      ice_server, ice_ssl_server;
  std::vector<Child> queue_servers;  // the queue rows' patro-workers and peers, stopped by finish()
  std::string floor_front, patro_back, patro_conf, curve_conf, ice_proxy;
  // Ice over TLS (IceSSL), beside the CURVE rows: its proxy, certificates and negotiated cipher.
  std::string ice_ssl_proxy, tls_dir, ice_ssl_cipher, ice_ssl_skipped;
  std::vector<Case> cases;

  bool ice() const { return !ice_proxy.empty(); }
  std::string patro_suffix() const { return " (" + route_label(route) + ")"; }
  /// Whether the brokered rows run beside the direct ones (the brokered path stays measured).
  bool brokered_too() const { return route != "broker"; }

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
  /// The params of a row of several client processes: windows of --phase-ms.
  Params phase() const {
    Params p = params(uint64_t{1} << 40, std::chrono::milliseconds(phase_ms));
    p.windows = true;
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
    std::chrono::milliseconds window{0};  // > 0: each chunk is a Window this long
    int late = 0, started = 0;            // the processes' windows started late, and all
  };
  Group spawn_group(int n, std::vector<std::string> args, const Params& p) {
    Group g;
    if (p.windows) g.window = p.time;
    for (int i = 0; i < n; ++i) g.procs.push_back(spawn(args, client_cpu()));
    for (auto& c : g.procs)
      if (c.line(30s) != "ready") throw std::runtime_error("a client did not start: " + args[1]);
    return g;
  }
  Group floor_group(int n, const std::string& mode, int window, const Params& p) {
    std::vector<std::string> a{"--role", "floor-client", floor_front, mode, std::to_string(window)};
    for (auto& x : param_args(p)) a.push_back(x);
    return spawn_group(n, a, p);
  }
  Group patro_group(int n, const std::string& mode, int window, const Params& p,
                    const std::string& conf = {}, const std::string& rt = {}) {
    std::vector<std::string> a{
        "--role", "patro-client",        conf.empty() ? patro_conf : conf, rt.empty() ? route : rt,
        mode,     std::to_string(window)};
    for (auto& x : param_args(p)) a.push_back(x);
    return spawn_group(n, a, p);
  }
  /// Ice's clients for a case (seq, or pipe with window in flight); none where Ice is not built.
  /// With tls, over IceSSL against the TLS server; none where IceSSL is not built.
  std::optional<Group> ice_group(int n, const std::string& mode, int window, const Params& p,
                                 bool tls = false) {
    if (tls ? ice_ssl_proxy.empty() : !ice()) return std::nullopt;
    std::vector<std::string> a{"--role", "ice-client", tls ? ice_ssl_proxy : ice_proxy, mode,
                               std::to_string(window)};
    for (auto& x : param_args(p)) a.push_back(x);
    if (tls) a.push_back(tls_dir);
    return spawn_group(n, a, p);
  }
  Group worker_group(int n, const std::string& conf, const std::string& mode, int64_t arg,
                     const Params& p) {
    std::vector<std::string> a{"--role", "worker-client", conf, route, mode, std::to_string(arg)};
    for (auto& x : param_args(p)) a.push_back(x);
    return spawn_group(n, a, p);
  }
  /// One chunk on every process of the group at once: their summed count over the longest time,
  /// or over the window where the group has one.
  void chunk(Group& g) {
    if (g.window.count() > 0) return window_chunk(g);
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
  /// One window (Window) on every process of the group: opens kWindowLead + kWindowRamp from now,
  /// lasts g.window; the group's count is the calls its processes finished inside it.
  void window_chunk(Group& g) {
    const auto warm = Clock::now() + kWindowLead;
    const Window w{warm, warm + kWindowRamp, warm + kWindowRamp + g.window};
    const std::string cmd = window_line(w);
    for (auto& c : g.procs) c.say(cmd);
    uint64_t total = 0;
    for (auto& c : g.procs) {
      auto l = c.line(kWindowLead + kWindowRamp + g.window + 180s);
      if (!l) throw std::runtime_error("a client did not finish a window");
      const Run r = parse_run(*l);
      total += r.count;
      std::istringstream in(*l);
      std::string skip;
      int late = 0;
      in >> skip >> skip >> skip >> skip >> late;  // after the Run's four fields
      ++g.started;
      if (late != 0) ++g.late;
    }
    g.per_s_sum += total;
    g.seconds += std::chrono::duration<double>(w.end - w.start).count();
  }
  /// A rate row's note on its windowed groups' late starts (empty where none was late).
  static std::string late_note(std::initializer_list<const Group*> groups) {
    int late = 0, started = 0;
    for (const Group* g : groups) {
      if (!g) continue;
      late += g->late;
      started += g->started;
    }
    if (late == 0) return {};
    return "; " + std::to_string(late) + " of " + std::to_string(started) +
           " process windows started late (a busy machine)";
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
    std::string pfront;
    pin_ >> pfront >> patro_back;
    patro_server =
        spawn({"--role", "patro-server", patro_back, dir, std::to_string(threads)}, service_cpu());
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
    if (patro::bench::ice_built()) {
      // Ice's server beside the others, with as many threads as the servers have lanes.
      ice_server = spawn({"--role", "ice-server", std::to_string(threads)}, service_cpu());
      auto proxy = ice_server.line(20s);
      if (!proxy || proxy->empty()) throw std::runtime_error("the Ice server did not start");
      ice_proxy = *proxy;
    }
    if (want("curve") && patro::bench::ice_ssl_built()) {
      // And over TLS (IceSSL), the CURVE rows' peer, with certificates made here.
      tls_dir = dir + "/tls";
      if (::mkdir(tls_dir.c_str(), 0700) != 0) throw std::runtime_error("mkdir " + tls_dir);
      try {
        patro::bench::write_tls_files(tls_dir);
      } catch (const std::exception& e) {
        ice_ssl_skipped = e.what();  // no openssl: the ice-ssl rows are skipped, not the bench
      }
    }
    if (want("curve") && patro::bench::ice_ssl_built() && ice_ssl_skipped.empty()) {
      ice_ssl_server =
          spawn({"--role", "ice-server", std::to_string(threads), tls_dir}, service_cpu());
      auto proxy = ice_ssl_server.line(20s);
      if (!proxy || proxy->empty()) throw std::runtime_error("the IceSSL server did not start");
      ice_ssl_proxy = *proxy;
      // One call from here: the handshake works, and which cipher suite it agreed on.
      patro::bench::IceClient probe(ice_ssl_proxy, tls_dir);
      (void)probe.get();
      ice_ssl_cipher = probe.cipher();
    }
    std::this_thread::sleep_for(200ms);  // the floor server's lanes say READY
  }

  /// A patro-worker serving "queue jobs-TAG" and "log lines-TAG PATH" through the Patro broker,
  /// with its extra flags; waits for the config it writes. The caller stops it.
  Child start_worker(const std::string& tag, std::vector<std::string> flags, std::string& conf) {
    conf = dir + "/worker-" + tag + ".conf";
    std::vector<std::string> a{"--broker",    patro_back,  "--config-out",
                               conf,          "--threads", std::to_string(threads),
                               "--log-level", "warn"};
    for (auto& f : flags) a.push_back(f);
    // Names of its own: the queue rows run several patro-workers at once, and a name has one
    // owner at the broker.
    a.insert(a.end(), {"queue", "jobs-" + tag, "log", "lines-" + tag});
    a.push_back(dir + "/worker-" + tag + ".log");
    Child c = spawn(a, service_cpu(), worker);
    for (int i = 0; i < 2000 && ::access(conf.c_str(), R_OK) != 0; ++i) {
      if (::waitpid(c.pid, nullptr, WNOHANG) == c.pid) {
        c.pid = -1;
        c.stop();
        throw std::runtime_error("patro-worker (" + tag + ") exited at start-up");
      }
      std::this_thread::sleep_for(10ms);
    }
    if (::access(conf.c_str(), R_OK) != 0) {
      c.stop();
      throw std::runtime_error("patro-worker (" + tag + ") wrote no config");
    }
    return c;
  }

  void finish() {
    for (Child& c : queue_servers) c.stop();
    ice_server.stop();
    ice_ssl_server.stop();
    curve_server.stop();
    curve_broker.stop();
    patro_server.stop();
    patro_broker.stop();
    floor_server.stop();
    floor_broker.stop();
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }

  /// Rounds of chunks alternating the floor, Patro's groups and Ice's, so all see the same
  /// machine.
  void rounds(int n, Group& floor, std::vector<Group*> patro, std::optional<Group>& ice_g) {
    for (int r = 0; r < n; ++r) {
      chunk(floor);
      for (Group* p : patro) chunk(*p);
      if (ice_g) chunk(*ice_g);
    }
  }

  /// The rate of an Ice group, or nothing.
  std::optional<double> end_rate(std::optional<Group>& g) {
    if (!g) return std::nullopt;
    return end(*g).second;
  }

  void run() {
    const int rounds_n = quick ? 2 : 4;
    const std::string sfx = patro_suffix();
    if (!patro::bench::ice_built())
      cases.push_back({"ice: skipped (not built)", {}, {}, {}, {}, {}, {}, ""});
    // One client, sequential, in rounds: floor, get, set, call, lock+unlock, Ice's get. The
    // brokers' and servers' CPU per request come from the floor, get and Ice chunks.
    const Params seq = params(5000, 600ms);
    if (want("seq")) {
      Group fseq_g = floor_group(1, "seq", 1, seq);
      // coget: the get awaited in a coroutine (patro::Task, run_sync), beside the synchronous one.
      const std::vector<std::string> modes{"get", "set", "call", "lock", "coget"};
      std::vector<Group> pseq_g;
      for (const auto& m : modes) pseq_g.push_back(patro_group(1, m, 1, seq));
      std::optional<Group> bseq_g;
      if (brokered_too()) bseq_g = patro_group(1, "get", 1, seq, {}, "broker");
      uint64_t bb = 0;
      double bn = 1;
      std::optional<Group> iseq_g = ice_group(1, "seq", 1, seq);
      uint64_t fb = 0, fs = 0, pb = 0, ps = 0, is = 0;
      for (int r = 0; r < rounds_n; ++r) {
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
        if (bseq_g) {
          b0 = cpu_ns(patro_broker.pid);
          chunk(*bseq_g);
          bb += cpu_ns(patro_broker.pid) - b0;
        }
        if (iseq_g) {
          s0 = cpu_ns(ice_server.pid);
          chunk(*iseq_g);
          is += cpu_ns(ice_server.pid) - s0;
        }
      }
      auto [fseq, fseq_rate] = end(fseq_g);
      std::optional<double> ice_p50, ice_rate, ice_cpu;
      if (iseq_g) {
        auto [ir, irate] = end(*iseq_g);
        ice_p50 = ir.p50_us;
        ice_rate = irate;
        ice_cpu = is / 1000.0 / static_cast<double>(std::max<uint64_t>(ir.count, 1));
        cases.push_back({"ice: twoway get, 1 client", ir.p50_us, ir.p99_us, irate, fseq.p50_us,
                         fseq_rate, ir.p50_us / fseq.p50_us,
                         "ZeroC Ice, one server process; p99 ratio " + num(ir.p99_us / fseq.p99_us),
                         ir.p50_us, irate, 1.0});
      }
      cases.push_back({"floor: raw ZeroMQ echo via broker, 1 client", fseq.p50_us, fseq.p99_us,
                       fseq_rate, fseq.p50_us, fseq_rate, 1.0,
                       std::to_string(kFloorRequestBytes) + " B request, " +
                           std::to_string(kFloorReplyBytes) + " B reply",
                       ice_p50, ice_rate, over(fseq.p50_us, ice_p50)});
      std::optional<double> get_p50;
      for (size_t i = 0; i < modes.size(); ++i) {
        auto [r, rate] = end(pseq_g[i]);
        const std::string name = (modes[i] == "lock"    ? "lock+unlock pair, 1 client"
                                  : modes[i] == "coget" ? "coroutine get, 1 in flight"
                                                        : modes[i] + ", 1 client") +
                                 sfx;
        if (i == 0) get_p50 = r.p50_us;
        std::string note = "p99 ratio " + num(r.p99_us / fseq.p99_us);
        if (modes[i] == "coget")
          note += "; p50 over the synchronous get's " + num(over(r.p50_us, get_p50));
        cases.push_back({name, r.p50_us, r.p99_us, rate, fseq.p50_us, fseq_rate,
                         r.p50_us / fseq.p50_us, note, ice_p50, ice_rate, over(r.p50_us, ice_p50)});
        if (i == 0 && bseq_g) {
          auto [br, brate] = end(*bseq_g);
          cases.push_back({"get, 1 client (brokered)", br.p50_us, br.p99_us, brate, fseq.p50_us,
                           fseq_rate, br.p50_us / fseq.p50_us,
                           "p99 ratio " + num(br.p99_us / fseq.p99_us), ice_p50, ice_rate,
                           over(br.p50_us, ice_p50)});
          bn = static_cast<double>(std::max<uint64_t>(br.count, 1));
        }
        if (i == 0) {
          const double n = static_cast<double>(std::max<uint64_t>(r.count, 1));
          const double fn = static_cast<double>(std::max<uint64_t>(fseq.count, 1));
          // The broker's CPU per brokered get (a direct get costs it nothing).
          const double pbn = bseq_g ? bb / bn : pb / n;
          cases.push_back(
              {"broker CPU us per request (get" + std::string(bseq_g ? ", brokered)" : ")"),
               pbn / 1000.0, std::nullopt, std::nullopt, fb / 1000.0 / fn, std::nullopt,
               pbn / (fb / fn), "CPU time, not latency"});
          cases.push_back({"server CPU us per request (get)", ps / 1000.0 / n, std::nullopt,
                           std::nullopt, fs / 1000.0 / fn, std::nullopt, (ps / n) / (fs / fn),
                           "CPU time, not latency; ice: its server's", ice_cpu, std::nullopt,
                           over(ps / 1000.0 / n, ice_cpu)});
        }
      }
    }
    // CURVE against plaintext on the same path, chunks alternating: the sequential get direct
    // and brokered, 64 in flight and 4 client processes direct (issue 24's rows).
    if (want("curve")) {
      if (!patro::bench::ice_ssl_built())
        cases.push_back({"ice-ssl: skipped (not built)", {}, {}, {}, {}, {}, {}, ""});
      else if (!ice_ssl_skipped.empty())
        cases.push_back({"ice-ssl: skipped", {}, {}, {}, {}, {}, {}, ice_ssl_skipped});
      // Ice over TLS beside them (ice-ssl rows, against plain Ice in the same rounds); each
      // CURVE row reports its ratio to the matching ice-ssl figure in its Ice columns.
      struct TlsPeer {
        std::optional<double> p50, rate;
      };
      // One row: CURVE's groups against plaintext's (the floor), sequential get or a rate, with
      // Ice's groups plain and over TLS in the same rounds where given; answers the ice-ssl
      // figure (p50 or rate), for rows that share it.
      auto curve_row = [&](const std::string& name, Group& plain, Group& curve, bool latency,
                           std::optional<Group> ice_g, std::optional<Group> tls_g,
                           const std::string& tls_name, TlsPeer shared = {}) {
        for (int r = 0; r < rounds_n; ++r) {
          chunk(plain);
          chunk(curve);
          if (ice_g) chunk(*ice_g);
          if (tls_g) chunk(*tls_g);
        }
        const std::string late =
            late_note({&plain, &curve, ice_g ? &*ice_g : nullptr, tls_g ? &*tls_g : nullptr});
        auto [pr, prate] = end(plain);
        auto [cr, crate] = end(curve);
        TlsPeer tls = shared;
        if (ice_g && tls_g) {
          auto [ir, irate] = end(*ice_g);
          auto [tr, trate] = end(*tls_g);
          tls = {latency ? std::optional<double>(tr.p50_us) : std::nullopt, trate};
          const std::string note = "floor: plain Ice, same rounds; " + ice_ssl_cipher;
          if (latency)
            cases.push_back({tls_name, tr.p50_us, tr.p99_us, trate, ir.p50_us, irate,
                             tr.p50_us / ir.p50_us,
                             note + "; p99 ratio " + num(tr.p99_us / ir.p99_us)});
          else
            cases.push_back({tls_name, std::nullopt, std::nullopt, trate, std::nullopt, irate,
                             trate / irate, "calls/s; " + note + late});
        } else {
          if (ice_g) (void)end(*ice_g);
          if (tls_g) (void)end(*tls_g);
        }
        const std::string vs = "; ice: Ice over TLS (" + tls_name + ")";
        if (latency)
          cases.push_back(
              {name, cr.p50_us, cr.p99_us, crate, pr.p50_us, prate, cr.p50_us / pr.p50_us,
               "floor: plaintext, same path; p99 ratio " + num(cr.p99_us / pr.p99_us) + vs, tls.p50,
               tls.rate, over(cr.p50_us, tls.p50)});
        else
          cases.push_back({name, std::nullopt, std::nullopt, crate, std::nullopt, prate,
                           crate / prate, "calls/s; floor: plaintext, same path" + vs + late,
                           std::nullopt, tls.rate, over(crate, tls.rate)});
        return tls;
      };
      const std::string tls_get = "ice-ssl: twoway get, 1 client";
      TlsPeer get_tls;
      for (const char* path : {"direct", "broker"}) {
        const bool direct = path == std::string("direct");
        Group plain = patro_group(1, "get", 1, seq, {}, path),
              curve = patro_group(1, "get", 1, seq, curve_conf, path);
        // Ice's groups run with the direct row; the brokered row is set beside the same figure.
        std::optional<Group> ice_g, tls_g;
        if (direct) {
          ice_g = ice_group(1, "seq", 1, seq);
          tls_g = ice_group(1, "seq", 1, seq, true);
        }
        get_tls = curve_row(
            std::string("curve: get, 1 client (") + (direct ? "direct" : "brokered") + ")", plain,
            curve, true, std::move(ice_g), std::move(tls_g), tls_get, get_tls);
      }
      const Params cpipe = params(100000, 400ms);
      Group pp = patro_group(1, "async", 64, cpipe, {}, "direct"),
            cp = patro_group(1, "async", 64, cpipe, curve_conf, "direct");
      curve_row("curve: async get, 64 in flight (direct)", pp, cp, false,
                ice_group(1, "pipe", 64, cpipe), ice_group(1, "pipe", 64, cpipe, true),
                "ice-ssl: async get, 64 in flight");
      const Params cmulti = phase();
      Group p4 = patro_group(4, "get", 1, cmulti, {}, "direct"),
            c4 = patro_group(4, "get", 1, cmulti, curve_conf, "direct");
      curve_row("curve: 4 client processes, sync get (direct)", p4, c4, false,
                ice_group(4, "seq", 1, cmulti), ice_group(4, "seq", 1, cmulti, true),
                "ice-ssl: 4 client processes, sync get");
    }
    // Calls on results not yet returned (issue 26): a chain of three dependent calls, pipelined,
    // beside the same three sequential and one get, one client, direct.
    if (want("chain")) {
      Group f = floor_group(1, "seq", 1, seq), g = patro_group(1, "get", 1, seq, {}, "direct"),
            c = patro_group(1, "chainb", 1, seq, {}, "direct"),
            u = patro_group(1, "chain", 1, seq, {}, "direct"),
            g3 = patro_group(1, "get3b", 1, seq, {}, "direct"),
            s3 = patro_group(1, "seq3", 1, seq, {}, "direct"),
            x3 = patro_group(1, "call3b", 1, seq, {}, "direct"),
            y3 = patro_group(1, "self3b", 1, seq, {}, "direct");
      std::optional<Group> no_ice;
      rounds(rounds_n, f, {&g, &c, &u, &g3, &s3, &x3, &y3}, no_ice);
      auto [fr, frate] = end(f);
      auto [gr, grate] = end(g);
      auto [cr, crate] = end(c);
      auto [ur, urate] = end(u);
      auto [tr, trate] = end(g3);
      auto [sr, srate] = end(s3);
      cases.push_back({"get, 1 client (direct; beside the chain)", gr.p50_us, gr.p99_us, grate,
                       fr.p50_us, frate, gr.p50_us / fr.p50_us, "the chain's yardstick"});
      cases.push_back({"chain of 3 dependent calls, 1 client (direct)", cr.p50_us, cr.p99_us, crate,
                       fr.p50_us, frate, cr.p50_us / fr.p50_us,
                       "made in a patro::Bundle: one message each way; p50 over one get's " +
                           num(cr.p50_us / gr.p50_us) + " (target <= 1.3)"});
      cases.push_back({"chain of 3 dependent calls, each sent at once, 1 client (direct)",
                       ur.p50_us, ur.p99_us, urate, fr.p50_us, frate, ur.p50_us / fr.p50_us,
                       "three messages each way, one round trip; p50 over one get's " +
                           num(ur.p50_us / gr.p50_us)});
      cases.push_back({"3 independent gets in a patro::Bundle, 1 client (direct)", tr.p50_us,
                       tr.p99_us, trate, fr.p50_us, frate, tr.p50_us / fr.p50_us,
                       "one message each way, nothing pipelined; p50 over one get's " +
                           num(tr.p50_us / gr.p50_us)});
      cases.push_back({"3 sequential dependent calls, 1 client (direct)", sr.p50_us, sr.p99_us,
                       srate, fr.p50_us, frate, sr.p50_us / fr.p50_us,
                       "three round trips; p50 over one get's " + num(sr.p50_us / gr.p50_us)});
      // The chain taken apart: three method calls in one Bundle, then the chain's own three.
      auto [xr, xrate] = end(x3);
      auto [yr, yrate] = end(y3);
      cases.push_back({"3 independent calls in a patro::Bundle, 1 client (direct)", xr.p50_us,
                       xr.p99_us, xrate, fr.p50_us, frate, xr.p50_us / fr.p50_us,
                       "three echo calls, nothing pipelined; p50 over one get's " +
                           num(xr.p50_us / gr.p50_us)});
      cases.push_back({"the chain's 3 calls in a patro::Bundle, none pipelined, 1 client (direct)",
                       yr.p50_us, yr.p99_us, yrate, fr.p50_us, frate, yr.p50_us / fr.p50_us,
                       "self, self, echo, each on the object; p50 over one get's " +
                           num(yr.p50_us / gr.p50_us)});
    }
    // Pipelined, one client, in rounds (Ice: AMI, as many in flight).
    const Params pipe = params(100000, 400ms);
    for (int w : {1, 8, 64}) {
      if (!want("pipe")) break;
      Group f = floor_group(1, "pipe", w, pipe), p = patro_group(1, "async", w, pipe);
      std::optional<Group> b;
      if (brokered_too()) b = patro_group(1, "async", w, pipe, {}, "broker");
      std::optional<Group> i = ice_group(1, "pipe", w, pipe);
      std::vector<Group*> ps{&p};
      if (b) ps.push_back(&*b);
      rounds(rounds_n, f, ps, i);
      const double frate = end(f).second, prate = end(p).second;
      const auto irate = end_rate(i);
      const double brate = b ? end(*b).second : 0.0;
      cases.push_back({"async get, " + std::to_string(w) + " in flight" + sfx, std::nullopt,
                       std::nullopt, prate, std::nullopt, frate, prate / frate, "calls/s; ice: AMI",
                       std::nullopt, irate, over(prate, irate)});
      if (b)
        cases.push_back({"async get, " + std::to_string(w) + " in flight (brokered)", std::nullopt,
                         std::nullopt, brate, std::nullopt, frate, brate / frate,
                         "calls/s; ice: AMI", std::nullopt, irate, over(brate, irate)});
    }
    // Client processes, synchronous get, in rounds: each N of --clients (4 always where the job
    // and log rows need its floor for scale).
    const Params multi = phase();
    std::optional<double> floor4, ice4;
    std::vector<int> ns;
    if (want("multi")) ns = clients;
    // (not when only some queue rows run: a profile or an A/B of those rows)
    if ((want("jobs") || want("lines")) && (jobs_rows.empty() || want("lines")) &&
        std::find(ns.begin(), ns.end(), 4) == ns.end())
      ns.push_back(4);
    for (int n : ns) {
      Group f = floor_group(n, "seq", 1, multi), p = patro_group(n, "get", 1, multi);
      std::optional<Group> b;
      if (brokered_too()) b = patro_group(n, "get", 1, multi, {}, "broker");
      std::optional<Group> i = ice_group(n, "seq", 1, multi);
      std::vector<Group*> ps{&p};
      if (b) ps.push_back(&*b);
      rounds(rounds_n, f, ps, i);
      const std::string note =
          "calls/s" + late_note({&f, &p, b ? &*b : nullptr, i ? &*i : nullptr});
      const double frate = end(f).second, prate = end(p).second;
      const auto irate = end_rate(i);
      const double brate = b ? end(*b).second : 0.0;
      if (n == 4) {
        floor4 = frate;
        ice4 = irate;
      }
      cases.push_back({std::to_string(n) + " client processes, sync get" + sfx, std::nullopt,
                       std::nullopt, prate, std::nullopt, frate, prate / frate, note, std::nullopt,
                       irate, over(prate, irate)});
      if (b)
        cases.push_back({std::to_string(n) + " client processes, sync get (brokered)", std::nullopt,
                         std::nullopt, brate, std::nullopt, frate, brate / frate, note,
                         std::nullopt, irate, over(brate, irate)});
    }
    const std::string scale = "; ratios to the 4-client rates, for scale";
    // A row of a rate measured once, with the floor's and Ice's 4-client rates for scale.
    auto scaled = [&](const std::string& name, double rate, const std::string& unit) {
      cases.push_back({name, std::nullopt, std::nullopt, rate, std::nullopt, floor4,
                       over(rate, floor4), unit + scale, std::nullopt, ice4, over(rate, ice4)});
    };
    // patro-worker's job queue and log, each served by a patro-worker of its own.
    // 50,000 jobs a round, three rounds, as issue 25 measured (fewer rounds than the other
    // cases': every round drains every queue, the durable ones at a few thousand jobs a second).
    if (want("jobs")) queue_jobs(quick ? 100 : jobs_count, quick ? 2 : 3, scaled);
    const uint64_t lines = quick ? 2000 : 2000000;
    if (want("lines")) worker_lines(lines, scaled);
    // FileHandle print_async from 4 clients into one file (one write(2) per line).
    if (want("lines")) {
      Group p = patro_group(4, "print_oneway", 1, params(lines, 2000ms));
      chunk(p);
      scaled("FileHandle print_async, 4 clients" + sfx, end(p).second, "lines/s");
    }
  }

  /// A peer server (beanstalkd, redis-server) at path on a free loopback port, args(port) its
  /// arguments; tried on up to three ports (another process may take a free port first). It joins
  /// queue_servers, which finish() stops. Returns its port once it accepts connections.
  uint16_t start_peer(const std::string& path,
                      const std::function<std::vector<std::string>(uint16_t)>& args) {
    for (int attempt = 0; attempt < 3; ++attempt) {
      const uint16_t port = patro::bench::free_loopback_port();
      queue_servers.push_back(spawn(args(port), service_cpu(), path));
      Child& c = queue_servers.back();
      for (int i = 0; i < 1000; ++i) {  // 10 s
        if (::waitpid(c.pid, nullptr, WNOHANG) == c.pid) {
          c.pid = -1;  // exited: perhaps the port was taken; the next attempt takes another
          ::close(c.in);
          ::close(c.out);
          break;
        }
        try {
          patro::bench::TcpConn probe(path, port, 1s);
          return port;
        } catch (const std::exception&) {
          std::this_thread::sleep_for(10ms);
        }
      }
      c.stop();
      queue_servers.pop_back();
    }
    throw std::runtime_error(path + " did not start (see its messages above)");
  }

  /// The job queues side by side, in rounds: patro-worker's (take+ack per job and
  /// take_many(100)+ack_many, each in memory and with --data, each row a patro-worker of its
  /// own), beanstalkd's (reserve+delete per job, in memory and with -b DIR -f 0) and Redis
  /// Streams' (XREADGROUP+XACK per job and by 100 in memory, per job with appendonly and
  /// appendfsync always). Each round fills every queue with the same jobs (16 bytes each), then
  /// its 4 consumer processes take and acknowledge them until it is empty; a job counts once
  /// acknowledged. Three rows compare patro-worker with the best peer of its kind.
  template <class Scaled>
  void queue_jobs(uint64_t jobs, int rounds_n, Scaled& scaled) {
    struct Row {
      std::string key, name, note;
      std::function<void(uint64_t)> fill;
      std::optional<Group> group;
      pid_t server = -1;
      uint64_t server_ns = 0, clients_ns = 0;  // CPU time during the rounds
      uint64_t server_wakeups = 0;
      uint64_t per_round = 0, queued = 0;  // jobs in the queue at each round's start; now
    };
    std::vector<Row> rows;
    const Params prm = params(jobs, 30000ms);
    const std::vector<std::string> prm_args = param_args(prm);
    auto patro_row = [&](const std::string& key, const std::string& mode, bool data,
                         const std::string& name) {
      if (!want_row(key)) return;
      std::vector<std::string> flags;
      if (data) flags = {"--data", dir + "/worker-" + key + "-data"};
      std::string conf;
      queue_servers.push_back(start_worker(key, flags, conf));
      auto q =
          std::make_shared<patro::Proxy>(patro::get_proxies(conf, client_options(route)).at(0));
      const pid_t server = queue_servers.back().pid;
      rows.push_back({key, name, "jobs/s",
                      [q](uint64_t n) {
                        for (uint64_t done = 0; done < n;) {  // push_many of 10,000 at a time
                          const uint64_t m = std::min<uint64_t>(10000, n - done);
                          patro::ValueArray batch(m, patro::Value(kJobBody));
                          q->call("push_many", patro::Value(std::move(batch)));
                          done += m;
                        }
                      },
                      worker_group(4, conf, mode, 100, prm), server});
    };
    auto beanstalk_row = [&](const std::string& key, bool durable, const std::string& name,
                             const std::string& note) {
      if (!want_row(key)) return;
      const std::string d = dir + "/beanstalkd-" + key;
      if (durable) std::filesystem::create_directories(d);
      const uint16_t port = start_peer(beanstalkd, [&](uint16_t p) {
        std::vector<std::string> a{"-l", "127.0.0.1", "-p", std::to_string(p)};
        if (durable) a.insert(a.end(), {"-b", d, "-f", "0"});
        return a;
      });
      const pid_t server = queue_servers.back().pid;
      auto producer = std::make_shared<patro::bench::BeanstalkClient>(port, "jobs");
      std::vector<std::string> a{"--role", "beanstalk-client", std::to_string(port), "jobs"};
      a.insert(a.end(), prm_args.begin(), prm_args.end());
      rows.push_back({key, name, note, [producer](uint64_t n) { producer->put_many(kJobBody, n); },
                      spawn_group(4, a, {}), server});
    };
    std::map<uint16_t, pid_t> redis_pid;
    auto redis_at = [&](bool durable) {
      const std::string d = dir + (durable ? "/redis-aof" : "/redis");
      std::filesystem::create_directories(d);
      const uint16_t port = start_peer(redis_server, [&](uint16_t p) {
        return std::vector<std::string>{
            "--port",       std::to_string(p),      "--bind",        "127.0.0.1", "--save", "",
            "--appendonly", durable ? "yes" : "no", "--appendfsync", "always",    "--dir",  d,
            "--logfile",    d + "/redis.log",       "--daemonize",   "no"};
      });
      redis_pid[port] = queue_servers.back().pid;
      return port;
    };
    auto redis_row = [&](const std::string& key, uint16_t port, uint64_t batch,
                         const std::string& name, const std::string& note) {
      if (!want_row(key)) return;
      auto producer = std::make_shared<patro::bench::RedisClient>(port);
      producer->create_group(key, "bench");
      std::vector<std::string> a{"--role", "redis-client", std::to_string(port), key,
                                 std::to_string(batch)};
      a.insert(a.end(), prm_args.begin(), prm_args.end());
      rows.push_back({key, name, note,
                      [producer, key](uint64_t n) { producer->add_many(key, kJobBody, n); },
                      spawn_group(4, a, {}), redis_pid.at(port)});
    };
    if (worker.empty())
      cases.push_back({"patro-worker: skipped (not found)", {}, {}, {}, {}, {}, {}, ""});
    if (beanstalkd.empty())
      cases.push_back({"beanstalkd: skipped (not found)", {}, {}, {}, {}, {}, {}, ""});
    if (redis_server.empty())
      cases.push_back({"redis: skipped (not found)", {}, {}, {}, {}, {}, {}, ""});
    const std::string per_job = "jobs/s; Redis Streams, XREADGROUP COUNT 1 + XACK";
    try {
      const uint16_t redis_mem =
          redis_server.empty() || !(want_row("redis1") || want_row("redis100")) ? 0
                                                                                : redis_at(false);
      const uint16_t redis_aof = redis_server.empty() || !want_row("redis1d") ? 0 : redis_at(true);
      if (!worker.empty()) {
        patro_row("patro1", "take_one", false, "patro-worker queue, 4 consumers, take+ack per job");
        patro_row("patro1t", "ack_take", false,
                  "patro-worker queue, 4 consumers, ack_take per job");
      }
      if (!beanstalkd.empty())
        beanstalk_row("beanstalk1", false, "beanstalkd: 4 consumers, reserve+delete per job",
                      "jobs/s");
      if (redis_mem) redis_row("redis1", redis_mem, 1, "redis: 4 consumers, per job", per_job);
      if (!worker.empty())
        patro_row("patro100", "take_many", false,
                  "patro-worker queue, 4 consumers, take_many(100)+ack_many");
      if (!worker.empty())
        patro_row("patro100f", "take_flat", false,
                  "patro-worker queue, 4 consumers, take_flat(100)+ack_many flat");
      if (redis_mem)
        redis_row("redis100", redis_mem, 100,
                  "redis streams: 4 consumers, XREADGROUP COUNT 100 + XACK of 100", "jobs/s");
      if (!worker.empty())
        patro_row("patro1d", "take_one", true,
                  "patro-worker queue, 4 consumers, take+ack per job, --data");
      if (!beanstalkd.empty())
        beanstalk_row("beanstalk1d", true,
                      "beanstalkd: 4 consumers, reserve+delete per job, -b DIR -f 0",
                      "jobs/s; binlog fsynced at every write");
      if (redis_aof)
        redis_row("redis1d", redis_aof, 1,
                  "redis: 4 consumers, per job, appendonly yes, appendfsync always",
                  per_job + "; fsynced before each reply");
      if (!worker.empty())
        patro_row("patro100d", "take_many", true,
                  "patro-worker queue, 4 consumers, take_many(100)+ack_many, --data");
      // The durable per-job rows take a tenth of the jobs: beanstalkd fsyncs every put as it
      // fills, and the three run at a few hundred to a few thousand jobs a second.
      for (Row& row : rows)
        row.per_round = row.key.back() == 'd' && row.key.find("100") == std::string::npos
                            ? std::max<uint64_t>(prm.count / 10, 1)
                            : prm.count;
      for (int r = 0; r < rounds_n; ++r)
        for (Row& row : rows) {
          // Topped up to per_round: a round cut short by its time leaves jobs for the next.
          if (row.queued < row.per_round) row.fill(row.per_round - row.queued);
          row.queued = std::max(row.queued, row.per_round);
          const double acked0 = row.group->per_s_sum;
          const uint64_t s0 = cpu_ns(row.server), w0 = wakeups(row.server);
          uint64_t c0 = 0;
          for (const Child& c : row.group->procs) c0 += cpu_ns(c.pid);
          chunk(*row.group);
          row.server_ns += cpu_ns(row.server) - s0;
          row.server_wakeups += wakeups(row.server) - w0;
          for (const Child& c : row.group->procs) row.clients_ns += cpu_ns(c.pid);
          row.clients_ns -= c0;
          row.queued -= std::min(row.queued, static_cast<uint64_t>(row.group->per_s_sum - acked0));
        }
    } catch (...) {
      for (Row& row : rows)
        for (Child& c : row.group->procs) c.stop();
      throw;
    }
    std::map<std::string, double> rate;
    for (Row& row : rows) {
      // CPU per job acknowledged: the server's (all its threads) and the 4 consumers' together.
      const double n = std::max(row.group->per_s_sum, 1.0);
      const std::string cpu = "; CPU us per job: server " + num(row.server_ns / 1000.0 / n, 1) +
                              ", consumers " + num(row.clients_ns / 1000.0 / n, 1) +
                              "; server wake-ups per job " + num(row.server_wakeups / n, 2);
      rate[row.key] = end(*row.group).second;
      scaled(row.name, rate[row.key], row.note + cpu);
    }
    // patro-worker over the best peer of the same kind (issue 25 asks for 1.0 or more); the
    // floor columns of these rows hold that peer's rate.
    auto compare = [&](const std::string& name, const std::string& patro_key,
                       const std::vector<std::pair<std::string, std::string>>& peers) {
      std::optional<double> best;
      std::string which;
      for (const auto& [key, label] : peers)
        if (rate.count(key) && (!best || rate[key] > *best)) {
          best = rate[key];
          which = label;
        }
      if (!rate.count(patro_key) || !best) return;
      cases.push_back({name, std::nullopt, std::nullopt, rate[patro_key], std::nullopt, best,
                       over(rate[patro_key], best),
                       "patro-worker over the best peer (" + which +
                           "; its rate is in the floor "
                           "column)"});
    };
    compare("queue per job, 4 consumers: patro-worker / best peer", "patro1",
            {{"beanstalk1", "beanstalkd"}, {"redis1", "redis streams"}});
    compare("queue per job by ack_take, 4 consumers: patro-worker / best peer", "patro1t",
            {{"beanstalk1", "beanstalkd"}, {"redis1", "redis streams"}});
    compare("queue batched by 100, 4 consumers: patro-worker / redis streams", "patro100",
            {{"redis100", "redis streams"}});
    compare("queue batched by 100, flat forms, 4 consumers: patro-worker / redis streams",
            "patro100f", {{"redis100", "redis streams"}});
    compare("queue per job, durable, 4 consumers: patro-worker / best peer", "patro1d",
            {{"beanstalk1d", "beanstalkd -b -f 0"}, {"redis1d", "redis appendfsync always"}});
  }

  /// patro-worker's own log: 4 clients write lines oneway, under --log-sync never and always.
  template <class Scaled>
  void worker_lines(uint64_t lines, Scaled& scaled) {
    if (worker.empty()) {
      if (!want("jobs"))
        cases.push_back({"patro-worker: skipped (not found)", {}, {}, {}, {}, {}, {}, ""});
      return;
    }
    for (const std::string sync : {"never", "always"}) {
      std::string conf;
      Child w = start_worker("log-" + sync, {"--log-sync", sync}, conf);
      try {
        Group p = worker_group(4, conf, "write_oneway", 0,
                               params(sync == "never" ? lines : lines / 10, 2000ms));
        chunk(p);
        scaled("patro-worker log, 4 clients, oneway write, --log-sync " + sync, end(p).second,
               "lines/s");
      } catch (...) {
        w.stop();
        throw;
      }
      w.stop();
    }
  }

  void report(const std::string& machine) const {
    FILE* table = json ? stderr : stdout;
    std::fprintf(table, "%-66s %9s %9s %10s %9s %10s %6s %9s %10s %6s\n", "case", "p50_us",
                 "p99_us", "per_s", "floor_p50", "floor_per_s", "ratio", "ice_p50", "ice_per_s",
                 "/ice");
    for (const Case& c : cases)
      std::fprintf(table, "%-66s %9s %9s %10s %9s %10s %6s %9s %10s %6s  %s\n", c.name.c_str(),
                   num(c.p50).c_str(), num(c.p99).c_str(), num(c.per_s, 0).c_str(),
                   num(c.floor_p50).c_str(), num(c.floor_per_s, 0).c_str(), num(c.ratio).c_str(),
                   num(c.ice_p50).c_str(), num(c.ice_per_s, 0).c_str(), num(c.ice_ratio).c_str(),
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
                      {"ratio", number(c.ratio)},
                      {"ice_p50_us", number(c.ice_p50)},
                      {"ice_per_s", number(c.ice_per_s)},
                      {"ice_ratio", number(c.ice_ratio)},
                      {"note", c.note}});
    const nlohmann::ordered_json out = {
        {"machine", machine},
        {"pin", pin},
        {"dma_latency", dma},
        {"threads", threads},
        {"route", route},
        {"clients", clients},
        {"ice", patro::bench::ice_built() ? "built" : "skipped (not built)"},
        {"ice_ssl", !ice_ssl_cipher.empty() ? ice_ssl_cipher : "skipped (not built or not run)"},
        {"worker", worker.empty() ? "skipped (not found)" : "found"},
        {"beanstalkd", beanstalkd.empty() ? "skipped (not found)" : "found"},
        {"redis", redis_server.empty() ? "skipped (not found)" : "found"},
        {"cases", list}};
    std::printf("%s\n",
                out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  }
};

// ---------------------------------------------------------------------------------------------
// Fail-over: two brokers, a server registered at both, one client that knows both and
// calls get() back to back through the broker. Each round kills the broker the client is using
// (SIGKILL: its connection drops; or SIGSTOP: it hangs, silent) and times its death to the first
// call that succeeds after it (through the other broker); then the broker is started again on
// the same ports, and the next round kills the other one.

struct FailoverResult {
  std::string how;
  std::vector<double> ms;
};

std::vector<FailoverResult> run_failover(int rounds, int heartbeat_ms) {
  auto start_broker = [&](const std::string& front, const std::string& back) {
    Child c = spawn({"--role", "failover-broker", front, back, std::to_string(heartbeat_ms)}, -1);
    auto eps = c.line(10s);
    if (!eps) throw std::runtime_error("a broker did not start");
    return std::pair{std::move(c), *eps};
  };
  std::array<Child, 2> brokers;
  std::array<std::string, 2> fronts, backs;
  for (int i = 0; i < 2; ++i) {
    auto [c, eps] = start_broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*");
    brokers[i] = std::move(c);
    std::istringstream(eps) >> fronts[i] >> backs[i];
  }
  patro::ServerOptions so;
  so.brokers = {backs[0], backs[1]};
  so.heartbeat.interval = std::chrono::milliseconds(heartbeat_ms);
  so.threads = 2;
  patro::Config cfg = patro::patronize(so, patro::Hash{{"k", 1}});
  patro::ClientOptions co;
  co.route = patro::Route::broker;  // the calls pass the brokers
  co.heartbeat.interval = std::chrono::milliseconds(heartbeat_ms);
  co.call_timeout = 30s;
  patro::Proxy p = patro::get_proxies(cfg, co).at(0)["k"];
  std::atomic<bool> stop{false};
  // The latest call that succeeded: when it started and when it ended (steady clock ns; ended is
  // written first, so a reader that sees a start sees its end or a later one).
  std::atomic<int64_t> ok_started{0}, ok_ended{0};
  std::atomic<uint64_t> errors{0};
  std::thread caller([&] {
    while (!stop.load()) {
      const int64_t started = Clock::now().time_since_epoch().count();
      try {
        (void)p.get();
        ok_ended = Clock::now().time_since_epoch().count();
        ok_started = started;
      } catch (const patro::Error&) {
        ++errors;
      }
    }
  });
  std::vector<FailoverResult> out{{"SIGKILL (connection drops)", {}}, {"SIGSTOP (silent)", {}}};
  int using_broker = 0;  // the client starts on the first broker of its list
  for (int r = 0; r < 2 * rounds; ++r) {
    const bool hang = r % 2 == 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2 * heartbeat_ms));  // settled
    Child& victim = brokers[using_broker];
    const auto killed = Clock::now();
    ::kill(victim.pid, hang ? SIGSTOP : SIGKILL);
    // Until the signal took effect (a reply the broker sent before it may still arrive), then
    // until a call started after that succeeds: the fail-over time runs from the kill to its end.
    if (!hang) ::waitpid(victim.pid, nullptr, 0);
    for (int i = 0; hang && i < 10000; ++i) {
      std::ifstream st("/proc/" + std::to_string(victim.pid) + "/stat");
      std::string pid, comm, state;
      st >> pid >> comm >> state;
      if (state == "T") break;
      std::this_thread::sleep_for(10us);
    }
    const int64_t effective = Clock::now().time_since_epoch().count();
    const auto give_up = killed + 30s;
    while (ok_started.load() <= effective && Clock::now() < give_up)
      std::this_thread::sleep_for(100us);
    if (ok_started.load() <= effective)
      throw std::runtime_error("no call succeeded within 30 s of a broker's death");
    const auto ok = Clock::time_point(Clock::duration(ok_ended.load()));
    out[hang ? 1 : 0].ms.push_back(std::chrono::duration<double, std::milli>(ok - killed).count());
    if (hang) {
      ::kill(victim.pid, SIGKILL);
      ::waitpid(victim.pid, nullptr, 0);
    }
    victim.pid = -1;
    ::close(victim.in);
    ::close(victim.out);
    victim = start_broker(fronts[using_broker], backs[using_broker]).first;
    using_broker = 1 - using_broker;
  }
  stop = true;
  caller.join();
  cfg.stop();
  for (Child& c : brokers) c.stop();
  if (errors.load() != 0)
    throw std::runtime_error(std::to_string(errors.load()) + " calls failed during fail-over");
  return out;
}

int report_failover(int rounds, int heartbeat_ms, bool json) {
  const auto results = run_failover(rounds, heartbeat_ms);
  nlohmann::json j = {
      {"heartbeat_ms", heartbeat_ms}, {"rounds", rounds}, {"cases", nlohmann::json::array()}};
  std::fprintf(json ? stderr : stdout,
               "Fail-over: a broker's death to the first successful call through the other "
               "(heartbeat interval %d ms; no call failed)\n",
               heartbeat_ms);
  std::fprintf(json ? stderr : stdout, "%-28s %8s %8s %8s %14s\n", "how the broker died", "min ms",
               "median", "max ms", "max/interval");
  for (const auto& r : results) {
    auto v = r.ms;
    std::sort(v.begin(), v.end());
    const double med = v.empty() ? 0 : v[v.size() / 2];
    const double mx = v.empty() ? 0 : v.back();
    std::fprintf(json ? stderr : stdout, "%-28s %8.1f %8.1f %8.1f %14.2f\n", r.how.c_str(),
                 v.empty() ? 0 : v.front(), med, mx, mx / heartbeat_ms);
    j["cases"].push_back({{"how", r.how},
                          {"ms", r.ms},
                          {"median_ms", med},
                          {"max_ms", mx},
                          {"max_over_interval", mx / heartbeat_ms}});
  }
  if (json) std::printf("%s\n", j.dump().c_str());
  return 0;
}

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
      if (role == "failover-broker") return role_failover_broker(at(2), at(3), std::stoi(at(4)));
      if (role == "patro-server") return role_patro_server(at(2), at(3), std::stoi(at(4)), at(5));
      if (role == "floor-client") return role_floor_client(at(2), at(3), std::stoi(at(4)), prm(5));
      if (role == "patro-client") {
        return role_patro_client(at(2), at(3), at(4), std::stoi(at(5)), prm(6));
      }
      if (role == "worker-client")
        return role_worker_client(at(2), at(3), at(4), std::stoll(at(5)), prm(6));
      if (role == "beanstalk-client")
        return role_beanstalk_client(static_cast<uint16_t>(std::stoi(at(2))), at(3), prm(4));
      if (role == "redis-client")
        return role_redis_client(static_cast<uint16_t>(std::stoi(at(2))), at(3), std::stoull(at(4)),
                                 prm(5));
      if (role == "ice-server") return patro::bench::run_ice_server(std::stoi(at(2)), at(3));
      if (role == "ice-client")
        return role_ice_client(at(2), at(3), std::stoi(at(4)), prm(5), at(7));
      return usage();
    }
    Bench b;
    CLI::App app(
        "Patro against a raw ZeroMQ floor and ZeroC Ice in one run, and patro-worker's queue "
        "(beside beanstalkd and Redis Streams where their servers are in PATH) and log "
        "(docs/BENCHMARKS.md).",
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
    app.add_option(
           "--threads", b.threads,
           "server threads: the floor's and Patro's lanes, Ice's thread pool, patro-worker's")
        ->check(CLI::Range(1, 1024))
        ->capture_default_str();
    app.add_option("--cases", b.only,
                   "which groups of cases to run (also: curve, CURVE against plaintext; chain, "
                   "three dependent calls pipelined against sequential)")
        ->capture_default_str();
    app.add_option("--clients", b.clients_list,
                   "the synchronous N-client-processes case for each N in this list (1 to 64)")
        ->capture_default_str();
    app.add_option("--phase-ms", b.phase_ms,
                   "the measured window of each round of the N-client-processes rows and the "
                   "CURVE 4-client row, in ms (every process calling from before it opens to "
                   "after it closes; the calls that end inside it count)")
        ->check(CLI::Range(100, 60000))
        ->capture_default_str();
    app.add_option("--route", b.route,
                   "the route of Patro's clients: auto (direct to the server; brokered rows "
                   "beside), direct, or broker (brokered rows only)")
        ->check(CLI::IsMember({"auto", "direct", "broker"}))
        ->capture_default_str();
    b.worker = find_worker();
    app.add_option("--worker", b.worker,
                   "patro-worker for its queue and log rows (default: $PATRO_WORKER, else beside "
                   "patro-bench; none found: those rows say skipped)")
        ->type_name("PATH");
    app.add_option(
        "--jobs-rows", b.jobs_rows,
        "only these queue rows of --cases jobs, by key (patro1, beanstalk1, redis1, "
        "patro1t, patro100, patro100f, redis100, patro1d, beanstalk1d, redis1d, patro100d; "
        "comma-separated; default all)");
    app.add_option("--jobs", b.jobs_count, "jobs a round in the queue rows")
        ->check(CLI::Range(uint64_t{100}, uint64_t{100000000}))
        ->capture_default_str();
    bool curve = false;
    app.add_flag("--curve", curve,
                 "also run CURVE against plaintext (get p50, 64 in flight) in the same run");
    int failover_rounds = 0, failover_heartbeat = 1000;
    app.add_option("--failover", failover_rounds,
                   "run only the fail-over case: ROUNDS brokers SIGKILLed and ROUNDS SIGSTOPped "
                   "under a client's back-to-back calls, each timed to the first call that "
                   "succeeds through the other broker")
        ->check(CLI::Range(1, 1000))
        ->type_name("ROUNDS");
    app.add_option("--failover-heartbeat-ms", failover_heartbeat,
                   "the brokers', server's and client's heartbeat interval in the fail-over case")
        ->check(CLI::Range(10, 60000))
        ->capture_default_str();
    if (auto status = patro::cli::parse(app, args)) return *status;
    if (failover_rounds > 0) {
      ::signal(SIGPIPE, SIG_IGN);
      return report_failover(failover_rounds, failover_heartbeat, b.json);
    }
    if (curve && !b.want("curve")) b.only += ",curve";
    try {
      b.clients = parse_counts(b.clients_list);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "patro-bench: %s\n", e.what());
      return 2;
    }
    if (!b.worker.empty() && ::access(b.worker.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "patro-bench: --worker %s: not an executable\n", b.worker.c_str());
      return 2;
    }
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
