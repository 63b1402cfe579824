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
#include "log.hpp"
#include "os_failure.hpp"
#include "outbox.hpp"
#include "wire.hpp"

namespace patro::detail {

using Clock = std::chrono::steady_clock;

// A lane's control channel is an eventfd and its outbox's queue rather than a ZeroMQ socket: a raw
// fd in the lane's poll costs no extra system calls per request, where each ZeroMQ socket polled
// does.
struct Server::Lane {
  unsigned index = 0;
  std::thread thread;
  int wake_fd = -1;                // eventfd: stop, or late replies queued in the outbox
  std::shared_ptr<Outbox> outbox;  // the sink of the lane's patro::Deferred replies

  ~Lane() {
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

// The offset from our steady clock to the broker's, from the readings it sends (REGISTERED and its
// heartbeats), so that a lane knows how long a request waited since the broker forwarded it — in
// the lane's socket behind a long call, say. A reading is taken before its trip here, so each
// sample is at most the true offset and the largest recent one is the best: an age computed with
// it errs short (a request just past its deadline may still run), never long.
class BrokerClock {
 public:
  void reset() { n_ = next_ = 0; }
  void observe(uint64_t broker_ns) {
    samples_[next_] = static_cast<int64_t>(broker_ns) - now_ns();
    next_ = (next_ + 1) % samples_.size();
    n_ = std::min(n_ + 1, samples_.size());
  }
  /// How long ago the broker forwarded at forwarded_ns (its clock); zero before any reading.
  std::chrono::nanoseconds age(uint64_t forwarded_ns) const {
    if (n_ == 0) return std::chrono::nanoseconds(0);
    const int64_t offset = *std::max_element(samples_.begin(), samples_.begin() + n_);
    return std::chrono::nanoseconds(
        std::max<int64_t>(now_ns() + offset - static_cast<int64_t>(forwarded_ns), 0));
  }

 private:
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
  }
  std::array<int64_t, 8> samples_{};
  size_t n_ = 0, next_ = 0;
};

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
    // With a fixed server id, the served objects' ids follow from it and their position.
    const ObjectId id = options_.server_id != 0
                            ? objects_.pin(node, mix64(options_.server_id + entries_.size() + 1))
                            : objects_.pin(node);
    entries_.push_back(ObjectEntry{id, node->type_name(), node->reftype()});
  }
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
    auto lane = std::make_unique<Lane>();
    lane->index = i;
    lane->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lane->wake_fd < 0) throw os_failure("eventfd", errno);
    lane->outbox = std::make_shared<Outbox>(lane->wake_fd, replies_);
    lanes_.push_back(std::move(lane));
  }
  for (auto& lane : lanes_) outboxes_.push_back(lane->outbox.get());
  for (auto& lane : lanes_) lane->outbox->set_peers(lane->index, &outboxes_);
  for (auto& lane : lanes_) lane->thread = std::thread([this, l = lane.get()] { lane_main(*l); });
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
      throw Error(Errc::broker_unreachable,
                  std::string(broker_endpoints_.size() > 1 ? "no broker (" : "the broker at ") +
                      missing + (broker_endpoints_.size() > 1 ? ")" : "") +
                      " accepted the registration within " +
                      std::to_string(options_.connect_timeout.count()) + " ms");
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
  if (curve_.enabled()) {
    PATRO_LOG(info, "server") << "no direct path with CURVE: requests go through the broker";
    return;
  }
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

Value Server::serve_pinned(const std::shared_ptr<Node>& node) {
  const ObjectId id = objects_.pin(node);
  return Value(Reference{nullptr, nullptr, id, {}, node->type_name(), node->reftype(), {}, false});
}

