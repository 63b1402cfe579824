#include "server.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <deque>

#include "dispatcher.hpp"
#include "executor.hpp"
#include "ids.hpp"
#include "lane.hpp"
#include "log.hpp"
#include "os_failure.hpp"
#include "outbox.hpp"
#include "watchdog.hpp"
#include "wire.hpp"

namespace patro::detail {

using Clock = std::chrono::steady_clock;

// A lane's control channel is an eventfd and its outbox's queue rather than a ZeroMQ socket: a raw
// fd in the lane's poll costs no extra system calls per request, where each ZeroMQ socket polled
// does. The lane's own state lives on its thread, in a Lane (lane.hpp).
struct Server::LaneThread {
  unsigned index = 0;
  std::thread thread;
  int wake_fd = -1;                // eventfd: stop, or late replies queued in the outbox
  std::shared_ptr<Outbox> outbox;  // the sink of the lane's patro::Deferred replies

  ~LaneThread() {
    if (wake_fd >= 0) ::close(wake_fd);
  }
};

namespace {
// SplitMix64's finalizer: distinct inputs give distinct, scattered outputs.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// FNV-1a over a name: with mix64, a named object's id follows from the server id and its name.
uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

unsigned thread_count(const ServerOptions& o) {
  if (o.threads > 0) return o.threads;
  if (const char* env = std::getenv("PATRO_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n > 0 && n <= static_cast<long>(o.limits.max_lanes))
      return static_cast<unsigned>(n);
    PATRO_LOG(warn, "server") << "ignoring PATRO_THREADS='" << env << "' (want 1.."
                              << o.limits.max_lanes << ")";
  }
  return 4;
}

// The host and port of "tcp://host:port"; nullopt for any other endpoint.
std::optional<std::pair<std::string, std::string>> split_tcp(const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return std::nullopt;
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon <= 6) return std::nullopt;
  return std::pair{endpoint.substr(6, colon - 6), endpoint.substr(colon + 1)};
}

// Whether a direct endpoint stays on this host (loopback, ipc://, inproc://): anything else is
// bound in plaintext off loopback only with ServerOptions::insecure, as the broker's ports.
bool stays_on_host(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  auto hp = split_tcp(endpoint);
  if (!hp) return false;
  std::string host = hp->first;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return host.rfind("127.", 0) == 0 || host == "::1" || host == "localhost" || host == "lo";
}

// "tcp://host:port" with port + offset; nullopt if the port is not a number.
std::optional<std::string> port_plus(const std::string& endpoint, unsigned offset) {
  auto hp = split_tcp(endpoint);
  if (!hp) return std::nullopt;
  char* end = nullptr;
  const long port = std::strtol(hp->second.c_str(), &end, 10);
  if (end == hp->second.c_str() || *end != '\0' || port <= 0 || port + offset > 65535)
    return std::nullopt;
  return "tcp://" + hp->first + ":" + std::to_string(port + offset);
}

// The IPv4 address this host uses to reach host (connecting a UDP socket sends nothing).
std::optional<std::string> local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), "9", &hints, &res) != 0 || res == nullptr) return std::nullopt;
  std::optional<std::string> out;
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && ::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    char buf[INET_ADDRSTRLEN];
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
        ::inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf) != nullptr)
      out = buf;
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(res);
  return out;
}

std::shared_ptr<Node> served_node(const Value& v) {
  if (auto node = node_of(v)) return node;
  Value stored = stored_form(v);
  if (auto node = node_of(stored)) return node;
  // A plain scalar value is served as a scalar reference, as Perl's \$x.
  auto s = std::make_shared<ScalarNode>();
  MutexLock lock(s->mu);
  s->value = std::move(stored);
  return s;
}
}  // namespace

