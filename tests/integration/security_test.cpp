// Security across processes: CURVE between clients, servers and patro-broker; the
// broker's ZAP handler and its allow lists (reloaded on SIGHUP); names that cannot be hijacked;
// the refusal of plaintext off loopback; and the bytes on the wire, captured by a relay (between
// client and broker, and on the direct path under CURVE).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/loopback_port.hpp"
#include "../support/process.hpp"
#include "socket.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::curve_broker;
using patro::test::Keys;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_name;
using patro::test::write_file;

namespace {

Process worker(const BrokerProcess& b, const Keys& broker_key, const Keys& server_key,
               std::vector<std::string> objects) {
  std::vector<std::string> argv{program("PATRO_WORKER"), "--broker",       b.back,
                                "--broker-key",          broker_key.pub(), "--curve-key",
                                server_key.path,         "--heartbeat-ms", "100"};
  argv.insert(argv.end(), objects.begin(), objects.end());
  return Process(argv);
}

patro::ClientOptions client_options(const std::string& broker_key, const patro::CurveKeyPair& k) {
  patro::ClientOptions o;
  o.connect_timeout = 10s;
  o.curve.broker_key = broker_key;
  o.curve.keys = k;
  return o;
}

// The error a connection attempt ends with (code and text).
patro::Error refusal(const std::string& front, const patro::ClientOptions& o) {
  try {
    (void)patro::get_proxy(front, "hits", o);
  } catch (const patro::Error& e) {
    return e;
  }
  FAIL("the broker accepted a client it should refuse");
  throw std::logic_error("unreachable");
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A TCP relay on 127.0.0.1 between clients and one upstream port, keeping every byte it passes.
class Relay {
 public:
  explicit Relay(int upstream_port) : upstream_(upstream_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listener_, 8) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_) ::close(fd);
    ::close(listener_);
  }
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;
  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  std::string captured() {
    std::lock_guard lock(mu_);
    return bytes_;
  }

 private:
  void run() {
    std::vector<std::pair<int, int>> pairs;  // (from, to)
    while (!stop_) {
      std::vector<pollfd> p{{listener_, POLLIN, 0}};
      for (auto [from, to] : pairs) p.push_back({from, POLLIN, 0});
      if (::poll(p.data(), p.size(), 50) <= 0) continue;
      if (p[0].revents & POLLIN) {
        const int in = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        const int out = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<uint16_t>(upstream_));
        if (in >= 0 && ::connect(out, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
          pairs.push_back({in, out});
          pairs.push_back({out, in});
        }
        fds_.push_back(in);
        fds_.push_back(out);
      }
      std::vector<std::pair<int, int>> live;  // a direction is dropped at its end of file
      for (size_t i = 1; i < p.size(); ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) {
          live.push_back(pairs[i - 1]);
          continue;
        }
        char buf[65536];
        const ssize_t n = ::read(pairs[i - 1].first, buf, sizeof buf);
        if (n <= 0) {
          ::shutdown(pairs[i - 1].second, SHUT_WR);
          continue;
        }
        live.push_back(pairs[i - 1]);
        {
          std::lock_guard lock(mu_);
          if (bytes_.size() < (64u << 20)) bytes_.append(buf, static_cast<size_t>(n));
        }
        for (ssize_t sent = 0, w = 0; sent < n; sent += w) {  // blocking: all of it
          w = ::write(pairs[i - 1].second, buf + sent, static_cast<size_t>(n - sent));
          if (w <= 0) break;
        }
      }
      // Pairs accepted in this turn were not polled yet: they stay.
      for (size_t i = p.size() - 1; i < pairs.size(); ++i) live.push_back(pairs[i]);
      pairs = live;
    }
  }

  int upstream_;
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> fds_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string bytes_;
};

int port_of(const std::string& endpoint) {
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

}  // namespace