bool Server::on_lane_thread() const {
  const auto me = std::this_thread::get_id();
  return std::any_of(lanes_.begin(), lanes_.end(),
                     [&](const std::unique_ptr<Lane>& l) { return l->thread.get_id() == me; });
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

void Server::lane_main(Lane& lane) {
  const uint64_t server_id = objects_.server_id();
  Outbox& outbox = *lane.outbox;
  Dispatcher dispatcher(objects_, options_, *locks_, replies_, lane.outbox,
                        options_.idle_timeout.count() > 0
                            ? std::function<void(uint64_t)>([this](uint64_t c) { client_seen(c); })
                            : std::function<void(uint64_t)>());
  Executor& encoder = dispatcher.encoder();
  encoder.set_remote_refs(remote_refs_.get());
  std::vector<DeferredReply> owed;

  // The direct path: this lane's own ROUTER, where clients send requests straight to it.
  zmq::socket_t direct;
  std::string direct_endpoint;
  if (!direct_bind_.empty()) {
    direct = detail::make_socket(ctx_, zmq::socket_type::router, options_.limits);
    direct.set(zmq::sockopt::linger, static_cast<int>(options_.limits.close_linger.count()));
    direct_endpoint = bind_direct(direct, lane.index);
    if (direct_endpoint.empty()) direct.close();
  }
  outbox.set_direct(direct.handle() != nullptr ? &direct : nullptr);

  // The registration message, built once.
  flatbuffers::FlatBufferBuilder fb(512);
  {
    std::vector<flatbuffers::Offset<wire::NameBinding>> names;
    for (size_t i = 0; i < served_.size(); ++i) {
      if (served_[i].name.empty()) continue;
      names.push_back(wire::CreateNameBindingDirect(
          fb, served_[i].name.c_str(), entries_[i].id.server, entries_[i].id.object,
          entries_[i].type_name.c_str(), entries_[i].reftype.c_str()));
    }
    auto nv = fb.CreateVector(names);
    auto ep = direct_endpoint.empty() ? 0 : fb.CreateString(direct_endpoint);
    auto reg = wire::CreateRegister(fb, server_id, lane.index, static_cast<uint32_t>(lanes_.size()),
                                    nv, incarnation_, ep);
    fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, reg.Union()),
              wire::ControlIdentifier());
  }
  const std::string reg_body(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());

  auto make_socket = [&](size_t broker) {
    zmq::socket_t s = detail::make_socket(ctx_, zmq::socket_type::dealer, options_.limits);
    if (curve_.enabled()) detail::set_curve_client(s, curve_, curve_.keys);
    s.set(zmq::sockopt::linger, static_cast<int>(options_.limits.close_linger.count()));
    s.connect(broker_endpoints_[broker]);
    return s;
  };
  auto send_register = [&](zmq::socket_t& s) {
    Multipart m;
    m.push_back(header_frame(Command::register_server));
    m.push_back(zmq::message_t(reg_body.data(), reg_body.size()));
    send_multipart(s, m, false);
  };
  auto send_simple = [&](zmq::socket_t& s, Command c) {
    Multipart m;
    m.push_back(header_frame(c));
    send_multipart(s, m, true);
  };
  // A heartbeat carries the server's counters, which the broker shows in broker_info.
  auto send_heartbeat = [&](zmq::socket_t& s) {
    Multipart m;
    m.push_back(header_frame(Command::heartbeat));
    m.push_back(u64_frame(replies_.hits()));
    m.push_back(u64_frame(replies_.expired()));
    m.push_back(u64_frame(direct_requests_.load(std::memory_order_relaxed)));
    m.push_back(u64_frame(brokered_requests_.load(std::memory_order_relaxed)));
    send_multipart(s, m, true);
  };

  // One DEALER per broker, each registered, heartbeated and watched on its own.
  constexpr auto kNever = Clock::time_point::max();
  // Lane 0 looks for objects to free four times a lease (ObjectTable::collect).
  const auto collect_every = std::clamp<Clock::duration>(
      options_.reference_lease / 4, std::chrono::milliseconds(5), std::chrono::seconds(1));
  auto next_collect = Clock::now() + collect_every;
  struct Link {
    // Ours until the broker says its own (in Registered): then the faster interval, its window.
    std::chrono::milliseconds interval, window;
    Clock::time_point last_heard, next_heartbeat;
    // Set while the broker refuses a name another live server holds: that owner may be this
    // server's previous process, which the broker sees dead only after its heartbeat window, so
    // the lane asks again each interval until register_until_.
    Clock::time_point register_again = Clock::time_point::max();
    BrokerClock clock;
    bool counted = false;  // this lane told start() it registered here
    bool silent = false;   // reconnecting after silence (logged once, until heard again)
    bool live = false;     // registered, and not lost since
  };
  const size_t n_brokers = broker_endpoints_.size();
  std::vector<zmq::socket_t> socks;
  std::vector<Link> links(n_brokers);
  socks.reserve(n_brokers);
  for (size_t b = 0; b < n_brokers; ++b) {
    socks.push_back(make_socket(b));
    send_register(socks[b]);
    Link& l = links[b];
    l.interval = options_.heartbeat.interval;
    l.window = options_.heartbeat.window();
    l.last_heard = Clock::now();
    l.next_heartbeat = l.last_heard + l.interval;
  }
  outbox.set_brokers(&socks);
  zmq::socket_t& first = socks.front();  // replies by routing go by the outbox, from here
  std::vector<zmq::pollitem_t> items;
  items.push_back({nullptr, lane.wake_fd, ZMQ_POLLIN, 0});
  const bool has_direct = direct.handle() != nullptr;
  if (has_direct) items.push_back({direct.handle(), 0, ZMQ_POLLIN, 0});
  const size_t first_broker_item = items.size();
  for (auto& sk : socks) items.push_back({sk.handle(), 0, ZMQ_POLLIN, 0});
  Multipart msg;
  AlignedScratch scratch;
  std::string marked;  // a request's routing through a broker other than the first
  // A request, through broker `broker` or direct (then msg[1] is its direct routing):
  // [hdr + forwarded at][client routing][object id][request id][body]
  auto handle_request = [&](Multipart& rq, uint64_t stamp, bool is_direct, size_t broker) {
    if (rq.size() != 5) return;
    auto request_id = parse_u64(rq[3]);
    if (!request_id) return;
    annotate_received(*request_id);
    (is_direct ? direct_requests_ : brokered_requests_).fetch_add(1, std::memory_order_relaxed);
    Taken taken{rq[1].to_string_view()};
    if (!is_direct && broker != 0) {
      marked = broker_routing(static_cast<unsigned>(broker), rq[1].to_string_view());
      taken.routing = marked;
    }
    if (stamp != 0) taken.age = links[broker].clock.age(stamp);
    zmq::message_t reply;
    std::optional<std::string> reroute;
    Dispatched d = Dispatched::reply;
    const wire::Request* req = nullptr;
    if (is_batch(rq[4])) {
      d = dispatcher.dispatch_batch(*request_id, rq[4], taken, scratch, reply, reroute);
    } else if (req = verified_request(rq[4], options_.limits, scratch); req == nullptr) {
      reply = error_reply(*request_id,
                          rq[4].size() > options_.limits.max_message_size ? Errc::message_too_large
                                                                          : Errc::bad_message,
                          "the request body failed verification (" + std::to_string(rq[4].size()) +
                              " bytes): malformed, truncated, too deep or too large");
    } else {
      d = dispatcher.dispatch(*req, taken, reply, reroute, owed);
    }
    // Parked, deferred or a copy of one running: its reply leaves later, by the outbox.
    if (d == Dispatched::reply) {
      if (reroute)
        outbox.reply(first, *reroute, *request_id, std::move(reply));
      else if (is_direct)
        outbox.reply(first, taken.routing, *request_id, std::move(reply));
      else
        Outbox::reply(socks[broker], rq, *request_id, std::move(reply));
    }
    outbox.send_owed(first, encoder, owed);
  };
  // A client is gone: its locks are released, its waits dropped, what it left running forgotten.
  auto release_client = [&](uint64_t client_id) {
    locks_->drop_monitor(client_id, owed);
    replies_.forget(client_id);
    objects_.drop_client(client_id);  // the references it held
    if (options_.idle_timeout.count() > 0) client_left(client_id);
    outbox.send_owed(first, encoder, owed);
    if (options_.on_client_gone) {
      try {
        options_.on_client_gone(client_id);
      } catch (const std::exception& e) {
        PATRO_LOG(error, "server") << "on_client_gone threw: " << e.what();
      } catch (...) {
        PATRO_LOG(error, "server") << "on_client_gone threw something not a std::exception";
      }
    }
  };
  // The server's own watch over its clients when a broker goes away (lane 0 keeps it): a client
  // attached through that broker that died with it is never reported gone by any broker, so
  // every client attached through it must come back — a request, or a LOCATE through any broker
  // (CLIENT_AT), as libpatro sends after moving or when its broker restarted — within twice the
  // broker's window once some broker has us registered; those that do not are released.
  auto broker_lost = [&](size_t broker, Clock::time_point now) {
    links[broker].live = false;
    broker_went_away(broker, now + 2 * links[broker].window);
  };
  auto broker_registered = [&](size_t broker, Clock::time_point now) {
    links[broker].live = true;
    broker_came_back(now + 2 * links[broker].window);
  };
  // Lane 0 releases the clients that did not come back after a broker went away.
  auto check_lost = [&](Clock::time_point now) {
    if (lane.index != 0) return;
    bool any_live = false;
    for (const Link& l : links) any_live = any_live || l.live;
    for (const size_t b : brokers_to_check(now, any_live)) {
      const auto stale = replies_.unconfirmed(static_cast<unsigned>(b));
      if (!stale.empty())
        PATRO_LOG(info, "server") << stale.size() << " client(s) attached through the broker at "
                                  << broker_endpoints_[b]
                                  << " did not come back after it went away: released";
      for (uint64_t client_id : stale) release_client(client_id);
    }
  };
  // A message from broker `broker`.
  auto handle_broker = [&](size_t broker, Multipart& m, Clock::time_point now) {
    Link& link = links[broker];
    zmq::socket_t& sock = socks[broker];
    uint64_t stamp = 0;  // a request's: when the broker forwarded it
    const auto cmd = m.empty() ? std::nullopt : parse_header(m[0], stamp);
    if (!cmd) return;
    switch (*cmd) {
      case Command::request:
        handle_request(m, stamp, false, broker);
        break;
      case Command::heartbeat:
        if (auto clock = m.size() == 2 ? parse_u64(m[1]) : std::nullopt) link.clock.observe(*clock);
        break;
      case Command::registered: {
        const wire::Control* c =
            m.size() == 2 ? verified_control(m[1], options_.limits, scratch) : nullptr;
        const wire::Registered* r = c ? c->body_as_Registered() : nullptr;
        if (r && r->clock_ns() != 0) link.clock.observe(r->clock_ns());
        if (r && r->heartbeat_ms() > 0) {
          link.interval =
              std::min(options_.heartbeat.interval, std::chrono::milliseconds(r->heartbeat_ms()));
          // The alive thread beats at the fastest interval of any broker.
          int64_t alive = alive_ms_.load();
          while ((alive == 0 || link.interval.count() < alive) &&
                 !alive_ms_.compare_exchange_weak(alive, link.interval.count())) {
          }
          if (r->liveness() > 0)
            link.window = std::chrono::milliseconds(int64_t{r->heartbeat_ms()} * r->liveness());
        }
        std::string refusal;
        if (r && r->refused()) {
          for (const auto* nb : *r->refused()) {
            if (!nb->name()) continue;
            refusal += (refusal.empty() ? "" : "; ") + std::string("the name '") +
                       nb->name()->str() + "' is registered at the broker " +
                       broker_endpoints_[broker] + " by server " +
                       ObjectId{nb->server(), 0}.to_hex().substr(0, 16) + " (object " +
                       ObjectId{nb->server(), nb->object()}.to_hex() +
                       "), which is alive: a name has one owner until it stops";
          }
        }
        broker_registered(broker, now);
        if (!link.counted && !refusal.empty() && now + link.interval < register_until_) {
          link.register_again = now + link.interval;
        } else if (!link.counted) {
          link.counted = true;
          lane_registered(broker,
                          r && r->client_endpoint() ? r->client_endpoint()->str() : std::string(),
                          refusal);
        } else if (!refusal.empty() && lane.index == 0) {
          PATRO_LOG(error, "server") << "registering again: " << refusal;
        }
        break;
      }
      case Command::disconnect:
        // The broker does not know this lane (it restarted): register again.
        PATRO_LOG(info, "server") << "lane " << lane.index << " registering again at "
                                  << broker_endpoints_[broker];
        send_register(sock);
        link.clock.reset();
        broker_lost(broker, now);
        break;
      case Command::client_at:
        // A client located us at this broker: with several brokers, the one it is attached to.
        if (auto client_id = m.size() == 2 ? parse_u64(m[1]) : std::nullopt)
          replies_.attach(*client_id, static_cast<unsigned>(broker), now);
        break;
      case Command::client_gone: {
        // A client died or left: its locks are released and its waits dropped.
        auto client_id = m.size() == 2 ? parse_u64(m[1]) : std::nullopt;
        if (!client_id) break;
        if (!replies_.gone_at(*client_id, static_cast<unsigned>(broker))) {
          // It moved to another broker, which will tell us when it is gone.
          PATRO_LOG(debug, "server") << "client " << *client_id << " left "
                                     << broker_endpoints_[broker] << " for another broker";
          break;
        }
        release_client(*client_id);
        break;
      }
      default:
        break;  // heartbeats
    }
  };
  for (;;) {
    // The lane's barrier: whatever escapes one turn (a zmq::error_t from a send, bad_alloc) is
    // logged and the lane goes on; each request has its own barrier inside.
    try {
      auto now = Clock::now();
      auto until = lane.index == 0 ? std::min(next_lost_check(), next_collect) : kNever;
      for (const Link& l : links) until = std::min({until, l.next_heartbeat, l.register_again});
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
      if (wait.count() < 0) wait = std::chrono::milliseconds(0);
      for (size_t b = 0; b < n_brokers; ++b)
        items[first_broker_item + b].socket = socks[b].handle();
      try {
        zmq::poll(items.data(), items.size(), wait + std::chrono::milliseconds(1));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        PATRO_LOG(error, "server") << "lane " << lane.index << " poll failed: " << e.what();
        break;
      }
      if (items[0].revents & ZMQ_POLLIN) {
        uint64_t n;
        (void)!::read(lane.wake_fd, &n, sizeof n);
        if (outbox.flush(first, encoder)) break;
      }
      // Direct requests: [client id at the ROUTER][hdr][object id][request id][body]([attempt]),
      // run as a brokered one is, their reply leaving by the ROUTER; heartbeats are answered.
      for (int batch = 0; has_direct && batch < 64 && recv_multipart(direct, msg, true); ++batch) {
        const auto cmd = msg.size() >= 2 ? parse_header(msg[1]) : std::nullopt;
        if (cmd == Command::request && (msg.size() == 5 || msg.size() == 6)) {
          msg.resize(5);  // the attempt frame, if resent
          const std::string routing = direct_routing(lane.index, msg[0].to_string_view());
          msg[0] = zmq::message_t(routing.data(), routing.size());
          std::swap(msg[0], msg[1]);
          handle_request(msg, 0, true, 0);
        } else if (cmd == Command::heartbeat) {
          Multipart hb;
          hb.push_back(std::move(msg[0]));
          hb.push_back(header_frame(Command::heartbeat));
          send_multipart(direct, hb, true);
        }
      }
      for (size_t b = 0; b < n_brokers; ++b) {
        for (int batch = 0; batch < 64 && recv_multipart(socks[b], msg, true); ++batch) {
          now = Clock::now();
          links[b].last_heard = now;
          links[b].silent = false;
          handle_broker(b, msg, now);
        }
      }
      now = Clock::now();
      check_lost(now);
      if (lane.index == 0 && now >= next_collect) {
        // Lane 0 frees the objects no client has held for their lease.
        if (const size_t freed = objects_.collect(now); freed > 0)
          PATRO_LOG(debug, "server") << "freed " << freed << " object(s) no client holds";
        next_collect = now + collect_every;
      }
      for (size_t b = 0; b < n_brokers; ++b) {
        Link& l = links[b];
        if (now >= l.next_heartbeat) {
          send_heartbeat(socks[b]);
          l.next_heartbeat = now + l.interval;
        }
        if (now >= l.register_again) {
          l.register_again = kNever;
          send_register(socks[b]);
        }
        // Silent past its window, unless what it sent waits unread (we were in a long call): a
        // new socket would drop it.
        if (now - l.last_heard > l.window && !(socks[b].get(zmq::sockopt::events) & ZMQ_POLLIN)) {
          // The broker went silent: a new socket, and register again (Majordomo's reconnect).
          const bool newly = !l.silent;
          if (newly)
            PATRO_LOG(warn, "server")
                << "lane " << lane.index << ": broker " << broker_endpoints_[b] << " silent for "
                << l.window.count() << " ms; reconnecting";
          l.silent = true;
          socks[b].set(zmq::sockopt::linger, 0);
          socks[b].close();
          socks[b] = make_socket(b);
          send_register(socks[b]);
          l.clock.reset();  // perhaps another broker
          if (newly) broker_lost(b, now);
          l.last_heard = now;
        }
      }
    } catch (const std::exception& e) {
      PATRO_LOG(error, "server") << "lane " << lane.index << ": " << e.what() << "; going on";
    } catch (...) {
      PATRO_LOG(error, "server") << "lane " << lane.index
                                 << ": something not a std::exception was thrown; going on";
    }
  }
  for (auto& sk : socks) {
    try {
      send_simple(sk, Command::disconnect);
    } catch (const zmq::error_t&) {
    }
    sk.close();
  }
  outbox.set_brokers(nullptr);
  outbox.set_direct(nullptr);
  if (direct.handle() != nullptr) direct.close();
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
  auto server = std::make_shared<detail::Server>(options, std::move(objects));
  Config cfg = server->start();
  cfg.attach_server(std::move(server));
  // Started by patro::spawn: the first server of the process tells its parent its config, as
  // one line on standard output, once serving.
  static std::atomic<bool> told{false};
  const char* spawned = std::getenv("PATRO_SPAWNED");
  if (spawned != nullptr && std::string_view(spawned) == "1" && !told.exchange(true)) {
    const std::string line = cfg.to_string() + "\n";
    std::fflush(stdout);  // what the program printed before goes first
    for (size_t done = 0; done < line.size();) {
      const ssize_t n = ::write(STDOUT_FILENO, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }
  return cfg;
}

}  // namespace patro