Server::Server(const ServerOptions& options, std::vector<Named> objects)
    : options_(options),
      objects_(options.server_id != 0 ? options.server_id : random_id(), options.reference_lease),
      served_(std::move(objects)),
      replies_(options.limits) {
  options_.threads = thread_count(options_);
  if (options_.server_secret.size() > kMaxServerSecret)
    throw Error(Errc::invalid_argument,
                "ServerOptions::server_secret is " + std::to_string(options_.server_secret.size()) +
                    " bytes (at most " + std::to_string(kMaxServerSecret) + ")");
  (void)log_level();  // reads the environment now: the wire trace (PATRO_DEBUG) is then known
  patro::remove_stale_lock_segments();
  if (options_.name.empty()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "pid%d-%016llx", static_cast<int>(getpid()),
                  static_cast<unsigned long long>(objects_.server_id()));
    options_.name = buf;
  }
  LockLimits ll;
  ll.max_depth = options_.limits.max_lock_depth;
  ll.max_waiters = options_.limits.max_lock_waiters;
  ll.segment_size = options_.limits.lock_segment_bytes;
  locks_ = std::make_unique<LockTable>(options_.name, options_.steal_lock_ok, ll);
  for (auto& named : served_) {
    if (const Reference* r = named.object.if_reference(); r && !r->node)
      throw Error(Errc::invalid_argument,
                  "cannot serve a proxy; serve the object on its own server");
    auto node = served_node(named.object);
    named.object = reference_to(node);
    // With a fixed server id, the served objects' ids follow from it and their name (a named
    // one: the order they are served in may change across restarts) or their position.
    const uint64_t fixed = options_.server_id == 0 ? 0
                           : named.name.empty()
                               ? mix64(options_.server_id + entries_.size() + 1)
                               : mix64(mix64(options_.server_id) ^ name_hash(named.name));
    const ObjectId id = fixed != 0 ? objects_.pin(node, fixed) : objects_.pin(node);
    entries_.push_back(ObjectEntry{id, node->type_name(), node->reftype()});
  }
  std::unordered_map<uint64_t, std::vector<std::string>> names;
  for (size_t i = 0; i < served_.size(); ++i)
    if (!served_[i].name.empty()) names[entries_[i].id.object].push_back(served_[i].name);
  rights_ = std::make_unique<ClientRights>(std::move(names), objects_);
}

Server::~Server() {
  stop();
  if (fincheck_thread_.joinable()) fincheck_thread_.join();  // it stopped the server itself
}

void Server::client_seen(uint64_t client_id) {
  MutexLock lock(mu_);
  clients_.insert(client_id);
}

void Server::client_left(uint64_t client_id) {
  MutexLock lock(mu_);
  if (clients_.erase(client_id) > 0 && clients_.empty()) idle_since_ = Clock::now();
}

void Server::fincheck_main() {
  const auto period = std::max(options_.fincheck_freq, std::chrono::milliseconds(1));
  MutexLock lock(mu_);
  while (!stopped_) {
    cv_.wait_for(lock.native(), period);
    if (stopped_) return;
    const auto now = Clock::now();
    if (!clients_.empty() || now - idle_since_ < options_.idle_timeout ||
        now - started_ < options_.keep_alive)
      continue;
    PATRO_LOG(info, "server") << "no client for " << options_.idle_timeout.count()
                              << " ms: shutting down (idle_timeout)";
    lock.unlock();
    stop_server(true);
    return;
  }
}

