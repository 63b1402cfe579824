// The direct path: requests go straight to their server's lane when it can be reached,
// through the broker otherwise; a direct connection killed mid-stream loses no call, runs none
// twice and keeps the client's order; a client that spoke only directly still has its locks
// released when it dies. Counters (broker_info) show which way requests went.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

// A TCP port forwarder on loopback (a NAT's port forward), which the test can cut: every
// connection through it closes and its ports refuse new ones, as a firewall or a dead route does.
class TcpForwarder {
 public:
  // Listens on free consecutive ports, one per target port.
  explicit TcpForwarder(std::vector<int> targets) : targets_(std::move(targets)) {
    for (int attempt = 0; attempt < 50 && listeners_.empty(); ++attempt) {
      const int base = 20000 + static_cast<int>((::getpid() * 7919 + attempt * 104729) % 40000);
      std::vector<int> fds;
      for (size_t i = 0; i < targets_.size(); ++i) {
        const int fd = listen_on(base + static_cast<int>(i));
        if (fd < 0) break;
        fds.push_back(fd);
      }
      if (fds.size() == targets_.size()) {
        listeners_ = fds;
        base_ = base;
      } else {
        for (int fd : fds) ::close(fd);
      }
    }
    REQUIRE(!listeners_.empty());
    thread_ = std::thread([this] { run(); });
  }
  ~TcpForwarder() { cut(); }
  int base() const { return base_; }