TEST_CASE("key files: patro keygen's format, mode 0600, allow lists with comments") {
  if (!patro::curve_available()) return;
  TempDir dir;
  Keys k(dir, "a");
  struct stat st {};
  REQUIRE(::stat(k.path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const patro::CurveKeyPair back = patro::read_key_file(k.path);
  CHECK(back.public_key == k.pair.public_key);
  CHECK(back.secret_key == k.pair.secret_key);
  CHECK(patro::read_public_key(k.pub()) == k.pair.public_key);
  CHECK(patro::read_public_key(k.pair.public_key) == k.pair.public_key);
  CHECK_FALSE(contains(read_file(k.pub()), k.pair.secret_key));
  write_file(dir.file("allow"), "# ops team\n" + k.pair.public_key + "  # alice\n\n");
  CHECK(patro::read_allow_list(dir.file("allow")) == std::vector<std::string>{k.pair.public_key});
  write_file(dir.file("bad"), "not-a-key\n");
  CHECK_THROWS_AS(patro::read_allow_list(dir.file("bad")), patro::Error);

  // patro keygen writes the same, and prints the public key.
  Process keygen({program("PATRO_CLI"), "keygen", dir.file("cli.key")}, dir.file("cli.out"));
  REQUIRE(keygen.wait(20s) == 0);
  const patro::CurveKeyPair cli = patro::read_key_file(dir.file("cli.key"));
  CHECK(contains(read_file(dir.file("cli.out")), cli.public_key));
  REQUIRE(::stat(dir.file("cli.key").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Run again, it refuses to replace the pair (exit 1, the file unchanged) unless --force.
  Process again({"/bin/sh", "-c", "exec \"$0\" keygen \"$1\" 2>&1", program("PATRO_CLI"),
                 dir.file("cli.key")},
                dir.file("again.out"));
  REQUIRE(again.wait(20s) == 1);
  CHECK(contains(read_file(dir.file("again.out")), "exists; patro keygen --force"));
  CHECK(patro::read_key_file(dir.file("cli.key")).secret_key == cli.secret_key);
  Process forced({program("PATRO_CLI"), "keygen", "--force", dir.file("cli.key")},
                 dir.file("forced.out"));
  REQUIRE(forced.wait(20s) == 0);
  CHECK(patro::read_key_file(dir.file("cli.key")).secret_key != cli.secret_key);

  // A config that carries a client key pair is a secret: written 0600.
  patro::Config c({"tcp://127.0.0.1:7170"}, {});
  c.set_broker_key(k.pair.public_key);
  c.to_file(dir.file("public.cfg"));
  c.set_client_key(k.pair);
  c.to_file(dir.file("secret.cfg"));
  REQUIRE(::stat(dir.file("secret.cfg").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  const patro::Config back_cfg = patro::Config::from_file(dir.file("secret.cfg"));
  CHECK(back_cfg.broker_key() == k.pair.public_key);
  CHECK(back_cfg.client_key().secret_key == k.pair.secret_key);
  CHECK(patro::Config::from_file(dir.file("public.cfg")).client_key().empty());
}

TEST_CASE("plaintext off loopback is refused without --insecure") {
  patro::BrokerOptions o;
  o.frontend = "tcp://0.0.0.0:*";
  o.backend = "tcp://127.0.0.1:*";
  try {
    patro::Broker b(o);
    FAIL("a plaintext broker bound 0.0.0.0");
  } catch (const patro::Error& e) {
    CHECK(contains(e.what(), "--insecure"));
  }
  o.frontend = "tcp://127.0.0.1:*";
  o.backend = "tcp://[::]:*";
  CHECK_THROWS_AS(patro::Broker{o}, patro::Error);
  // patro-broker and patro-worker's embedded broker say the same and exit 1, before binding
  // (started by hand, not through BrokerProcess, which waits for a broker that binds).
  TempDir dir;
  Process broker(
      {program("PATRO_BROKER"), "--front", "tcp://0.0.0.0:*", "--back", "tcp://127.0.0.1:*"});
  CHECK(broker.wait(20s) == 1);
  Process w({program("PATRO_WORKER"), "--front", "tcp://0.0.0.0:*", "--back", "tcp://127.0.0.1:*",
             "counter", "n"});
  CHECK(w.wait(20s) == 1);
  // Loopback without keys keeps working, and so does a wildcard with CURVE.
  o.backend = "tcp://127.0.0.1:*";
  CHECK_NOTHROW(patro::Broker{o});
  if (patro::curve_available()) {
    o.frontend = "tcp://0.0.0.0:*";
    o.curve = patro::curve_keypair();
    CHECK_NOTHROW(patro::Broker{o});
  }
}

TEST_CASE("CURVE: allowed peers work end to end; refused ones get a clear error, nothing else") {
  if (!patro::curve_available()) return;
  TempDir dir;
  Keys broker_key(dir, "broker"), alice(dir, "alice"), mallory(dir, "mallory");
  Keys server(dir, "server"), server2(dir, "server2"), rogue(dir, "rogue");
  write_file(dir.file("clients"), "# clients\n" + alice.pair.public_key + "\n");
  write_file(dir.file("servers"),
             server.pair.public_key + "\n" + server2.pair.public_key + "  # the second\n");
  BrokerProcess b(dir, curve_broker(broker_key, dir.file("clients"), dir.file("servers")));
  Process w = worker(
      b, broker_key, server,
      {"queue", "jobs", "log", "events", dir.file("events.log"), "hash", "kv", "counter", "hits"});
  const auto ok = client_options(broker_key.pair.public_key, alice.pair);

  SUBCASE("an allowed client: get, call, lock, queue, log") {
    patro::Proxy kv = wait_for_name(b.front, "kv", ok);
    kv.call("set", "colour", "green");
    CHECK(kv.call("get", "colour") == "green");
    patro::Proxy hits = patro::get_proxy(b.front, "hits", ok);
    hits.call("add", 5);
    CHECK(hits.call("get") == 5);
    CHECK(patro::lock(kv).ok);
    CHECK(patro::lock_state(kv).depth() == 1);
    CHECK(patro::unlock(kv).ok);
    patro::Proxy jobs = patro::get_proxy(b.front, "jobs", ok);
    jobs.call("push", "job-1");
    const patro::Value job = jobs.call("take", 1000);  // [id, job, delivery]
    REQUIRE(job.if_array());
    CHECK(job[1] == "job-1");
    CHECK(jobs.call("ack", job[0], job[2]) == true);
    patro::Proxy events = patro::get_proxy(b.front, "events", ok);
    events.call("print", "hello over CURVE");
    for (int i = 0; i < 200 && !contains(read_file(dir.file("events.log")), "hello over CURVE");
         ++i)
      std::this_thread::sleep_for(10ms);
    CHECK(contains(read_file(dir.file("events.log")), "hello over CURVE"));
    // broker_info (patro ls) with CURVE: the names, to an authenticated client.
    const patro::BrokerInfo info = patro::broker_info(b.front, ok);
    CHECK(info.names.size() == 4);
  }

  SUBCASE("no key, an unlisted key, a server's key, a wrong broker key: refused at once") {
    patro::Proxy hits = wait_for_name(b.front, "hits", ok);
    const uint64_t routed = patro::broker_info(b.front, ok).stats.routed;

    patro::ClientOptions plain;
    plain.connect_timeout = 10s;
    const patro::Error none = refusal(b.front, plain);
    MESSAGE(std::string(none.what()));
    CHECK(none.code() == patro::Errc::not_authorized);
    CHECK(contains(none.what(), "requires CURVE"));

    const patro::Error unlisted =
        refusal(b.front, client_options(broker_key.pair.public_key, mallory.pair));
    CHECK(unlisted.code() == patro::Errc::not_authorized);
    CHECK(contains(unlisted.what(), "allow list"));

    const patro::Error server_on_client_port =
        refusal(b.front, client_options(broker_key.pair.public_key, server.pair));
    CHECK(server_on_client_port.code() == patro::Errc::not_authorized);

    const patro::Error wrong_broker =
        refusal(b.front, client_options(mallory.pair.public_key, alice.pair));
    MESSAGE(std::string(wrong_broker.what()));
    CHECK(wrong_broker.code() == patro::Errc::not_authorized);
    CHECK(contains(wrong_broker.what(), "broker key"));

    // Nothing they sent reached a server; the refusals are counted.
    const patro::BrokerInfo info = patro::broker_info(b.front, ok);
    CHECK(info.stats.routed == routed);
    CHECK(info.stats.refused >= 2);
    CHECK(hits.call("get") == 0);
  }

  SUBCASE("the allow list is read again on SIGHUP") {
    (void)wait_for_name(b.front, "hits", ok);
    const auto m = client_options(broker_key.pair.public_key, mallory.pair);
    CHECK(refusal(b.front, m).code() == patro::Errc::not_authorized);
    write_file(dir.file("clients"), alice.pair.public_key + "\n" + mallory.pair.public_key + "\n");
    b.proc->signal(SIGHUP);
    bool accepted = false;
    for (int i = 0; i < 100 && !accepted; ++i) {
      try {
        (void)patro::get_proxy(b.front, "hits", m);
        accepted = true;
      } catch (const patro::Error&) {
        std::this_thread::sleep_for(50ms);
      }
    }
    CHECK(accepted);
  }

  SUBCASE("a server not on the list cannot register") {
    (void)wait_for_name(b.front, "hits", ok);
    Process r = worker(b, broker_key, rogue, {"counter", "stolen"});
    CHECK(r.wait(30s) == 1);
    const patro::BrokerInfo info = patro::broker_info(b.front, ok);
    CHECK(info.servers.size() == 1);
    for (const auto& n : info.names) CHECK(n.name != "stolen");
  }

  SUBCASE("a name cannot be hijacked, and frees when its owner dies") {
    patro::Proxy first = wait_for_name(b.front, "hits", ok);
    first.call("add", 7);
    Process thief = worker(b, broker_key, server2, {"counter", "hits"});
    CHECK(thief.wait(30s) == 1);  // patronize failed: name_taken, naming the owner
    CHECK(patro::get_proxy(b.front, "hits", ok).call("get") == 7);
    // The owner dies (no goodbye): after its heartbeats stop, the name is free again.
    w.signal(SIGKILL);
    (void)w.wait(10s);
    bool freed = false;
    for (int i = 0; i < 200 && !freed; ++i) {
      const patro::BrokerInfo info = patro::broker_info(b.front, ok);
      freed = std::none_of(info.names.begin(), info.names.end(),
                           [](const patro::BrokerName& n) { return n.name == "hits"; });
      if (!freed) std::this_thread::sleep_for(25ms);
    }
    REQUIRE(freed);
    Process heir = worker(b, broker_key, server2, {"counter", "hits"});
    patro::Proxy second = wait_for_name(b.front, "hits", ok);
    CHECK(second.call("get") == 0);  // the new owner's counter
    // Restarted at once, before the broker sees the old process dead: the new process asks
    // again until the name frees, and gets it (no name_taken within its connect timeout).
    second.call("add", 3);
    heir.signal(SIGKILL);
    (void)heir.wait(10s);
    Process again = worker(b, broker_key, server2, {"counter", "hits"});
    bool moved = false;
    for (int i = 0; i < 400 && !moved; ++i) {
      try {
        moved = patro::get_proxy(b.front, "hits", ok).id().server != second.id().server;
      } catch (const patro::Error&) {
      }
      if (!moved) std::this_thread::sleep_for(25ms);
    }
    CHECK(moved);
    CHECK_FALSE(again.wait(0ms).has_value());  // still serving
    again.stop();
    patro::remove_stale_lock_segments();  // the killed workers'
  }
  w.stop();
  b.proc->stop();
}

TEST_CASE("a relay between client and broker sees served values only without CURVE") {
  if (!patro::curve_available()) return;
  const std::string marker = "served-value-in-clear-7f3a9c";
  for (const bool curve : {false, true}) {
    CAPTURE(curve);
    patro::BrokerOptions bo;
    bo.frontend = bo.backend = "tcp://127.0.0.1:*";
    patro::CurveKeyPair broker_keys, client_keys;
    if (curve) {
      broker_keys = bo.curve = patro::curve_keypair();
      client_keys = patro::curve_keypair();
      bo.allow_clients = {client_keys.public_key};
    }
    patro::Broker broker(bo);
    std::thread runner([&] { broker.run(); });
    struct Join {  // the broker stops and its thread is joined however the block ends
      patro::Broker& b;
      std::thread& t;
      ~Join() {
        b.stop();
        t.join();
      }
    } join{broker, runner};
    {
      patro::ServerOptions so;
      so.broker = broker.backend_endpoint();
      so.threads = 1;
      so.curve.broker_key = broker_keys.public_key;
      patro::Hash h{{"secret", marker}};
      patro::Config served = patro::patronize(so, patro::named("vault", h));
      CHECK(served.broker_key() == broker_keys.public_key);
      Relay relay(port_of(broker.frontend_endpoint()));
      patro::ClientOptions co;
      co.curve.broker_key = broker_keys.public_key;
      co.curve.keys = client_keys;
      patro::Proxy vault = patro::get_proxy(relay.endpoint(), "vault", co);
      CHECK(vault["secret"].get() == marker);
      vault["other"] = marker + "-written";
      CHECK(contains(relay.captured(), marker) == !curve);
      served.stop();
    }
  }
}

namespace {

// An in-process CURVE broker whose client allow list is a file (reloaded by reload()), run on a
// thread of its own and stopped however the test ends.
struct CurveBroker {
  patro::CurveKeyPair keys = patro::curve_keypair();
  std::string allow_file;
  std::unique_ptr<patro::Broker> broker;
  std::thread runner;
  CurveBroker(const TempDir& dir, const std::vector<std::string>& clients) {
    allow_file = dir.file("clients.allow");
    allow(clients);
    patro::BrokerOptions bo;
    bo.frontend = bo.backend = "tcp://127.0.0.1:*";
    bo.curve = keys;
    bo.allow_clients_file = allow_file;
    broker = std::make_unique<patro::Broker>(bo);
    runner = std::thread([this] { broker->run(); });
  }
  ~CurveBroker() {
    broker->stop();
    runner.join();
  }
  void allow(const std::vector<std::string>& clients) {
    std::string text;
    for (const auto& k : clients) text += k + "\n";
    write_file(allow_file, text);
  }
};

// A raw CURVE DEALER to a server's direct endpoint with the given pair: whether a HEARTBEAT sent
// there is answered within the wait (the handshake admitted the key).
bool direct_answers(const std::string& endpoint, const std::string& server_key,
                    const patro::CurveKeyPair& keys, std::chrono::milliseconds wait) {
  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey, server_key);
  s.set(zmq::sockopt::curve_publickey, keys.public_key);
  s.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  s.connect(endpoint);
  patro::detail::Multipart hb;
  hb.push_back(patro::detail::header_frame(patro::detail::Command::heartbeat));
  hb.push_back(patro::detail::u64_frame(7));
  if (!patro::detail::send_multipart(s, hb, true)) {
    // Queued until the handshake is done (no ZMQ_IMMEDIATE here).
  }
  s.set(zmq::sockopt::rcvtimeo, static_cast<int>(wait.count()));
  patro::detail::Multipart m;
  return patro::detail::recv_multipart(s, m);
}

}  // namespace

TEST_CASE(
    "the direct path under CURVE: encrypted end to end (a relay on the direct port sees no "
    "plaintext), open only to keys a broker vouched for, closed when a key is revoked") {
  if (!patro::curve_available()) return;
  TempDir dir;
  const patro::CurveKeyPair client_keys = patro::curve_keypair(),
                            server_keys = patro::curve_keypair();
  CurveBroker b(dir, {client_keys.public_key});
  const std::string marker = "served-over-the-direct-path-4e1b";
  // The server's lane binds a port of its own and advertises the relay in front of it.
  const int direct_port = [] {
    patro::test::LoopbackPort p;
    return port_of(p.endpoint);
  }();
  Relay relay(direct_port);
  patro::ServerOptions so;
  so.broker = b.broker->backend_endpoint();
  so.threads = 1;
  so.curve.broker_key = b.keys.public_key;
  so.curve.keys = server_keys;
  so.direct = "tcp://127.0.0.1:" + std::to_string(direct_port);
  so.direct_advertise = relay.endpoint();
  patro::Hash h{{"secret", marker}};
  patro::Config served = patro::patronize(so, patro::named("vault", h));
  struct Stop {
    patro::Config& c;
    ~Stop() { c.stop(); }
  } stop{served};

  // A client of the broker that never located the server, and a key the broker does not know:
  // the server admits neither.
  CHECK_FALSE(direct_answers(relay.endpoint(), server_keys.public_key, client_keys, 500ms));
  CHECK_FALSE(
      direct_answers(relay.endpoint(), server_keys.public_key, patro::curve_keypair(), 500ms));

  patro::ClientOptions co;
  co.route = patro::Route::direct;  // refused before: "the direct path is plaintext only"
  co.connect_timeout = 10s;
  co.call_timeout = 10s;
  co.curve.broker_key = b.keys.public_key;
  co.curve.keys = client_keys;
  patro::Proxy vault = patro::get_proxy(b.broker->frontend_endpoint(), "vault", co);
  CHECK(vault["secret"].get() == marker);
  vault["other"] = marker + "-written";
  CHECK(vault["other"].get() == marker + "-written");
  const std::string wire = relay.captured();
  CHECK(wire.size() > 2 * marker.size());  // the calls went by the relay: the direct path
  CHECK_FALSE(contains(wire, marker));
  // Now that the broker vouched for it, the key is admitted (a raw socket with it answers).
  CHECK(direct_answers(relay.endpoint(), server_keys.public_key, client_keys, 5s));

  // The key leaves the allow list: its live direct session is refused by the server.
  b.allow({patro::curve_keypair().public_key});
  b.broker->reload();
  std::optional<patro::Errc> refused;
  for (int i = 0; i < 200 && !refused; ++i) {
    try {
      (void)vault["secret"].get();
      std::this_thread::sleep_for(25ms);
    } catch (const patro::Error& e) {
      refused = e.code();
    }
  }
  CHECK(refused == patro::Errc::not_authorized);
}