Config Server::start() {
  const auto deadline = Clock::now() + options_.connect_timeout;  // handshake and registration
  const std::string& d = options_.direct;
  if (!options_.insecure && !d.empty() && d != "none" && d != "auto" && !stays_on_host(d)) {
    const bool embedded = options_.broker.empty() && options_.brokers.empty();
    if (embedded ? options_.curve.keys.empty() : !detail::resolve_curve(options_.curve).enabled())
      throw Error(Errc::invalid_argument,
                  "refusing to bind the direct path at " + d +
                      " without CURVE: off loopback anyone who reaches the port could read and "
                      "change every served object. Use CURVE (the direct path is then encrypted "
                      "and admits the clients a broker vouches for), a loopback endpoint, or pass "
                      "--insecure (ServerOptions::insecure) to accept plaintext on purpose");
  }
  curve_ = options_.curve;
  if (options_.broker.empty() && options_.brokers.empty()) {
    BrokerOptions bo;
    bo.frontend = "tcp://127.0.0.1:*";
    bo.backend = "tcp://127.0.0.1:*";
    bo.heartbeat = options_.heartbeat;
    bo.limits = options_.limits;
    if (!curve_.keys.empty()) {
      // An embedded broker with CURVE: the server's pair is the broker's, and only it may
      // register.
      bo.curve = curve_.keys;
      bo.allow_servers = {curve_.keys.public_key};
      curve_.broker_key = curve_.keys.public_key;
    }
    broker_ = std::make_unique<Broker>(bo);
    broker_endpoint_ = broker_->backend_endpoint();
    broker_thread_ = std::thread([this] { broker_->run(); });
    broker_endpoints_ = {broker_endpoint_};
  } else {
    broker_endpoints_ =
        options_.brokers.empty() ? std::vector<std::string>{options_.broker} : options_.brokers;
    broker_endpoint_ = broker_endpoints_.front();
  }
  if (!broker_) curve_ = detail::resolve_curve(curve_);  // the embedded one: as set above
  {
    // The handshake first, on sockets of their own: a refused key or a mismatched mechanism is a
    // clear error now, not a registration that times out. With several brokers the probes run
    // together and take half the time, leaving the rest to the registrations.
    const auto probe_deadline =
        broker_endpoints_.size() == 1 ? deadline : Clock::now() + options_.connect_timeout / 2;
    std::vector<zmq::socket_t> probes;
    std::vector<std::unique_ptr<detail::HandshakeWatch>> watches;
    probes.reserve(broker_endpoints_.size());
    for (const std::string& endpoint : broker_endpoints_) {
      probes.push_back(detail::make_socket(ctx_, zmq::socket_type::dealer, options_.limits));
      zmq::socket_t& probe = probes.back();
      probe.set(zmq::sockopt::linger, 0);
      if (curve_.enabled()) detail::set_curve_client(probe, curve_, curve_.keys);
      watches.push_back(std::make_unique<detail::HandshakeWatch>(ctx_, probe));
      probe.connect(endpoint);
    }
    std::optional<std::string> failure;
    for (size_t b = 0; b < watches.size() && !failure; ++b) {
      const auto left = std::max(
          std::chrono::duration_cast<std::chrono::milliseconds>(probe_deadline - Clock::now()),
          std::chrono::milliseconds(0));
      if (auto f = watches[b]->wait(left, curve_.enabled()))
        failure = "the broker at " + broker_endpoints_[b] + " refused this server: " + *f;
    }
    watches.clear();  // before their sockets
    probes.clear();
    if (failure) {
      if (broker_) {
        broker_->stop();
        broker_thread_.join();
      }
      throw Error(Errc::not_authorized,
                  *failure + (curve_.enabled()
                                  ? " (server key " + key_fingerprint(curve_.keys.public_key) + ")"
                                  : std::string()));
    }
  }
  resolve_direct();
  if (curve_.enabled() && !direct_bind_.empty()) gate_ = std::make_unique<DirectGate>(ctx_);
  {
    MutexLock lock(mu_);
    registered_.assign(broker_endpoints_.size(), 0);
    client_endpoints_.assign(broker_endpoints_.size(), std::string());
  }
  {
    MutexLock lock(lost_mu_);
    lost_.assign(broker_endpoints_.size(), LostBroker{});
  }
  remote_refs_ = std::make_unique<RemoteRefs>(
      [this]() PATRO_EXCLUDES(mu_) {
        MutexLock lock(mu_);
        std::vector<std::string> out;
        for (const std::string& e : client_endpoints_)
          if (!e.empty()) out.push_back(e);
        return out;
      },
      curve_);
  running_ = true;
  register_until_ = deadline - options_.heartbeat.interval;
  for (unsigned i = 0; i < options_.threads; ++i) {
    auto lane = std::make_unique<LaneThread>();
    lane->index = i;
    lane->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lane->wake_fd < 0) throw os_failure("eventfd", errno);
    lane->outbox = std::make_shared<Outbox>(lane->wake_fd, replies_);
    lanes_.push_back(std::move(lane));
  }
  for (auto& lane : lanes_) outboxes_.push_back(lane->outbox.get());
  logs_ = std::make_unique<LogForwarder>(options_.log_forward_queue, [this](unsigned lane) {
    const uint64_t one = 1;
    if (lane < lanes_.size()) (void)!::write(lanes_[lane]->wake_fd, &one, sizeof one);
  });
  for (auto& lane : lanes_) lane->outbox->set_peers(lane->index, &outboxes_);
  for (auto& lane : lanes_)
    lane->thread =
        std::thread([this, l = lane.get()] { Lane(*this, l->index, l->wake_fd, l->outbox).run(); });
  timer_thread_ = std::thread([this] { timer_main(); });
  alive_thread_ = std::thread([this] { alive_main(); });

  std::vector<std::string> client_endpoints;
  {
    MutexLock lock(mu_);
    auto all_registered = [&]() PATRO_NO_TSA {
      for (unsigned n : registered_)
        if (n < lanes_.size()) return false;
      return true;
    };
    while (!all_registered() && register_error_.empty()) {
      if (cv_.wait_until(lock.native(), deadline) == std::cv_status::timeout) break;
    }
    if (!register_error_.empty()) {
      const std::string why = register_error_;
      lock.unlock();
      stop();
      throw Error(Errc::name_taken, why);
    }
    std::string missing;
    for (size_t b = 0; b < broker_endpoints_.size(); ++b) {
      if (registered_[b] < lanes_.size())
        missing += (missing.empty() ? "" : ", ") + broker_endpoints_[b];
      else
        client_endpoints.push_back(client_endpoints_[b]);
    }
    if (client_endpoints.empty()) {
      lock.unlock();
      stop();
      // One broker: "the broker at X did not accept ..."; several: "no broker (X, Y) accepted ...".
      const bool several = broker_endpoints_.size() > 1;
      throw Error(Errc::broker_unreachable,
                  std::string(several ? "no broker (" : "the broker at ") + missing +
                      (several ? ") accepted" : " did not accept") + " the registration within " +
                      std::to_string(options_.connect_timeout.count()) +
                      " ms (is a broker running there?)");
    }
    if (!missing.empty())
      PATRO_LOG(warn, "server") << "not registered yet at " << missing
                                << "; serving through the other brokers (the lanes keep trying)";
    started_ = idle_since_ = Clock::now();
  }
  if (options_.idle_timeout.count() > 0)
    fincheck_thread_ = std::thread([this] { fincheck_main(); });
  std::string where;
  for (const auto& e : client_endpoints) where += (where.empty() ? "" : ", ") + e;
  PATRO_LOG(info, "server") << "serving " << entries_.size() << " object(s) with " << lanes_.size()
                            << " threads; clients connect to " << where;
  Config config(client_endpoints, entries_);
  config.set_broker_key(curve_.broker_key);
  return config;
}