  /// Closes every connection and every listening port.
  void cut() {
    if (stop_.exchange(true)) return;
    thread_.join();
    for (int fd : listeners_) ::close(fd);
    for (auto& [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    pairs_.clear();
  }

  /// A free port for a server to bind (bound and released: another process may take it first,
  /// which the caller sees as a failed bind).
  static int free_port_pair() {
    for (int attempt = 0; attempt < 50; ++attempt) {
      const int base = 20000 + static_cast<int>((::getpid() * 31 + attempt * 7717 + 911) % 40000);
      const int a = listen_on(base), b = listen_on(base + 1);
      if (a >= 0) ::close(a);
      if (b >= 0) ::close(b);
      if (a >= 0 && b >= 0) return base;
    }
    return -1;
  }

 private:
  static int listen_on(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }
  static int connect_to(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    if (fd >= 0) ::close(fd);
    return -1;
  }
  static bool pass(int from, int to) {
    char buf[65536];
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return false;
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
      if (w <= 0) return false;
      off += w;
    }
    return true;
  }
  void run() {
    while (!stop_.load()) {
      std::vector<pollfd> fds;
      for (int fd : listeners_) fds.push_back({fd, POLLIN, 0});
      for (auto& [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      for (size_t i = 0; i < listeners_.size(); ++i) {
        if (!(fds[i].revents & POLLIN)) continue;
        const int in = ::accept4(listeners_[i], nullptr, nullptr, SOCK_CLOEXEC);
        if (in < 0) continue;
        const int out = connect_to(targets_[i]);
        if (out < 0) {
          ::close(in);
          continue;
        }
        pairs_.emplace_back(in, out);
      }
      std::vector<std::pair<int, int>> keep;
      for (size_t p = 0; p < pairs_.size() && listeners_.size() + 2 * p + 1 < fds.size(); ++p) {
        const auto [a, b] = pairs_[p];
        bool ok = true;
        if (fds[listeners_.size() + 2 * p].revents & (POLLIN | POLLHUP | POLLERR)) ok = pass(a, b);
        if (ok && (fds[listeners_.size() + 2 * p + 1].revents & (POLLIN | POLLHUP | POLLERR)))
          ok = pass(b, a);
        if (ok) {
          keep.emplace_back(a, b);
        } else {
          ::close(a);
          ::close(b);
        }
      }
      for (size_t p = fds.size() > listeners_.size() ? (fds.size() - listeners_.size()) / 2 : 0;
           p < pairs_.size(); ++p)
        keep.push_back(pairs_[p]);  // accepted during this turn
      pairs_.swap(keep);
    }
  }

  std::vector<int> targets_;
  std::vector<int> listeners_;
  int base_ = 0;
  std::vector<std::pair<int, int>> pairs_;  // the forwarder's thread, then cut()
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The test server serves: 0 a hash, 1 an array ("jobs"), 2 a hash {"n": 0}, 3 a Slow object.
struct Cluster {
  TempDir dir;
  BrokerProcess broker{dir};
  std::string conf;
  std::unique_ptr<Process> server;

  explicit Cluster(std::vector<std::string> extra = {}) {
    conf = dir.file("server.conf");
    std::vector<std::string> argv{program("PATRO_TEST_SERVER"),
                                  conf,
                                  "--broker",
                                  broker.back,
                                  "--heartbeat-ms",
                                  "100",
                                  "--threads",
                                  "2"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server = std::make_unique<Process>(argv);
    REQUIRE(wait_for_file(conf, 20s));
  }
  ~Cluster() {
    if (server) server->stop();
    broker.proc->stop();
  }
  std::vector<patro::Proxy> connect(patro::Route route) const {
    patro::ClientOptions o;
    o.heartbeat.interval = 100ms;
    o.call_timeout = 60s;
    o.route = route;
    return patro::get_proxies(conf, o);
  }
  patro::BrokerInfo info() const {
    patro::ClientOptions o;
    o.route = patro::Route::broker;
    return patro::broker_info(broker.front, o);
  }
  patro::BrokerServer counts() const {
    auto i = info();
    REQUIRE(i.servers.size() == 1);
    return i.servers.front();
  }
  // Waits (bounded) until the server's counters, which its heartbeats carry, satisfy pred.
  template <class Pred>
  patro::BrokerServer wait_counts(Pred pred) const {
    patro::BrokerServer c;
    for (int i = 0; i < 200; ++i) {
      c = counts();
      if (pred(c)) return c;
      std::this_thread::sleep_for(25ms);
    }
    return c;
  }
};

}  // namespace

TEST_CASE("route=direct: every request takes the direct path; the broker forwards none") {
  Cluster c;
  const uint64_t routed = c.info().stats.routed;
  auto ps = c.connect(patro::Route::direct);
  patro::Proxy n = ps.at(2)["n"];
  constexpr int kCalls = 200;
  for (int i = 0; i < kCalls; ++i) n.add(1);
  CHECK(n.get() == kCalls);
  const auto counts = c.wait_counts([](const patro::BrokerServer& s) { return s.direct >= 201; });
  CHECK(counts.direct == kCalls + 1);
  CHECK(counts.brokered == 0);
  CHECK(c.info().stats.routed == routed);
}

TEST_CASE("route=auto goes direct once the server answers there; route=broker stays brokered") {
  Cluster c;
  constexpr int kCalls = 200;
  {
    auto ps = c.connect(patro::Route::automatic);
    patro::Proxy n = ps.at(2)["n"];
    for (int i = 0; i < kCalls; ++i) n.add(1);
    CHECK(n.get() == kCalls);
  }
  auto after_auto =
      c.wait_counts([](const patro::BrokerServer& s) { return s.direct + s.brokered >= 201; });
  CHECK(after_auto.direct + after_auto.brokered == kCalls + 1);
  CHECK(after_auto.direct > 0);
  const uint64_t routed = c.info().stats.routed;
  {
    auto ps = c.connect(patro::Route::broker);
    patro::Proxy n = ps.at(2)["n"];
    for (int i = 0; i < kCalls; ++i) n.add(1);
    CHECK(n.get() == 2 * kCalls);
  }
  auto after_broker = c.wait_counts(
      [&](const patro::BrokerServer& s) { return s.brokered >= after_auto.brokered + kCalls + 1; });
  CHECK(after_broker.brokered == after_auto.brokered + kCalls + 1);
  CHECK(after_broker.direct == after_auto.direct);
  CHECK(c.info().stats.routed == routed + kCalls + 1);
}

TEST_CASE("calls from several threads on one connection: each runs once, in its thread's order") {
  // Calls made while another thread holds the socket wait in the outbox and leave with the
  // others queued for the same server (a bundle, when more than one): none is lost or doubled,
  // and each thread's run in the order it made them.
  Cluster c;
  auto ps = c.connect(patro::Route::direct);
  patro::Proxy jobs = ps.at(1);
  constexpr int kThreads = 4, kCalls = 300;
  std::vector<std::future<void>> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.push_back(std::async(std::launch::async, [&, t] {
      std::vector<patro::Future<patro::Value>> pending;
      for (int i = 0; i < kCalls; ++i) {
        pending.push_back(jobs.async_push(t * 1000 + i));
        if (pending.size() >= 16) {
          for (auto& f : pending) (void)f.get();
          pending.clear();
        }
      }
      for (auto& f : pending) (void)f.get();
    }));
  for (auto& t : threads) {
    REQUIRE(t.wait_for(120s) == std::future_status::ready);
    CHECK_NOTHROW(t.get());
  }
  REQUIRE(jobs.size() == static_cast<size_t>(kThreads * kCalls));
  std::vector<int> next(kThreads, 0);
  bool each_once_in_order = true;
  for (int i = 0; i < kThreads * kCalls; ++i) {
    const auto n = jobs[i].get().as<int64_t>();
    const auto t = static_cast<size_t>(n / 1000);
    each_once_in_order = each_once_in_order && t < next.size() && n % 1000 == next[t]++;
  }
  CHECK(each_once_in_order);
  CHECK(next == std::vector<int>(kThreads, kCalls));
  MESSAGE("bundles sent: " << patro::client(jobs).stats().bundles_sent);
}

TEST_CASE("a config's route applies; a bad one is a clear error") {
  Cluster c;
  patro::Config cfg = patro::Config::from_file(c.conf);
  cfg.set_route("broker");
  patro::ClientOptions o;
  o.heartbeat.interval = 100ms;
  auto ps = patro::get_proxies(cfg, o);
  for (int i = 0; i < 10; ++i) ps.at(2)["n"].add(1);
  auto counts = c.wait_counts([](const patro::BrokerServer& s) { return s.brokered >= 10; });
  CHECK(counts.brokered == 10);
  CHECK(counts.direct == 0);
  CHECK_THROWS_AS(patro::parse_route("sideways"), patro::Error);
  std::string text = cfg.to_string();
  const auto at = text.find("\"broker\"");
  REQUIRE(at != std::string::npos);
  text.replace(at, 8, "\"nowhere\"");
  CHECK_THROWS_AS(patro::Config::parse(text), patro::Error);
}

namespace {
// Paced adds and pushes on the direct path, whose connection is cut mid-stream: each turn's add
// and push sent at once, or (bundled) together in one bundle, which the closed connection refuses
// whole; then it goes again call by call, the way the route then takes.
void cut_mid_stream(bool bundled) {
  const int bound = TcpForwarder::free_port_pair();
  REQUIRE(bound > 0);
  TcpForwarder forwarder({bound, bound + 1});
  Cluster c({"--direct", "tcp://127.0.0.1:" + std::to_string(bound), "--direct-advertise",
             "tcp://127.0.0.1:" + std::to_string(forwarder.base())});
  auto ps = c.connect(patro::Route::automatic);
  patro::Proxy n = ps.at(2)["n"];
  patro::Proxy jobs = ps.at(1);
  constexpr int kCalls = 600;
  std::atomic<int> done{0};
  // Paced: an add and a push of the sequence number each turn, a few pushes in flight at once.
  auto worker = std::async(std::launch::async, [&] {
    std::vector<patro::Future<patro::Value>> pending;
    for (int i = 0; i < kCalls; ++i) {
      if (bundled) {
        const patro::Bundle together(n);
        pending.push_back(n.async_add(1));
        pending.push_back(jobs.async_push(i));
      } else {
        n.add(1);
        pending.push_back(jobs.async_push(i));
      }
      if (pending.size() >= 8) {
        for (auto& f : pending) (void)f.get();
        pending.clear();
      }
      done = i + 1;
      std::this_thread::sleep_for(1ms);
    }
    for (auto& f : pending) (void)f.get();
  });
  // Cut once a good part went directly (bounded).
  bool direct_seen = false;
  for (int i = 0; i < 400 && !direct_seen && done.load() < kCalls; ++i) {
    direct_seen = c.counts().direct >= 50;
    if (!direct_seen) std::this_thread::sleep_for(10ms);
  }
  CHECK(direct_seen);
  forwarder.cut();
  const int at_cut = done.load();
  CHECK(at_cut < kCalls);
  REQUIRE(worker.wait_for(120s) == std::future_status::ready);
  CHECK_NOTHROW(worker.get());
  if (bundled) CHECK(patro::client(n).stats().bundles_sent > 0);
  CHECK(n.get() == kCalls);
  REQUIRE(jobs.size() == static_cast<size_t>(kCalls));
  bool in_order = true;
  for (int i = 0; i < kCalls && in_order; ++i) in_order = jobs[i].get() == i;
  CHECK(in_order);
  const auto counts = c.wait_counts([](const patro::BrokerServer& s) { return s.brokered > 0; });
  CHECK(counts.direct >= 50);
  CHECK(counts.brokered > 0);  // the calls after the cut went through the broker
}
}  // namespace

TEST_CASE(
    "the direct connection cut mid-stream: paced adds all land exactly once, in order, through "
    "the broker after the fallback") {
  for (const bool bundled : {false, true}) {
    CAPTURE(bundled);
    cut_mid_stream(bundled);
  }
}

TEST_CASE("a client that spoke only directly is SIGKILLed holding a lock: the lock is released") {
  Cluster c;
  patro::Config cfg = patro::Config::from_file(c.conf);
  cfg.set_route("direct");
  const std::string direct_conf = c.dir.file("direct.conf");
  cfg.to_file(direct_conf);
  const std::string token_file = c.dir.file("token");
  Process holder({program("PATRO_TEST_CLIENT"), "hold", direct_conf, "0", token_file});
  REQUIRE(wait_for_file(token_file, 20s));
  const auto counts = c.wait_counts([](const patro::BrokerServer& s) { return s.direct > 0; });
  CHECK(counts.direct > 0);
  CHECK(counts.brokered == 0);  // the holder never used the broker's route
  auto p = c.connect(patro::Route::broker).at(0);
  auto granted = std::async(std::launch::async, [&] { return patro::lock(p, 20s); });
  CHECK(granted.wait_for(300ms) == std::future_status::timeout);  // held
  holder.signal(SIGKILL);
  auto r = granted.get();
  CHECK(r);
  CHECK(patro::unlock(p));
}