void Server::resolve_direct() {
  const std::string& d = options_.direct;
  if (d.empty() || d == "none") return;
  direct_advertise_ = options_.direct_advertise;
  if (d != "auto") {
    direct_bind_ = d;
    return;
  }
  // The interface this host reaches the broker by, on a free port per lane.
  auto hp = split_tcp(broker_endpoint_);
  if (!hp) {
    PATRO_LOG(info, "server") << "no direct path: the broker endpoint " << broker_endpoint_
                              << " is not tcp:// (set ServerOptions::direct)";
    return;
  }
  if (hp->first == "localhost" || hp->first.rfind("127.", 0) == 0) {
    direct_bind_ = "tcp://127.0.0.1:*";
  } else if (auto local = local_address_towards(hp->first)) {
    if (!options_.insecure && !curve_.enabled()) {
      PATRO_LOG(warn, "server") << "no direct path: it would bind " << *local
                                << " in plaintext off loopback (set ServerOptions::insecure, "
                                   "--insecure, to allow it); requests go through the broker";
      return;
    }
    direct_bind_ = "tcp://" + *local + ":*";
  } else {
    PATRO_LOG(warn, "server") << "no direct path: no local IPv4 address reaches the broker host "
                              << hp->first << " (set ServerOptions::direct)";
  }
}

std::string Server::bind_direct(zmq::socket_t& router, unsigned lane) {
  // An explicit port is lane 0's; lane i binds port + i.
  std::string endpoint = direct_bind_;
  if (auto hp = split_tcp(endpoint); hp && hp->second != "*") {
    auto shifted = port_plus(endpoint, lane);
    if (!shifted) {
      PATRO_LOG(error, "server") << "no direct path: bad endpoint '" << endpoint << "'";
      return {};
    }
    endpoint = *shifted;
  }
  try {
    router.bind(endpoint);
  } catch (const zmq::error_t& e) {
    PATRO_LOG(error, "server") << "lane " << lane << ": no direct path: cannot bind " << endpoint
                               << ": " << e.what();
    return {};
  }
  if (direct_advertise_.empty()) return router.get(zmq::sockopt::last_endpoint);
  if (auto shifted = port_plus(direct_advertise_, lane)) return *shifted;
  return direct_advertise_;
}

void Server::lane_registered(size_t broker, const std::string& client_endpoint,
                             const std::string& refusal) {
  MutexLock lock(mu_);
  if (broker < registered_.size()) {
    ++registered_[broker];
    client_endpoints_[broker] = client_endpoint;
  }
  if (!refusal.empty() && register_error_.empty()) register_error_ = refusal;
  cv_.notify_all();
}

Value Server::serve_callback(const std::shared_ptr<Node>& node) {
  const ObjectId id = objects_.serve(node);
  return Value(Reference{nullptr, nullptr, id, {}, node->type_name(), node->reftype(), {}, false});
}

uint64_t Server::count_pass(const ObjectId& id) {
  return id.server == objects_.server_id() ? objects_.count_pass(id.object) : 0;
}

bool Server::on_lane_thread() const {
  const auto me = std::this_thread::get_id();
  return std::any_of(lanes_.begin(), lanes_.end(), [&](const std::unique_ptr<LaneThread>& l) {
    return l->thread.get_id() == me;
  });
}

void Server::stop() {
  stop_server(false);
}

void Server::stop_server(bool from_fincheck) {
  {
    MutexLock lock(mu_);
    if (stopped_) {
      // Stopping already (the fincheck may be doing it): return once it is done.
      while (running_) cv_.wait(lock.native());
      return;
    }
    stopped_ = true;
    cv_.notify_all();  // wakes the fincheck
  }
  if (!from_fincheck && fincheck_thread_.joinable()) fincheck_thread_.join();
  if (locks_) locks_->stop_timer();
  if (timer_thread_.joinable()) timer_thread_.join();
  if (alive_thread_.joinable()) alive_thread_.join();
  for (auto& lane : lanes_) lane->outbox->request_stop();
  for (auto& lane : lanes_)
    if (lane->thread.joinable()) lane->thread.join();
  logs_.reset();  // no line is offered to it after this (remove_log_tap waits for one that is)
  for (auto& lane : lanes_) lane->outbox.reset();  // late replies after this are dropped
  if (remote_refs_) remote_refs_->close();
  if (broker_) {
    broker_->stop();
    if (broker_thread_.joinable()) broker_thread_.join();
  }
  locks_.reset();  // removes the segments from /dev/shm
  {
    MutexLock lock(mu_);
    running_ = false;
    cv_.notify_all();
  }
}

void Server::wait() {
  MutexLock lock(mu_);
  while (running_) cv_.wait(lock.native());
}

void Server::broker_went_away(size_t broker, Clock::time_point check_at) {
  MutexLock lock(lost_mu_);
  LostBroker& l = lost_.at(broker);
  if (l.lost) return;  // another lane saw it first: the clients are marked already
  // Before any lane can register again there (which comes after a lane saw it go), so no
  // client's coming back is marked over.
  replies_.mark_unconfirmed(static_cast<unsigned>(broker));
  l.lost = true;
  l.check_at = check_at;
  lost_count_.fetch_add(1, std::memory_order_release);
}

void Server::broker_came_back(Clock::time_point not_before) {
  MutexLock lock(lost_mu_);
  for (LostBroker& l : lost_)
    if (l.lost) l.check_at = std::max(l.check_at, not_before);
}

Clock::time_point Server::next_lost_check() {
  if (lost_count_.load(std::memory_order_acquire) == 0) return Clock::time_point::max();
  MutexLock lock(lost_mu_);
  auto next = Clock::time_point::max();
  for (const LostBroker& l : lost_)
    if (l.lost) next = std::min(next, l.check_at);
  return next;
}

std::vector<size_t> Server::brokers_to_check(Clock::time_point now, bool any_live) {
  std::vector<size_t> due;
  if (lost_count_.load(std::memory_order_acquire) == 0) return due;
  MutexLock lock(lost_mu_);
  for (size_t b = 0; b < lost_.size(); ++b) {
    LostBroker& l = lost_[b];
    if (!l.lost || now < l.check_at) continue;
    if (!any_live) {  // no broker for the clients to come back through yet: wait
      l.check_at = now + std::chrono::milliseconds(alive_ms_.load() > 0 ? alive_ms_.load() : 1000);
      continue;
    }
    l.lost = false;
    lost_count_.fetch_sub(1, std::memory_order_release);
    due.push_back(b);
  }
  return due;
}

void Server::alive_main() {
  std::vector<zmq::socket_t> socks;
  for (const std::string& endpoint : broker_endpoints_) {
    socks.push_back(detail::make_socket(ctx_, zmq::socket_type::dealer, options_.limits));
    if (curve_.enabled()) detail::set_curve_client(socks.back(), curve_, curve_.keys);  // as lanes
    socks.back().set(zmq::sockopt::linger, 0);
    socks.back().connect(endpoint);
  }
  MutexLock lock(mu_);
  while (!stopped_) {
    lock.unlock();
    for (zmq::socket_t& sock : socks) {
      Multipart m;
      m.push_back(header_frame(Command::server_alive));
      m.push_back(u64_frame(objects_.server_id()));
      // Its incarnation, which only this process and the broker know: the broker believes a
      // SERVER_ALIVE from a socket that is none of the lanes only with it.
      m.push_back(u64_frame(incarnation_));
      try {
        send_multipart(sock, m, true);
      } catch (const zmq::error_t& e) {
        PATRO_LOG(warn, "server") << "alive: " << e.what();
      }
    }
    lock.lock();
    const int64_t ms = alive_ms_.load();
    cv_.wait_for(lock.native(),
                 ms > 0 ? std::chrono::milliseconds(ms) : options_.heartbeat.interval);
  }
}

void Server::timer_main() {
  // Replies for expired waiters go out through lane 0's outbox.
  Outbox& outbox0 = *lanes_.front()->outbox;
  std::vector<DeferredReply> owed;
  while (locks_->timer_step(owed)) outbox0.post_owed(owed);
}

}  // namespace patro::detail

namespace patro {

size_t remove_stale_lock_segments() {
  size_t removed = 0;
  for (const std::string& name : detail::LockTable::servers()) {
    // Default names start with the owning process id: "pid1234-…".
    if (name.rfind("pid", 0) != 0) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + 3, &end, 10);
    if (end == name.c_str() + 3 || *end != '-' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    detail::LockTable::remove(name);
    ++removed;
  }
  return removed;
}

Config detail::patronize_values(const ServerOptions& options, std::vector<Named> objects) {
  // Read before anything starts: a bad PATRO_WATCHDOG_MS is an error, not a server left running.
  const std::chrono::milliseconds watchdog =
      options.watchdog.count() > 0 ? options.watchdog : detail::watchdog_from_environment();
  // Started by patro::spawn through an ssh forward: the broker is the forward's end on this
  // host's loopback (unless the program names its own), and the direct path, which would bind
  // this host's loopback where the client cannot reach it, stays off.
  ServerOptions effective = options;
  const char* spawned = std::getenv("PATRO_SPAWNED");
  const bool under_spawn = spawned != nullptr && std::string_view(spawned) == "1";
  if (const char* forward = std::getenv("PATRO_SPAWN_BROKER");
      under_spawn && forward != nullptr && *forward != '\0') {
    if (effective.broker.empty() && effective.brokers.empty()) effective.broker = forward;
    const bool only_forward = effective.brokers.empty()
                                  ? effective.broker == forward
                                  : effective.brokers == std::vector<std::string>{forward};
    if (only_forward && effective.direct == "auto") effective.direct = "none";
  }
  auto server = std::make_shared<detail::Server>(effective, std::move(objects));
  Config cfg = server->start();
  cfg.attach_server(std::move(server));
  // Started by patro::spawn: the first server of the process tells its parent its config, as
  // one line on standard output, once serving.
  static std::atomic<bool> told{false};
  if (under_spawn && !told.exchange(true)) {
    const std::string line = cfg.to_string() + "\n";
    std::fflush(stdout);  // what the program printed before goes first
    for (size_t done = 0; done < line.size();) {
      const ssize_t n = ::write(STDOUT_FILENO, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }
  detail::start_watchdog(watchdog);  // once serving: the parent beats once it has the config
  return cfg;
}

}  // namespace patro
