// The broker: Majordomo's shape (server, client records; find-or-create; heartbeats), minus its
// faults: every peer is heartbeated, expiry is a heap, frames that peers control never assert,
// ROUTER_MANDATORY makes a gone peer visible, and a request for a dead server gets a definite
// answer. Request bodies are never decoded: routing uses the fixed-size id frames only, and the
// frames are moved, not copied.
#include "patro/broker.hpp"

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "broker_driver.hpp"
#include "connection_cap.hpp"
#include "ids.hpp"
#include "log.hpp"
#include "mutex.hpp"
#include "os_failure.hpp"
#include "rights.hpp"
#include "socket.hpp"
#include "unread_bytes.hpp"
#include "wire.hpp"

namespace patro {

using detail::Command;
using detail::Multipart;
using Clock = std::chrono::steady_clock;

namespace {
std::string routing_of(const zmq::message_t& m) {
  return std::string(m.to_string_view());
}
zmq::message_t routing_frame(const std::string& r) {
  return zmq::message_t(r.data(), r.size());
}

// Whether an endpoint stays on this host: loopback addresses, ipc:// and inproc://.
bool is_loopback(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  std::string host = endpoint.substr(6);
  if (const auto semi = host.find(';'); semi != std::string::npos) return false;  // source;dest
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    host = close == std::string::npos ? host : host.substr(1, close - 1);
  } else if (const auto colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  return host.rfind("127.", 0) == 0 || host == "::1" || host == "localhost" || host == "lo";
}

constexpr const char* kClientDomain = "patro-clients";
// Most servers one client is remembered to have located before they registered.
constexpr size_t kMaxServersPerClient = 4096;
// The longest selections a LOG_SUBSCRIBE may carry.
constexpr size_t kMaxLogSelections = 4096;
constexpr const char* kServerDomain = "patro-servers";

// Hashes and compares std::string and std::string_view alike, so a lookup by a view of a frame
// or of a FlatBuffers string makes no std::string.
struct TextHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using KeySet = std::unordered_set<std::string, TextHash, std::equal_to<>>;
// An allow list: each key with its rights (an allow-list line's; a plain line allows everything).
using KeyRights = std::unordered_map<std::string, AllowEntry, TextHash, std::equal_to<>>;

std::string_view view(const flatbuffers::String* s) {
  return s ? std::string_view(s->data(), s->size()) : std::string_view();
}

// The CURVE public key (Z85) the ZAP handler authenticated the message's connection with ("User-
// Id", as the handler answers it); empty in plaintext.
std::string key_of(const zmq::message_t& m) {
  return detail::message_property(m, "User-Id");
}

std::string short_id(uint64_t server_id) {
  return ObjectId{server_id, 0}.to_hex().substr(0, 16);
}

std::string printable(const std::string& routing) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : routing) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// A REGISTER's restart_proof as bytes (empty: none).
std::string_view proof_of(const wire::Register& reg) {
  const auto* p = reg.restart_proof();
  return p ? std::string_view(reinterpret_cast<const char*>(p->data()), p->size())
           : std::string_view();
}

// Whether a restart proof is the one kept, in time that does not depend on where they differ (a
// prober learns nothing byte by byte). An empty one never matches: a server that sent none has no
// proof to give.
bool same_proof(std::string_view kept, std::string_view given) {
  if (kept.empty() || kept.size() != given.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < kept.size(); ++i)
    diff = static_cast<unsigned char>(diff | (kept[i] ^ given[i]));
  return diff == 0;
}
}  // namespace

// The broker's ZAP handler (RFC 27): a thread of its own answering libzmq's authentication
// requests on inproc://zeromq.zap.01, so a slow check never stalls the routing loop. It checks a
// CURVE client key against the allow list of the port (ZAP domain) it came in on.
class PATRO_PRIVATE ZapHandler {
 public:
  ZapHandler(zmq::context_t& ctx, const BrokerOptions& options)
      : options_(options), sock_(ctx, zmq::socket_type::rep) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind("inproc://zeromq.zap.01");
    load();  // throws on a bad file: the broker does not start
    thread_ = std::thread([this] { run(); });
  }
  ~ZapHandler() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Reads the allow lists (the options' keys and files); the old ones stay on an error.
  void load() {
    auto clients = read(options_.allow_clients, options_.allow_clients_file, true);
    auto servers = read(options_.allow_servers, options_.allow_servers_file, false);
    detail::MutexLock lock(mu_);
    clients_ = std::move(clients);
    servers_ = std::move(servers);
    generation_.fetch_add(1, std::memory_order_release);
  }
  uint64_t refused() const { return refused_; }

  // The lists in force (null: any key) and how many times they were read: the broker's loop
  // takes a copy whenever the count moves, and checks each message's key against it.
  using List = std::shared_ptr<const KeyRights>;
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::pair<List, List> lists() {
    detail::MutexLock lock(mu_);
    return {clients_, servers_};
  }

 private:
  // Rights belong to client keys: a server list's lines are keys alone.
  static List read(const std::vector<std::string>& keys, const std::string& file,
                   bool for_clients) {
    if (keys.empty() && file.empty()) return nullptr;
    auto out = std::make_shared<KeyRights>();
    auto add = [&](AllowEntry e, const std::string& where) {
      if (!for_clients && e.restricted())
        throw Error(Errc::invalid_argument,
                    where + ": rights (names=, read-only) apply to client keys only");
      std::string key = e.key;
      out->insert_or_assign(std::move(key), std::move(e));
    };
    for (const auto& k : keys) {
      AllowEntry e;
      try {
        e = parse_allow_entry(k);
      } catch (const Error& err) {
        throw Error(Errc::invalid_argument,
                    "allow list entry '" + k + "': " + std::string(detail::error_message(err)));
      }
      add(std::move(e), "allow list entry '" + k + "'");
    }
    if (!file.empty())
      for (auto& e : read_allow_entries(file))
        add(std::move(e), "allow list '" + file + "', key " + key_fingerprint(e.key));
    return out;
  }

  void run() {
    Multipart req;
    while (!stopping_) {
      try {
        if (!detail::poll_in(sock_, std::chrono::milliseconds(100))) continue;
        if (!detail::recv_multipart(sock_, req, true)) continue;
        answer(req);
      } catch (const std::exception& e) {
        PATRO_LOG(error, "broker") << "ZAP handler: " << e.what() << "; going on";
      }
    }
  }

  // [version][request id][domain][address][identity][mechanism][credentials...]
  void answer(Multipart& req) {
    if (req.size() < 6) return detail::zap_answer(sock_, req, false, "refused", {});
    const bool for_servers = req[2].to_string_view() == kServerDomain;
    const std::string key = detail::zap_curve_key(req);
    bool ok = false;
    if (!key.empty()) {
      detail::MutexLock lock(mu_);
      const List& list = for_servers ? servers_ : clients_;
      ok = !list || list->find(key) != list->end();
    }
    if (!ok) {
      ++refused_;
      log_refusal(key, std::string(req[3].to_string_view()), for_servers);
    }
    detail::zap_answer(sock_, req, ok, key.empty() ? "no CURVE key" : "key not allowed", key);
  }

  // One line per key and port every 10 s at most: a refused peer that keeps retrying must not
  // fill the log; and a few lines per 10 s in all, as a peer may bring a fresh key each time.
  void log_refusal(const std::string& key, const std::string& address, bool for_servers) {
    const auto now = Clock::now();
    const std::string who = (for_servers ? "s:" : "c:") + key;
    auto& last = last_logged_[who];
    if (last != Clock::time_point{} && now - last < std::chrono::seconds(10)) return;
    if (last_logged_.size() > 10000) last_logged_.clear();
    last = now;
    PATRO_LOG_LIMITED(warn, "broker", limiter_)
        << "refused " << (for_servers ? "server" : "client") << " key "
        << (key.empty() ? std::string("(none)") : key_fingerprint(key)) << " from " << address
        << ": not on the allow list for " << (for_servers ? "servers" : "clients");
  }

  const BrokerOptions& options_;
  zmq::socket_t sock_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> generation_{0};
  detail::LogLimiter limiter_;
  detail::Mutex mu_;
  List clients_ PATRO_GUARDED_BY(mu_);
  List servers_ PATRO_GUARDED_BY(mu_);
  std::unordered_map<std::string, Clock::time_point> last_logged_;  // the handler's thread only
};

struct PATRO_PRIVATE Broker::Impl {
  struct Binding {
    ObjectId id;
    std::string type_name;
    std::string reftype;
  };
  struct ServerRec {
    std::vector<std::string> lanes;           // routing ids; empty string: lane not registered
    std::vector<std::string> direct;          // each lane's direct endpoint (empty: none)
    std::unordered_set<std::string> clients;  // routing ids of clients that sent it requests
    KeySet names;
    uint64_t dedup_hits = 0, expired = 0;  // its counters, from its lanes' heartbeats
    uint64_t direct_requests = 0, brokered_requests = 0;
    uint64_t not_authorized = 0;  // requests it refused for their key's rights
    // Its process: random, and never shown to anyone, so in plaintext it is what proves that a
    // REGISTER or SERVER_ALIVE comes from the process that registered (docs/SECURITY.md).
    uint64_t incarnation = 0;
    std::string key;  // CURVE: the public key that registered it; all it sends carries this key
    // Plaintext: the restart_proof of the REGISTER that first registered the id (empty: none); a
    // process of another incarnation with it is this server restarted.
    std::string proof;
    // The highest wire version its lanes read (their REGISTER): requests go to it in that one.
    uint8_t wire_version = detail::kWireVersion;
  };
  struct LaneRec {
    uint64_t server = 0;
    Clock::time_point expiry;
  };
  // A request routed and not yet answered: the server it went to, and its body's bytes.
  struct Routed {
    uint64_t server = 0;
    size_t bytes = 0;
  };
  using PendingMap = std::unordered_map<uint64_t, Routed>;
  struct ClientRec {
    uint64_t client_id = 0;
    Clock::time_point expiry;
    std::unordered_set<uint64_t> servers;
    uint64_t last_server = 0;
    // Its requests routed and not yet answered: request id -> the server it went to. A REPLY is
    // forwarded only from a lane of that server (no other peer can answer in a server's name);
    // any of its lanes, as a deferred reply (a lock granted, a job taken) leaves by the lane
    // that resolved it. pending_bytes: their bodies together (BrokerOptions::max_client_bytes).
    PendingMap pending;
    size_t pending_bytes = 0;
    Clock::time_point last_sweep;  // when pending was last cleared of servers that are gone
    // What we sent it and its TCP has not acknowledged (BrokerOptions::max_client_unread).
    detail::UnreadBytes unread;
    // CURVE with a client allow list (rights per key): the key its requests came under, and the
    // servers (by incarnation) told so with KEY_RIGHTS before the first of them reached it.
    std::string key;
    std::unordered_map<uint64_t, uint64_t> rights_told;
    // The wire version of its latest request, which its replies go in.
    uint8_t wire_version = detail::kWireVersion;
  };
  struct Expiry {
    Clock::time_point when;
    bool client;
    std::string routing;
    bool operator>(const Expiry& o) const { return when > o.when; }
  };

  BrokerOptions opts;
  // This process: clients compare it across heartbeats, and resend what they have in flight when
  // it changes (the replies the last broker held were lost with it).
  const uint64_t instance = detail::random_id();
  zmq::context_t ctx{1};
  std::unique_ptr<ZapHandler> zap;  // with CURVE
  bool curve_front = false;
  int front_fd = -1;    // the connection the client message at hand came through (ZMQ_SRCFD)
  zmq::socket_t front;  // made in the constructor, with the limits applied
  zmq::socket_t back;
  // The connections on both ports, counted and capped off the routing loop.
  std::unique_ptr<detail::ConnectionCap> connections;
  int stop_fd = -1;  // eventfd: stop (a raw fd costs the poll nothing per message)
  std::string front_endpoint, back_endpoint, advertised;

  std::unordered_map<uint64_t, ServerRec> servers;
  std::unordered_map<std::string, LaneRec> lanes;
  std::unordered_map<std::string, ClientRec> clients;
  // The connections of each client id, oldest first. A client that reconnected (a new routing
  // id: it moved to another broker and back, or its socket was remade) is the same client while
  // its old connection waits out its window here; that one's expiry must not tell its servers
  // the client is gone (they would release its locks and drop its parked takes).
  std::unordered_map<uint64_t, std::vector<std::string>> connections_of;
  // The requests still unanswered of clients dropped for silence (a raw client that never
  // heartbeats, parked on a lock): their replies still go to them, and a client that comes back
  // takes its own again. Forgotten after an hour, as the latency tracker forgets, or at once when
  // there are kMaxOrphans.
  struct Orphan {
    PendingMap pending;
    size_t pending_bytes = 0;
    Clock::time_point since;
  };
  std::unordered_map<std::string, Orphan> orphans;
  static constexpr size_t kMaxOrphans = 100'000;
  std::unordered_map<std::string, Binding, TextHash, std::equal_to<>> names;
  size_t registry_bytes = 0;  // what broker_info's reply takes for the names (kBindingBytes each)
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<>> expiries;
  Clock::time_point next_heartbeat;

  // Requests the servers refused for their key's rights (rights per key), as their heartbeats
  // report them, summed as they grew.
  std::atomic<uint64_t> server_refusals{0};
  std::atomic<uint64_t> routed{0}, replies{0}, dropped{0}, rejected{0}, n_servers{0}, n_clients{0},
      retried{0};
  // Metrics: rejections by code; with track_latency, requests in flight by (client routing id,
  // request id frame) and a histogram of their round trips through the broker.
  static constexpr size_t kCodes = 64;
  std::array<std::atomic<uint64_t>, kCodes> rejected_codes{};
  std::unordered_map<std::string, Clock::time_point> in_flight;
  std::array<std::atomic<uint64_t>, 32> latency_counts{};
  std::atomic<uint64_t> latency_sum_ns{0}, latency_count{0}, n_in_flight{0};
  std::atomic<bool> stopping{false};
  detail::AlignedScratch scratch;  // for control bodies that arrive misaligned

  // What the broker refuses from peers, by kind: counted each (metrics), logged a few times per
  // 10 s each (a peer can send them at will).
  enum Refusal : size_t {
    register_malformed,
    register_over_limits,
    server_id_taken,
    name_taken,
    name_of_other_server,
    registry_full,
    alive_forged,
    reply_unrouted,
    key_mismatch,
    key_revoked,
    too_many_pending,
    client_bytes,
    client_unread,
    not_authorized,
    kRefusals
  };
  static constexpr std::array<const char*, kRefusals> kRefusalNames{
      "register_malformed",   "register_over_limits", "server_id_taken",  "name_taken",
      "name_of_other_server", "registry_full",        "alive_forged",     "reply_unrouted",
      "key_mismatch",         "key_revoked",          "too_many_pending", "client_bytes",
      "client_unread",        "not_authorized"};
  std::array<std::atomic<uint64_t>, kRefusals> refusals{};
  std::array<detail::LogLimiter, kRefusals> refusal_logs{};
  detail::LogLimiter& refuse(Refusal kind) {
    refusals[kind].fetch_add(1, std::memory_order_relaxed);
    return refusal_logs[kind];
  }
  // The allow lists the loop checks every message's key against (CURVE; null: any key), as the
  // ZAP handler read them last (lists_seen: its generation).
  ZapHandler::List allowed_clients, allowed_servers;
  // CURVE: the client keys vouched for to servers (their direct path), so that a key that leaves
  // the allow list is revoked at the servers too. Bounded: past it, no more are remembered (a
  // vouch not remembered is not revoked at the servers until they restart).
  KeySet vouched_keys;
  static constexpr size_t kMaxVouchedKeys = 100'000;
  uint64_t lists_seen = 0;
  // A name's share of broker_info's reply beyond its strings (its table, vtable, offsets).
  static constexpr size_t kBindingBytes = 64;

  explicit Impl(const BrokerOptions& o) : opts(o) {
    const bool curve = !opts.curve.empty();
    if (!curve && !opts.insecure) {
      for (const std::string* e : {&opts.frontend, &opts.backend})
        if (!is_loopback(*e))
          throw Error(Errc::invalid_argument,
                      "refusing to bind " + *e +
                          " without CURVE: off loopback anyone who reaches the port could read "
                          "and change every served object. Give the broker a key pair "
                          "(--curve-key FILE, from patro keygen), or pass --insecure "
                          "(BrokerOptions::insecure) to accept plaintext on purpose");
    }
    if (curve) {
      if (!curve_available())
        throw Error(Errc::unsupported, "this libzmq has no CURVE (built without libsodium)");
      if (!is_curve_key(opts.curve.public_key) || !is_curve_key(opts.curve.secret_key))
        throw Error(Errc::invalid_argument, "the broker's CURVE key pair is not two Z85 keys");
      zap = std::make_unique<ZapHandler>(ctx, opts);
      for (const auto& [list, file, port] :
           {std::tuple{&opts.allow_clients, &opts.allow_clients_file, "client"},
            std::tuple{&opts.allow_servers, &opts.allow_servers_file, "server"}})
        if (list->empty() && file->empty())
          PATRO_LOG(warn, "broker") << "no allow list for the " << port
                                    << " port: any CURVE key is accepted there (encrypted, but "
                                       "not authenticated)";
    }
    front = detail::make_socket(ctx, zmq::socket_type::router, opts.limits);
    back = detail::make_socket(ctx, zmq::socket_type::router, opts.limits);
    curve_front = curve;
    if (curve) {
      detail::set_curve_server(front, opts.curve, kClientDomain);
      detail::set_curve_server(back, opts.curve, kServerDomain);
    }
    // Before binding: every connection is counted.
    connections = std::make_unique<detail::ConnectionCap>(
        ctx, front, back, opts.max_connections != 0 ? opts.max_connections : descriptor_cap());
    bind(front, opts.frontend);
    bind(back, opts.backend);
    front_endpoint = front.get(zmq::sockopt::last_endpoint);
    back_endpoint = back.get(zmq::sockopt::last_endpoint);
    connections->start(tcp_port(front_endpoint), tcp_port(back_endpoint));
    advertised = opts.advertise.empty() ? front_endpoint : opts.advertise;
    stop_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (stop_fd < 0) throw detail::os_failure("eventfd", errno);
  }

  // A port in use is the system's state, not a bad argument: os_failure, saying so; an endpoint
  // that does not parse or resolve stays invalid_argument.
  static void bind(zmq::socket_t& socket, const std::string& endpoint) {
    try {
      socket.bind(endpoint);
    } catch (const zmq::error_t& e) {
      if (e.num() == EADDRINUSE)
        throw detail::os_failure("broker cannot bind " + endpoint + " (the port is in use)",
                                 e.num());
      throw Error(Errc::invalid_argument, "broker cannot bind " + endpoint + ": " + e.what());
    }
  }

  ~Impl() {
    if (stop_fd >= 0) ::close(stop_fd);
    connections.reset();
    front.close();
    back.close();
    zap.reset();
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  std::chrono::milliseconds window() const { return opts.heartbeat.window(); }

  // --- connections: counted and capped by ConnectionCap ---

  // The default cap: the descriptors this process may open, less 64 for its own (the listening
  // sockets, libzmq's mailboxes, log files, the metrics responder).
  static size_t descriptor_cap() {
    rlimit r{};
    if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 1'000'000;
    return r.rlim_cur > 128 ? static_cast<size_t>(r.rlim_cur) - 64 : 64;
  }

  static int tcp_port(const std::string& endpoint) {
    if (endpoint.rfind("tcp://", 0) != 0) return -1;
    const auto colon = endpoint.rfind(':');
    try {
      return std::stoi(endpoint.substr(colon + 1));
    } catch (const std::exception&) {
      return -1;
    }
  }

  // To a client, [routing][frames...]: what goes to a client we know is counted in its unread
  // bytes (`to`, or looked up).
  void send_front(Multipart& m, ClientRec* to) {
    // A client that sent its requests in version 2 gets its replies so: [envelope][body].
    if (to && to->wire_version >= detail::kEnvelopeVersion) detail::pack_envelope(m, 1, false);
    if (to) to->unread.sent(m, 1, curve_front);
    if (!detail::send_multipart(front, m)) ++dropped;
  }
  void send_front(Multipart& m) {
    auto it = clients.find(routing_of(m[0]));
    send_front(m, it == clients.end() ? nullptr : &it->second);
  }
  void send_back(Multipart& m) {
    if (!detail::send_multipart(back, m)) ++dropped;
  }

  /// Answers a request with the broker's own error. NO_ROUTE (no server to take it now) tells a
  /// client that the request surely did not run, so it may resend it; REPLY is final.
  void reject(zmq::message_t routing, uint64_t request_id, Errc code, const std::string& text,
              Command how = Command::reply) {
    ++rejected;
    ++rejected_codes[std::min(static_cast<size_t>(code), kCodes - 1)];
    Multipart m;
    m.push_back(std::move(routing));
    m.push_back(detail::header_frame(how));
    m.push_back(detail::u64_frame(request_id));
    m.push_back(detail::error_reply(request_id, code, text));
    send_front(m);
  }

  // Whether the key the message's connection authenticated with is on the list (CURVE).
  static bool allowed(const KeyRights& list, const zmq::message_t& m) {
    return list.find(key_of(m)) != list.end();
  }
  // The rights of the key the message's connection authenticated with, where they limit it (a
  // client allow list names it with rights); null: everything.
  const AllowEntry* limits_of(const zmq::message_t& m) const {
    if (!allowed_clients) return nullptr;
    auto it = allowed_clients->find(key_of(m));
    return it != allowed_clients->end() && it->second.restricted() ? &it->second : nullptr;
  }
  // The rights text of a key ("" when on no list or unrestricted: everything).
  std::string rights_text_of(const std::string& key) const {
    if (!allowed_clients) return {};
    auto it = allowed_clients->find(key);
    return it == allowed_clients->end() ? std::string() : it->second.rights_text();
  }

  // Rights per key: before the first request of a client (its routing, under its key) reaches a
  // server, the server's lane is told the key and its rights (KEY_RIGHTS), on the socket the
  // request then takes, so the lane knows them when it runs it. Told again when the client's key
  // changes (another connection took its routing id), the server restarted, or the lists were
  // read again.
  void tell_rights(ClientRec& client, const zmq::message_t& props, const std::string& routing,
                   const std::string& lane, uint64_t server_id, const ServerRec& server) {
    if (!allowed_clients) return;
    std::string key = key_of(props);
    if (key != client.key) {
      client.key = std::move(key);
      client.rights_told.clear();
    }
    auto [it, fresh] = client.rights_told.try_emplace(server_id, server.incarnation);
    if (!fresh && it->second == server.incarnation) return;
    it->second = server.incarnation;
    const std::string rights = rights_text_of(client.key);
    Multipart out;
    out.reserve(6);
    out.push_back(routing_frame(lane));
    out.push_back(detail::header_frame(Command::key_rights));
    out.push_back(zmq::message_t(client.key.data(), client.key.size()));
    out.push_back(zmq::message_t(rights.data(), rights.size()));
    out.push_back(detail::u64_frame(client.client_id));
    out.push_back(zmq::message_t(routing.data(), routing.size()));
    // Not sent (the lane's connection is gone): told with the next request that gets through.
    if (!detail::send_multipart(back, out)) {
      ++dropped;
      client.rights_told.erase(server_id);
    }
  }

  ClientRec& touch_client(const std::string& routing, uint64_t client_id, Clock::time_point now) {
    auto [it, inserted] = clients.try_emplace(routing);
    it->second.expiry = now + window();
    it->second.unread.seen_on(front_fd);
    if (client_id != 0 && it->second.client_id != client_id) {
      if (it->second.client_id != 0) forget_connection(it->second.client_id, routing);
      it->second.client_id = client_id;
      connections_of[client_id].push_back(routing);
    }
    if (inserted) {
      n_clients = clients.size();
      if (auto o = orphans.find(routing); o != orphans.end()) {
        it->second.pending = std::move(o->second.pending);
        it->second.pending_bytes = o->second.pending_bytes;
        orphans.erase(o);
      }
      expiries.push({it->second.expiry, true, routing});
      PATRO_LOG(debug, "broker") << "client " << printable(routing) << " connected";
      heartbeat_client(routing);  // a client that came back learns at once who we are
    }
    return it->second;
  }

  // --- front end: clients ---

  void on_front(Multipart& f, Clock::time_point now) {
    if (f.size() < 2) return void(++dropped);
    // A version 2 REQUEST is read as the version 1 frames it stands for. Its envelope keeps the
    // connection's properties (the key, the descriptor), which the frames made from it lack.
    zmq::message_t envelope;
    if (!detail::unpack_envelope_keeping(f, 1, envelope)) {
      PATRO_LOG(debug, "broker") << "dropped a client message with a malformed envelope";
      return void(++dropped);
    }
    const bool v2 = envelope.size() != 0;
    const zmq::message_t& props = v2 ? envelope : f[1];
    const auto cmd = detail::parse_header(f[1]);
    if (!cmd) {
      PATRO_LOG(debug, "broker") << "dropped a client message with a bad header";
      return void(++dropped);
    }
    const std::string routing = routing_of(f[0]);
    front_fd = zmq_msg_get(props.handle(), ZMQ_SRCFD);
    if (allowed_clients && !allowed(*allowed_clients, props)) {
      PATRO_LOG_LIMITED(warn, "broker", refuse(key_revoked))
          << "refused a message from client key " << key_fingerprint(key_of(props))
          << ": no longer on the allow list";
      auto request_id =
          *cmd == Command::request && f.size() >= 4 ? detail::parse_u64(f[3]) : std::nullopt;
      if (request_id)
        reject(std::move(f[0]), *request_id, Errc::not_authorized,
               "the broker no longer allows this client's key (it left the allow list)");
      return;
    }
    switch (*cmd) {
      case Command::request:
        return on_request(f, routing, now, props,
                          v2 ? detail::kEnvelopeVersion : detail::kWireVersion);
      case Command::cancel:
        return on_cancel(f, routing, now);
      case Command::log_subscribe:
        return on_log_subscribe(f, routing, now);
      case Command::heartbeat: {
        auto id = f.size() == 3 ? detail::parse_u64(f[2]) : std::nullopt;
        if (!id) return void(++dropped);
        touch_client(routing, *id, now);
        return;
      }
      case Command::hello:
        return on_hello(f, routing, now);
      case Command::lookup:
        return on_lookup(f, routing, now);
      case Command::broker_info:
        return on_info(f, routing, now);
      case Command::locate:
        return on_locate(f, routing, now);
      case Command::disconnect: {
        auto it = clients.find(routing);
        if (it != clients.end()) drop_client(it, false);
        return;
      }
      default:
        PATRO_LOG(debug, "broker")
            << "dropped unexpected " << detail::command_name(*cmd) << " from a client";
        ++dropped;
    }
  }

  // props: the frame that carries the connection's properties; version: the one it came in, which
  // the client's replies go in.
  void on_request(Multipart& f, const std::string& routing, Clock::time_point now,
                  const zmq::message_t& props, uint8_t version) {
    // [routing][hdr][object id][request id][body], then [attempt] on a resent request
    std::optional<uint64_t> request_id = f.size() >= 4 ? detail::parse_u64(f[3]) : std::nullopt;
    if (!request_id) return void(++dropped);  // nothing to answer to
    auto oid = detail::parse_object_id(f[2]);
    if ((f.size() != 5 && f.size() != 6) || !oid)
      return reject(std::move(f[0]), *request_id, Errc::bad_message,
                    "a request needs 5 frames with a 16-byte object id");
    if (f.size() == 6) ++retried;
    if (f[4].size() > opts.limits.max_message_size)
      return reject(std::move(f[0]), *request_id, Errc::message_too_large,
                    "request body of " + std::to_string(f[4].size()) +
                        " bytes is over the broker's limit of " +
                        std::to_string(opts.limits.max_message_size));
    ClientRec& client = touch_client(routing, 0, now);
    client.wire_version = version;
    auto sit = servers.find(oid->server);
    if (sit == servers.end())
      return reject(std::move(f[0]), *request_id, Errc::server_unavailable,
                    "no server " + ObjectId{oid->server, 0}.to_hex().substr(0, 16) +
                        " is registered (it went away, or never was)",
                    Command::no_route);
    ServerRec& server = sit->second;
    // Requests from one client go to one lane, so they run in the order the client sent them.
    // Never to another while that lane is away (registering, or registering again after the broker
    // dropped a server it thought dead): its thread may still be running this client's earlier
    // requests, and the two lanes would interleave them. NO_ROUTE instead: nothing ran, and the
    // client resends after a backoff, once the lane is back.
    const size_t n = server.lanes.size();
    const size_t lane = std::hash<std::string>{}(routing) % n;
    if (server.lanes[lane].empty())
      return reject(std::move(f[0]), *request_id, Errc::server_unavailable,
                    "the server is registering (lane " + std::to_string(lane) + " of " +
                        std::to_string(n) + " is not yet back)",
                    Command::no_route);
    const size_t bytes = f[4].size();
    switch (room_for(client, *request_id, bytes, now)) {
      case Room::yes:
        break;
      case Room::requests:
        PATRO_LOG_LIMITED(warn, "broker", refuse(too_many_pending))
            << "client " << printable(routing) << " has " << client.pending.size()
            << " requests unanswered; refusing more until replies come";
        return reject(std::move(f[0]), *request_id, Errc::overloaded,
                      "this client has " + std::to_string(client.pending.size()) +
                          " requests unanswered at the broker, its limit",
                      Command::no_route);
      case Room::bytes:
        PATRO_LOG_LIMITED(warn, "broker", refuse(client_bytes))
            << "client " << printable(routing) << " has " << client.pending_bytes
            << " bytes of requests unanswered; refusing more until replies come";
        return reject(std::move(f[0]), *request_id, Errc::overloaded,
                      "this client has " + std::to_string(client.pending_bytes) +
                          " bytes of requests unanswered at the broker; " + std::to_string(bytes) +
                          " more would pass its limit of " + std::to_string(opts.max_client_bytes),
                      Command::no_route);
    }
    if (client.unread.over(opts.max_client_unread)) {
      PATRO_LOG_LIMITED(warn, "broker", refuse(client_unread))
          << "client " << printable(routing) << " has not read " << client.unread.unread()
          << " bytes sent to it; refusing its requests until it reads them";
      return reject(std::move(f[0]), *request_id, Errc::overloaded, unread_text(client),
                    Command::no_route);
    }
    expect_reply(client, *request_id, oid->server, bytes);
    if (client.last_server != oid->server) {
      client.last_server = oid->server;
      client.servers.insert(oid->server);
      server.clients.insert(routing);
    }
    if (opts.track_latency && in_flight.size() < opts.max_tracked) {
      in_flight[routing + std::string(f[3].to_string_view())] = now;
      n_in_flight = in_flight.size();
    }
    tell_rights(client, props, routing, server.lanes[lane], oid->server, server);
    // The lane learns the request's age from when we forwarded it (our clock; it knows the
    // offset from our heartbeats), so a deadline that passed while it queued is kept.
    Multipart out;
    out.reserve(6);
    out.push_back(routing_frame(server.lanes[lane]));
    out.push_back(detail::stamped_header_frame(Command::request, clock_ns(now)));
    out.push_back(std::move(f[0]));
    out.push_back(std::move(f[2]));
    out.push_back(std::move(f[3]));
    out.push_back(std::move(f[4]));
    // A server that reads version 2 gets [envelope][body].
    if (server.wire_version >= detail::kEnvelopeVersion) detail::pack_envelope(out, 1, true);
    if (!detail::send_multipart(back, out)) {
      // The lane's connection is gone (a process that died and that its restart has not yet
      // replaced) or its queue is full: nothing of the request left, so it surely did not run.
      if (auto it = client.pending.find(*request_id); it != client.pending.end()) {
        client.pending_bytes -= it->second.bytes;
        client.pending.erase(it);
      }
      if (opts.track_latency &&
          in_flight.erase(routing + std::string(detail::u64_frame(*request_id).to_string_view())))
        n_in_flight = in_flight.size();
      return reject(routing_frame(routing), *request_id, Errc::server_unavailable,
                    "lane " + std::to_string(lane) + " of server " + short_id(oid->server) +
                        " cannot take it now (its connection is gone, or its queue is full)",
                    Command::no_route);
    }
    ++routed;
  }

  void on_cancel(Multipart& f, const std::string& routing, Clock::time_point now) {
    // [routing][hdr][object id][request id][client id]: to the lane its requests go to (as in
    // on_request), behind them, never answered; nothing to route it to drops it (the request it
    // names cannot be waiting there either).
    auto oid = f.size() == 5 ? detail::parse_object_id(f[2]) : std::nullopt;
    if (!oid || !detail::parse_u64(f[3]) || !detail::parse_u64(f[4])) return void(++dropped);
    touch_client(routing, 0, now);
    auto sit = servers.find(oid->server);
    if (sit == servers.end() || sit->second.lanes.empty()) return;
    const ServerRec& server = sit->second;
    const size_t lane = std::hash<std::string>{}(routing) % server.lanes.size();
    if (server.lanes[lane].empty()) return;
    Multipart out;
    out.reserve(6);
    out.push_back(routing_frame(server.lanes[lane]));
    out.push_back(detail::header_frame(Command::cancel));
    out.push_back(std::move(f[0]));
    out.push_back(std::move(f[2]));
    out.push_back(std::move(f[3]));
    out.push_back(std::move(f[4]));
    send_back(out);
  }

  void on_log_subscribe(Multipart& f, const std::string& routing, Clock::time_point now) {
    // [routing][hdr][server id][client id]([level][selections]): to the lane the client's
    // requests go to (as a CANCEL), never answered. The client talks to that server from now on:
    // it hears CLIENT_GONE when the client goes (ending the subscription), and the server's
    // LOG_LINEs for it are forwarded.
    const bool subscribe = f.size() == 6;
    auto server_id = subscribe || f.size() == 4 ? detail::parse_u64(f[2]) : std::nullopt;
    if (!server_id || !detail::parse_u64(f[3]) || (subscribe && !detail::parse_u64(f[4])) ||
        (subscribe && f[5].size() > kMaxLogSelections))
      return void(++dropped);
    ClientRec& client = touch_client(routing, 0, now);
    auto sit = servers.find(*server_id);
    if (sit == servers.end() || sit->second.lanes.empty()) return;
    ServerRec& server = sit->second;
    const size_t lane = std::hash<std::string>{}(routing) % server.lanes.size();
    if (server.lanes[lane].empty()) return;
    client.servers.insert(*server_id);
    server.clients.insert(routing);
    Multipart out;
    out.reserve(f.size() + 1);
    out.push_back(routing_frame(server.lanes[lane]));
    out.push_back(detail::header_frame(Command::log_subscribe));
    out.push_back(std::move(f[0]));
    for (size_t i = 2; i < f.size(); ++i) out.push_back(std::move(f[i]));
    send_back(out);
  }

  // A server's LOG_LINE, [routing][hdr][client routing][host][pid][level][who][time][text]
  // [dropped]: forwarded to a client that talks to that server and reads what it is sent; any
  // other is dropped (counted), never queued here.
  void on_log_line(Multipart& f, std::unordered_map<std::string, LaneRec>::iterator lit) {
    if (f.size() != 10 || lit == lanes.end()) return void(++dropped);
    size_t bytes = 0;
    for (const auto& m : f) bytes += m.size();
    if (bytes > opts.limits.max_message_size) return void(++dropped);
    auto cit = clients.find(routing_of(f[2]));
    if (cit == clients.end() || !cit->second.servers.count(lit->second.server) ||
        cit->second.unread.over(opts.max_client_unread))
      return void(++dropped);
    Multipart out;
    out.reserve(9);
    out.push_back(std::move(f[2]));
    out.push_back(std::move(f[1]));
    for (size_t i = 3; i < f.size(); ++i) out.push_back(std::move(f[i]));
    send_front(out, &cit->second);
  }

  // Whether the client may have one more request of `bytes` unanswered: not if it has as many
  // as a socket queues (Limits::high_water_mark), nor if their bodies would pass
  // BrokerOptions::max_client_bytes (a client with none unanswered may always send one). Only
  // requests whose server is still registered count (the others are cleared at most once a
  // window). A resent request takes its own place.
  enum class Room { yes, requests, bytes };
  Room room_for(ClientRec& client, uint64_t request_id, size_t bytes, Clock::time_point now) {
    const size_t cap = static_cast<size_t>(std::max(opts.limits.high_water_mark, 1024));
    auto room = [&] {
      const auto it = client.pending.find(request_id);
      if (it != client.pending.end()) {
        const size_t others = client.pending_bytes - it->second.bytes;
        return others == 0 || others + bytes <= opts.max_client_bytes ? Room::yes : Room::bytes;
      }
      if (client.pending.size() >= cap) return Room::requests;
      if (!client.pending.empty() && client.pending_bytes + bytes > opts.max_client_bytes)
        return Room::bytes;
      return Room::yes;
    };
    Room r = room();
    if (r == Room::yes || now - client.last_sweep < window()) return r;
    client.last_sweep = now;
    for (auto it = client.pending.begin(); it != client.pending.end();) {
      if (servers.count(it->second.server)) {
        ++it;
        continue;
      }
      client.pending_bytes -= it->second.bytes;
      it = client.pending.erase(it);
    }
    return room();
  }

  // Notes that the reply to request_id is to come from a lane of `server`.
  static void expect_reply(ClientRec& client, uint64_t request_id, uint64_t server, size_t bytes) {
    auto [it, inserted] = client.pending.try_emplace(request_id);
    if (!inserted) client.pending_bytes -= it->second.bytes;
    it->second = Routed{server, bytes};
    client.pending_bytes += bytes;
  }

  // A client's control request, [routing][hdr][u64][Control]: its verified body, or nullptr.
  const wire::Control* front_control(Multipart& f) {
    return f.size() == 4 ? detail::verified_control(f[3], opts.limits, scratch) : nullptr;
  }

  // Answers a front_control() request: [routing][hdr][its u64][Control(body)].
  void answer_front(Multipart& f, Command cmd, flatbuffers::FlatBufferBuilder& fb,
                    wire::ControlBody type, flatbuffers::Offset<void> body) {
    fb.Finish(wire::CreateControl(fb, type, body), wire::ControlIdentifier());
    Multipart out;
    out.push_back(std::move(f[0]));
    out.push_back(detail::header_frame(cmd));
    out.push_back(std::move(f[2]));
    out.push_back(detail::body_frame(fb));
    send_front(out);
  }

  void on_hello(Multipart& f, const std::string& routing, Clock::time_point now) {
    auto request_id = f.size() == 4 ? detail::parse_u64(f[2]) : std::nullopt;
    const wire::Control* c = front_control(f);
    const wire::Hello* hello = c ? c->body_as_Hello() : nullptr;
    if (!request_id || !hello) return void(++dropped);
    touch_client(routing, hello->client_id(), now);
    flatbuffers::FlatBufferBuilder fb(128);
    auto w = wire::CreateWelcomeDirect(fb, static_cast<uint32_t>(opts.heartbeat.interval.count()),
                                       opts.heartbeat.liveness, opts.limits.max_message_size,
                                       instance, back_endpoint.c_str(), detail::kEnvelopeVersion);
    answer_front(f, Command::welcome, fb, wire::ControlBody::Welcome, w.Union());
  }

  void on_lookup(Multipart& f, const std::string& routing, Clock::time_point now) {
    auto request_id = f.size() == 4 ? detail::parse_u64(f[2]) : std::nullopt;
    const wire::Control* c = front_control(f);
    const wire::Lookup* lookup = c ? c->body_as_Lookup() : nullptr;
    if (!request_id || !lookup || !lookup->name()) return void(++dropped);
    touch_client(routing, 0, now);
    const std::string name = lookup->name()->str();
    flatbuffers::FlatBufferBuilder fb(256);
    if (const AllowEntry* rights = limits_of(f[1]); rights && !rights->reaches(name)) {
      PATRO_LOG_LIMITED(info, "broker", refuse(not_authorized))
          << "refused a lookup of '" << name << "' by client key " << key_fingerprint(rights->key)
          << " (" << rights->rights_text() << ")";
      std::string globs;
      for (const auto& g : rights->names) globs += (globs.empty() ? "" : ", ") + g;
      const auto text =
          fb.CreateString("lookup of '" + name + "' refused: this client's key (" +
                          key_fingerprint(rights->key) + ") may reach only the names " + globs);
      wire::LookupReplyBuilder lr(fb);
      lr.add_found(false);
      lr.add_refusal(text);
      return answer_front(f, Command::lookup_reply, fb, wire::ControlBody::LookupReply,
                          lr.Finish().Union());
    }
    auto it = names.find(name);
    flatbuffers::Offset<wire::NameBinding> nb;
    if (it != names.end()) {
      nb = wire::CreateNameBindingDirect(fb, name.c_str(), it->second.id.server,
                                         it->second.id.object, it->second.type_name.c_str(),
                                         it->second.reftype.c_str());
    }
    auto lr = wire::CreateLookupReply(fb, it != names.end(), nb);
    answer_front(f, Command::lookup_reply, fb, wire::ControlBody::LookupReply, lr.Union());
  }

  void on_info(Multipart& f, const std::string& routing, Clock::time_point now) {
    auto request_id = f.size() == 4 ? detail::parse_u64(f[2]) : std::nullopt;
    const wire::Control* c = front_control(f);
    if (!request_id || !c || !c->body_as_BrokerInfoRequest()) return void(++dropped);
    touch_client(routing, 0, now);
    flatbuffers::FlatBufferBuilder fb(1024);
    uint64_t dedup_hits = 0, expired = 0;
    std::vector<flatbuffers::Offset<wire::NameBinding>> nbs;
    nbs.reserve(names.size());
    const AllowEntry* rights = limits_of(f[1]);  // a key limited to some names sees only those
    for (const auto& [name, b] : names)
      if (!rights || rights->reaches(name))
        nbs.push_back(wire::CreateNameBindingDirect(fb, name.c_str(), b.id.server, b.id.object,
                                                    b.type_name.c_str(), b.reftype.c_str()));
    std::vector<flatbuffers::Offset<wire::ServerInfo>> sis;
    sis.reserve(servers.size());
    for (const auto& [id, s] : servers) {
      const auto live = std::count_if(s.lanes.begin(), s.lanes.end(),
                                      [](const std::string& l) { return !l.empty(); });
      sis.push_back(wire::CreateServerInfo(
          fb, id, static_cast<uint32_t>(live), static_cast<uint32_t>(s.clients.size()),
          s.dedup_hits, s.expired, s.direct_requests, s.brokered_requests, s.not_authorized));
      dedup_hits += s.dedup_hits;
      expired += s.expired;
    }
    auto r = wire::CreateBrokerInfoReplyDirect(fb, &nbs, &sis, routed, replies, dropped, rejected,
                                               n_clients, n_servers, retried, dedup_hits, expired,
                                               zap ? zap->refused() : 0);
    answer_front(f, Command::broker_info_reply, fb, wire::ControlBody::BrokerInfoReply, r.Union());
  }

  // [routing][hdr][server id][Control(Locate)]: the server's direct endpoints. The client talks
  // to that server from now on (perhaps only directly), so it hears CLIENT_GONE when the client
  // goes: its locks and leases are released whichever way its requests went.
  void on_locate(Multipart& f, const std::string& routing, Clock::time_point now) {
    auto server_id = f.size() == 4 ? detail::parse_u64(f[2]) : std::nullopt;
    const wire::Control* c = front_control(f);
    const wire::Locate* locate = c ? c->body_as_Locate() : nullptr;
    if (!server_id || !locate || locate->server() != *server_id) return void(++dropped);
    ClientRec& client = touch_client(routing, 0, now);
    flatbuffers::FlatBufferBuilder fb(256);
    std::vector<flatbuffers::Offset<flatbuffers::String>> eps;
    flatbuffers::Offset<flatbuffers::String> server_key;
    uint8_t wire_version = detail::kWireVersion;  // what its direct ROUTERs read
    if (auto sit = servers.find(*server_id); sit != servers.end()) {
      wire_version = sit->second.wire_version;
      client.servers.insert(*server_id);
      sit->second.clients.insert(routing);
      // The server learns that the client is attached here now (several brokers: one that moved
      // keeps its locks when the broker it left expires it), and under CURVE that we vouch for
      // the client's key: the server's direct ROUTERs admit it.
      const std::string client_key = zap ? key_of(f[1]) : std::string();
      if (!client_key.empty() && vouched_keys.size() < kMaxVouchedKeys)
        vouched_keys.insert(client_key);
      if (client.client_id != 0 || !client_key.empty()) {
        for (const auto& l : sit->second.lanes) {
          if (l.empty()) continue;
          send_client_at(l, client.client_id, client_key, rights_text_of(client_key));
          break;  // one lane tells the whole server
        }
      }
      if (zap) server_key = fb.CreateString(sit->second.key);
      bool any = false;
      for (size_t i = 0; i < sit->second.lanes.size(); ++i) {
        const bool has = i < sit->second.direct.size() && !sit->second.lanes[i].empty() &&
                         !sit->second.direct[i].empty();
        any = any || has;
        eps.push_back(fb.CreateString(has ? sit->second.direct[i] : std::string()));
      }
      if (!any) eps.clear();
    } else {
      // Not registered (yet: we may have restarted before it): it is told when it registers.
      // (Bounded: a client cannot make us remember any number of unknown ids.)
      if (client.servers.size() < kMaxServersPerClient) client.servers.insert(*server_id);
    }
    auto ev = fb.CreateVector(eps);
    wire::LocateReplyBuilder lr(fb);
    lr.add_server(*server_id);
    lr.add_endpoints(ev);
    if (!server_key.IsNull()) lr.add_server_key(server_key);
    if (wire_version > detail::kWireVersion) lr.add_wire_version(wire_version);
    answer_front(f, Command::locate_reply, fb, wire::ControlBody::LocateReply, lr.Finish().Union());
  }

  // [client id]([client key]([rights])): the key (Z85) under CURVE, which the server's direct
  // path admits, and its rights there (an allow-list line's text; none: everything), given in the
  // same message so that the key is never admitted without them.
  void send_client_at(const std::string& lane, uint64_t client_id,
                      const std::string& client_key = {}, const std::string& rights = {}) {
    Multipart at;
    at.push_back(routing_frame(lane));
    at.push_back(detail::header_frame(Command::client_at));
    at.push_back(detail::u64_frame(client_id));
    if (!client_key.empty()) {
      at.push_back(zmq::message_t(client_key.data(), client_key.size()));
      if (!rights.empty()) at.push_back(zmq::message_t(rights.data(), rights.size()));
    }
    send_back(at);
  }

  // --- back end: servers ---

  void on_back(Multipart& f, Clock::time_point now) {
    if (f.size() < 2) return void(++dropped);
    // A version 2 REPLY is read as its version 1 frames (its envelope keeps the key, as in
    // on_front).
    zmq::message_t envelope;
    if (!detail::unpack_envelope_keeping(f, 1, envelope)) {
      PATRO_LOG(debug, "broker") << "dropped a server message with a malformed envelope";
      return void(++dropped);
    }
    const zmq::message_t& props = envelope.size() != 0 ? envelope : f[1];
    const auto cmd = detail::parse_header(f[1]);
    if (!cmd) {
      PATRO_LOG(debug, "broker") << "dropped a server message with a bad header";
      return void(++dropped);
    }
    const std::string routing = routing_of(f[0]);
    auto lit = lanes.find(routing);
    if (zap) {
      // CURVE: a server's sockets all carry the key that registered it. (A peer may pick its
      // routing id, and the routers hand an id over to its newest connection.)
      const std::string key = key_of(props);
      if (allowed_servers && allowed_servers->find(key) == allowed_servers->end()) {
        PATRO_LOG_LIMITED(warn, "broker", refuse(key_revoked))
            << "refused a message from server key " << key_fingerprint(key)
            << ": no longer on the allow list";
        return;
      }
      if (lit != lanes.end()) {
        auto sit = servers.find(lit->second.server);
        if (sit != servers.end() && sit->second.key != key) {
          PATRO_LOG_LIMITED(warn, "broker", refuse(key_mismatch))
              << "refused a " << detail::command_name(*cmd) << " from key " << key_fingerprint(key)
              << " on a lane of server " << short_id(sit->first) << ", which key "
              << key_fingerprint(sit->second.key) << " registered";
          return;
        }
      }
    }
    switch (*cmd) {
      case Command::reply: {
        // [routing][hdr][client routing][request id][body]
        if (f.size() != 5) return void(++dropped);
        // Only from a lane of the server the request was routed to. A lane we do not know (we
        // restarted while it ran a call) is told to register again; the client resends what it had
        // in flight when it sees our new instance, and the server's reply cache answers it.
        if (lit == lanes.end()) send_to_lane(routing, Command::disconnect);
        ClientRec* client = nullptr;
        if (lit == lanes.end() || !take_reply(f, lit->second.server, client)) {
          PATRO_LOG_LIMITED(info, "broker", refuse(reply_unrouted))
              << "refused a REPLY from "
              << (lit == lanes.end() ? std::string("an unregistered socket")
                                     : "a lane of server " + short_id(lit->second.server))
              << ": the broker did not route that request there";
          return;
        }
        lit->second.expiry = now + window();
        if (opts.track_latency) observe_reply(f[2], f[3], now);
        if (client && client->unread.over(opts.max_client_unread)) {
          // Held back: the request ran, and the server's reply cache keeps its answer for the
          // client's resend (NO_ROUTE asks for one) once it reads what it was sent.
          PATRO_LOG_LIMITED(warn, "broker", refuse(client_unread))
              << "held back a reply of " << f[4].size() << " bytes to client "
              << printable(routing_of(f[2])) << ", which has not read " << client->unread.unread()
              << " bytes sent to it";
          // NO_ROUTE with outcome_unknown: it ran; resend it for its answer.
          const auto request_id = detail::parse_u64(f[3]);
          return reject(std::move(f[2]), request_id.value_or(0), Errc::outcome_unknown,
                        "its reply of " + std::to_string(f[4].size()) +
                            " bytes was held back, as " + unread_text(*client),
                        Command::no_route);
        }
        Multipart out;
        out.reserve(4);
        out.push_back(std::move(f[2]));
        out.push_back(std::move(f[1]));
        out.push_back(std::move(f[3]));
        out.push_back(std::move(f[4]));
        send_front(out, client);
        ++replies;
        return;
      }
      case Command::heartbeat: {
        if (lit == lanes.end()) return send_to_lane(routing, Command::disconnect);
        lit->second.expiry = now + window();
        // [dedup hits][expired]([direct][brokered]): the server's counters, on each lane's
        // heartbeat (an older server sends the first two only).
        const bool counters = f.size() == 4 || f.size() == 6 || f.size() == 7;
        auto hits = counters ? detail::parse_u64(f[2]) : std::nullopt;
        auto expired = counters ? detail::parse_u64(f[3]) : std::nullopt;
        auto sit = servers.find(lit->second.server);
        if (hits && expired && sit != servers.end()) {
          sit->second.dedup_hits = *hits;
          sit->second.expired = *expired;
          auto direct = f.size() >= 6 ? detail::parse_u64(f[4]) : std::nullopt;
          auto brokered = f.size() >= 6 ? detail::parse_u64(f[5]) : std::nullopt;
          if (direct && brokered) {
            sit->second.direct_requests = *direct;
            sit->second.brokered_requests = *brokered;
          }
          if (auto refused = f.size() == 7 ? detail::parse_u64(f[6]) : std::nullopt) {
            if (*refused > sit->second.not_authorized)
              server_refusals += *refused - sit->second.not_authorized;
            sit->second.not_authorized = *refused;
          }
        }
        return;
      }
      case Command::register_server:
        return on_register(f, routing, now);
      case Command::server_alive: {
        // The process lives: none of its lanes is dead, however long its calls run.
        // [server id]([incarnation]): believed only from that process (docs/SECURITY.md).
        auto id = f.size() == 3 || f.size() == 4 ? detail::parse_u64(f[2]) : std::nullopt;
        const uint64_t incarnation = f.size() == 4 ? detail::parse_u64(f[3]).value_or(0) : 0;
        auto sit = id ? servers.find(*id) : servers.end();
        if (sit == servers.end()) return;
        const ServerRec& s = sit->second;
        bool from_it;
        if (zap)
          from_it = key_of(f[1]) == s.key && (incarnation == 0 || incarnation == s.incarnation);
        else
          from_it = (lit != lanes.end() && lit->second.server == *id) ||
                    (incarnation != 0 && incarnation == s.incarnation);
        if (!from_it) {
          PATRO_LOG_LIMITED(warn, "broker", refuse(alive_forged))
              << "refused a SERVER_ALIVE for server " << short_id(*id)
              << ": not from the process that registered it";
          return;
        }
        for (const std::string& l : sit->second.lanes) {
          auto it = l.empty() ? lanes.end() : lanes.find(l);
          if (it != lanes.end()) it->second.expiry = now + window();
        }
        return;
      }
      case Command::log_line:
        return on_log_line(f, lit);
      case Command::disconnect:
        if (lit != lanes.end()) drop_lane(lit, "disconnected");
        return;
      default:
        PATRO_LOG(debug, "broker")
            << "dropped unexpected " << detail::command_name(*cmd) << " from a server";
        ++dropped;
    }
  }

  std::string unread_text(const ClientRec& client) const {
    return "this client has not read " + std::to_string(client.unread.unread()) +
           " bytes the broker sent it, past its limit of " + std::to_string(opts.max_client_unread);
  }

  // Whether the REPLY [routing][hdr][client routing][request id][body] from a lane of `server`
  // answers a request this broker routed to that server; if so, the request is answered, and
  // `answered` is its client's record (nullptr for a client dropped for silence).
  bool take_reply(const Multipart& f, uint64_t server, ClientRec*& answered) {
    auto request_id = detail::parse_u64(f[3]);
    if (!request_id) return false;
    const std::string client = routing_of(f[2]);
    ClientRec* to = nullptr;
    PendingMap* pending = nullptr;
    size_t* pending_bytes = nullptr;
    if (auto cit = clients.find(client); cit != clients.end()) {
      pending = &cit->second.pending;
      pending_bytes = &cit->second.pending_bytes;
      to = &cit->second;
    } else if (auto oit = orphans.find(client); oit != orphans.end()) {
      pending = &oit->second.pending;
      pending_bytes = &oit->second.pending_bytes;
    }
    if (pending == nullptr) return false;
    auto pit = pending->find(*request_id);
    if (pit == pending->end() || pit->second.server != server) return false;
    *pending_bytes -= pit->second.bytes;
    pending->erase(pit);
    answered = to;
    return true;
  }

  void observe_reply(const zmq::message_t& client, const zmq::message_t& request_id,
                     Clock::time_point now) {
    std::string key(client.to_string_view());
    key += request_id.to_string_view();
    auto it = in_flight.find(key);
    if (it == in_flight.end()) return;
    const double seconds = std::chrono::duration<double>(now - it->second).count();
    in_flight.erase(it);
    n_in_flight = in_flight.size();
    const auto& bounds = BrokerStats::latency_bounds();
    size_t b = 0;
    while (b < bounds.size() && seconds > bounds[b]) ++b;
    ++latency_counts[b];
    latency_sum_ns += static_cast<uint64_t>(seconds * 1e9);
    ++latency_count;
  }

  void forget_old_requests(Clock::time_point now) {
    for (auto it = orphans.begin(); it != orphans.end();)
      it = it->second.pending.empty() || now - it->second.since > std::chrono::hours(1)
               ? orphans.erase(it)
               : std::next(it);
    if (!opts.track_latency || in_flight.empty()) return;
    const auto cutoff = now - std::chrono::hours(1);
    for (auto it = in_flight.begin(); it != in_flight.end();)
      it = it->second < cutoff ? in_flight.erase(it) : std::next(it);
    n_in_flight = in_flight.size();
  }

  void send_to_lane(const std::string& routing, Command c) {
    Multipart out;
    out.push_back(routing_frame(routing));
    out.push_back(detail::header_frame(c));
    send_back(out);
  }

  // Why a REGISTER is over the limits (BrokerOptions: names, their bytes, each string's size);
  // empty if it is not. O(names), and nothing is done with it before this.
  std::string over_limits(const wire::Register& reg) const {
    const size_t most = opts.max_name_bytes;
    if (reg.direct() && reg.direct()->size() > most)
      return "its direct endpoint is " + std::to_string(reg.direct()->size()) + " bytes (at most " +
             std::to_string(most) + ")";
    if (reg.restart_proof() && reg.restart_proof()->size() > detail::kMaxServerSecret)
      return "its restart proof is " + std::to_string(reg.restart_proof()->size()) +
             " bytes (at most " + std::to_string(detail::kMaxServerSecret) + ")";
    if (!reg.names()) return {};
    if (reg.names()->size() > opts.max_register_names)
      return "it carries " + std::to_string(reg.names()->size()) + " names (at most " +
             std::to_string(opts.max_register_names) + " per REGISTER)";
    size_t bytes = 0;
    for (const auto* nb : *reg.names()) {
      for (const auto* text : {nb->name(), nb->type_name(), nb->reftype()}) {
        if (!text) continue;
        if (text->size() > most)
          return "one of its strings (a name, type name or reftype) is " +
                 std::to_string(text->size()) + " bytes (at most " + std::to_string(most) + ")";
        bytes += text->size();
      }
    }
    if (bytes > opts.max_register_bytes)
      return "its names take " + std::to_string(bytes) + " bytes (at most " +
             std::to_string(opts.max_register_bytes) + " per REGISTER)";
    return {};
  }

  // Why a REGISTER for a live server id may not join it; empty if it may (the same process: a
  // lane registering, or registering again from a new socket). Under CURVE the key that
  // registered the id decides (the same key and another incarnation: the server restarted, and
  // the caller replaces the old process); in plaintext the incarnation does, which only that
  // process and this broker know, or the restart proof the id was first registered with (another
  // incarnation with it: the server restarted, replaced the same way).
  std::string claim_refusal(const ServerRec& s, const wire::Register& reg, std::string_view key,
                            const std::string& routing) const {
    const std::string id = short_id(reg.server_id());
    if (zap) {
      if (key != s.key)
        return "server id " + id + " belongs to key " + key_fingerprint(s.key) +
               ", which registered it and is alive; this key (" + key_fingerprint(key) +
               ") may not take it";
      if (reg.incarnation() != s.incarnation) return {};  // restarted: replaces the old one
    } else if (reg.incarnation() != s.incarnation) {
      if (same_proof(s.proof, proof_of(reg))) return {};  // restarted: replaces the old one
      return "server id " + id + " is registered by another live process (another incarnation" +
             (s.proof.empty() ? std::string()
              : proof_of(reg).empty()
                  ? std::string(", and this REGISTER has no restart proof")
                  : std::string(", and this REGISTER's restart proof is not the id's")) +
             "): refused until that one unregisters or misses its heartbeats";
    }
    if (reg.lanes() != s.lanes.size())
      return "server id " + id + " is registered with " + std::to_string(s.lanes.size()) +
             " lanes, not " + std::to_string(reg.lanes());
    // An older server sends no incarnation: then a lane's socket is replaced only once it died.
    if (s.incarnation == 0 && !zap && !s.lanes[reg.lane()].empty() &&
        s.lanes[reg.lane()] != routing)
      return "lane " + std::to_string(reg.lane()) + " of server " + id +
             " is held by another live socket (a server without an incarnation)";
    return {};
  }

  // Answers a refused REGISTER: REGISTERED with the refusal and, as for names another server
  // owns, the names it asked for (a server asks again each interval while any are refused, so a
  // restarted one gets in once its old process is dropped).
  void refuse_register(const std::string& routing, const std::string& why,
                       const wire::Register* reg) {
    flatbuffers::FlatBufferBuilder fb(256);
    std::vector<flatbuffers::Offset<wire::NameBinding>> owned;
    if (reg && reg->names()) {
      for (const auto* nb : *reg->names()) {
        if (!nb->name() || owned.size() >= 64) continue;
        auto it = names.find(view(nb->name()));
        const Binding b =
            it != names.end() ? it->second : Binding{{reg->server_id(), nb->object()}, {}, {}};
        owned.push_back(wire::CreateNameBindingDirect(fb, nb->name()->c_str(), b.id.server,
                                                      b.id.object, b.type_name.c_str(),
                                                      b.reftype.c_str()));
      }
    }
    auto text = fb.CreateString(why);
    auto refused = owned.empty() ? 0 : fb.CreateVector(owned);
    wire::RegisteredBuilder r(fb);
    r.add_heartbeat_ms(static_cast<uint32_t>(opts.heartbeat.interval.count()));
    r.add_liveness(opts.heartbeat.liveness);
    r.add_clock_ns(clock_ns(Clock::now()));
    if (!owned.empty()) r.add_refused(refused);
    r.add_refusal(text);
    const auto body = r.Finish();
    fb.Finish(wire::CreateControl(fb, wire::ControlBody::Registered, body.Union()),
              wire::ControlIdentifier());
    Multipart out;
    out.push_back(routing_frame(routing));
    out.push_back(detail::header_frame(Command::registered));
    out.push_back(detail::body_frame(fb));
    send_back(out);
  }

  void on_register(Multipart& f, const std::string& routing, Clock::time_point now) {
    const wire::Control* c =
        f.size() == 3 ? detail::verified_control(f[2], opts.limits, scratch) : nullptr;
    const wire::Register* reg = c ? c->body_as_Register() : nullptr;
    if (!reg || reg->lanes() == 0 || reg->lanes() > opts.limits.max_lanes ||
        reg->lane() >= reg->lanes()) {
      PATRO_LOG_LIMITED(warn, "broker", refuse(register_malformed))
          << "dropped a malformed REGISTER";
      return void(++dropped);
    }
    const uint64_t server_id = reg->server_id();
    if (const std::string why = over_limits(*reg); !why.empty()) {
      PATRO_LOG_LIMITED(warn, "broker", refuse(register_over_limits))
          << "refused a REGISTER for server " << short_id(server_id) << ": " << why;
      return refuse_register(routing, "refused: " + why, nullptr);
    }
    const std::string key = zap ? key_of(f[1]) : std::string();
    if (auto old = servers.find(server_id); old != servers.end()) {
      if (const std::string why = claim_refusal(old->second, *reg, key, routing); !why.empty()) {
        PATRO_LOG_LIMITED(warn, "broker", refuse(server_id_taken)) << "refused a REGISTER: " << why;
        return refuse_register(routing, why, reg);
      }
      // Another incarnation with the same key (CURVE) or the same restart proof (plaintext): the
      // server restarted before we saw it die. The first process's calls in flight are lost;
      // its clients hear it went away.
      if (old->second.incarnation != reg->incarnation()) drop_server(old, "restarted");
    }
    auto lit = lanes.find(routing);
    if (lit != lanes.end() && lit->second.server != server_id) drop_lane(lit, "re-used");
    auto [sit, inserted] = servers.try_emplace(server_id);
    ServerRec& server = sit->second;
    server.incarnation = reg->incarnation();
    server.wire_version =
        std::clamp<uint8_t>(reg->wire_version(), detail::kWireVersion, detail::kBundleVersion);
    if (inserted) {
      server.key = std::string(key);
      if (!zap) server.proof = std::string(proof_of(*reg));
    }
    if (server.lanes.size() != reg->lanes()) server.lanes.resize(reg->lanes());
    server.direct.resize(reg->lanes());
    server.direct[reg->lane()] = reg->direct() ? reg->direct()->str() : std::string();
    // A lane that registers again from a new socket replaces its old socket.
    const std::string old = server.lanes[reg->lane()];
    if (!old.empty() && old != routing) lanes.erase(old);
    server.lanes[reg->lane()] = routing;
    auto [nl, lane_new] = lanes.try_emplace(routing);
    nl->second.server = server_id;
    nl->second.expiry = now + window();
    if (lane_new) expiries.push({nl->second.expiry, false, routing});
    KeySet refused;  // names another live server owns
    if (reg->names()) {
      for (const auto* nb : *reg->names()) {
        if (!nb->name()) continue;
        const std::string_view name = view(nb->name());
        const bool first_lane = reg->lane() == 0;  // log once per server, not once per lane
        // A server names its own objects only: a binding it makes is its to keep and to lose.
        if (nb->server() != server_id) {
          refuse(name_of_other_server);
          if (first_lane)
            PATRO_LOG_LIMITED(warn, "broker", refusal_logs[name_of_other_server])
                << "server " << short_id(server_id) << " may not bind the name '" << name
                << "' to an object of server " << short_id(nb->server());
          continue;
        }
        auto owner = names.find(name);
        // A name belongs to the live server that registered it first; it frees when that server
        // unregisters or misses its heartbeats (drop_server).
        if (owner != names.end() && owner->second.id.server != server_id &&
            servers.count(owner->second.id.server)) {
          if (refused.insert(std::string(name)).second) {
            refuse(name_taken);
            if (first_lane)
              PATRO_LOG_LIMITED(warn, "broker", refusal_logs[name_taken])
                  << "server " << short_id(server_id) << " may not take the name '" << name
                  << "': server " << short_id(owner->second.id.server) << " owns it";
          }
          continue;
        }
        Binding b{{nb->server(), nb->object()},
                  nb->type_name() ? nb->type_name()->str() : "",
                  nb->reftype() ? nb->reftype()->str() : ""};
        const size_t cost = name.size() + b.type_name.size() + b.reftype.size() + kBindingBytes;
        const size_t had = owner == names.end() ? 0
                                                : name.size() + owner->second.type_name.size() +
                                                      owner->second.reftype.size() + kBindingBytes;
        // The registry stays small enough for broker_info's reply (patro ls) to be one valid
        // message: at most max_names names, and half the message limit in bytes.
        if ((owner == names.end() && names.size() >= opts.max_names) ||
            registry_bytes - had + cost > opts.limits.max_message_size / 2) {
          refuse(registry_full);
          PATRO_LOG_LIMITED(warn, "broker", refusal_logs[registry_full])
              << "name registry full (" << names.size() << " names, " << registry_bytes
              << " bytes); not binding '" << name << "'";
          continue;
        }
        registry_bytes = registry_bytes - had + cost;
        if (owner == names.end())
          names.emplace(std::string(name), std::move(b));
        else
          owner->second = std::move(b);
        server.names.emplace(name);
      }
    }
    if (inserted) {
      n_servers = servers.size();
      PATRO_LOG(info, "broker") << "server " << short_id(server_id) << " registered ("
                                << reg->lanes() << " lanes"
                                << (zap ? ", key " + key_fingerprint(key) : std::string()) << ")";
      // Clients that located it before it registered (we restarted, and they were quicker than
      // it): it learns now that they are attached here.
      for (const auto& [croute, client] : clients) {
        if (!client.servers.count(server_id)) continue;
        server.clients.insert(croute);
        if (client.client_id != 0) send_client_at(routing, client.client_id);
      }
    }
    flatbuffers::FlatBufferBuilder fb(128);
    std::vector<flatbuffers::Offset<wire::NameBinding>> owned;
    for (const std::string& name : refused) {
      const Binding& b = names.find(name)->second;
      owned.push_back(wire::CreateNameBindingDirect(fb, name.c_str(), b.id.server, b.id.object,
                                                    b.type_name.c_str(), b.reftype.c_str()));
    }
    auto r = wire::CreateRegisteredDirect(
        fb, advertised.c_str(), static_cast<uint32_t>(opts.heartbeat.interval.count()),
        opts.heartbeat.liveness, clock_ns(now), refused.empty() ? nullptr : &owned);
    fb.Finish(wire::CreateControl(fb, wire::ControlBody::Registered, r.Union()),
              wire::ControlIdentifier());
    Multipart out;
    out.push_back(routing_frame(routing));
    out.push_back(detail::header_frame(Command::registered));
    out.push_back(detail::body_frame(fb));
    send_back(out);
  }

  void drop_lane(std::unordered_map<std::string, LaneRec>::iterator lit, const char* why) {
    const uint64_t server_id = lit->second.server;
    const std::string routing = lit->first;
    lanes.erase(lit);
    auto sit = servers.find(server_id);
    if (sit == servers.end()) return;
    bool any = false;
    for (auto& l : sit->second.lanes) {
      if (l == routing) l.clear();
      any = any || !l.empty();
    }
    if (!any) drop_server(sit, why);
  }

  void drop_server(std::unordered_map<uint64_t, ServerRec>::iterator sit, const char* why) {
    const uint64_t server_id = sit->first;
    PATRO_LOG(info, "broker") << "server " << ObjectId{server_id, 0}.to_hex().substr(0, 16)
                              << " dropped: " << why;
    for (const std::string& name : sit->second.names) {
      auto nit = names.find(name);
      if (nit == names.end() || nit->second.id.server != server_id) continue;
      registry_bytes -=
          name.size() + nit->second.type_name.size() + nit->second.reftype.size() + kBindingBytes;
      names.erase(nit);
    }
    for (const std::string& c : sit->second.clients) {
      auto cit = clients.find(c);
      if (cit == clients.end()) continue;
      ClientRec& client = cit->second;
      client.servers.erase(server_id);
      if (client.last_server == server_id) client.last_server = 0;
      // The requests this process had and did not answer, named, so that the client fails
      // those and not the ones it sent since, which a process that replaced this one (the
      // same id, restarted) takes: they are ours to forget as well.
      std::vector<uint64_t> ids;
      for (auto it = client.pending.begin(); it != client.pending.end();) {
        if (it->second.server != server_id) {
          ++it;
          continue;
        }
        ids.push_back(it->first);
        client.pending_bytes -= std::min(client.pending_bytes, it->second.bytes);
        it = client.pending.erase(it);
      }
      Multipart out;
      out.push_back(routing_frame(c));
      out.push_back(detail::header_frame(Command::server_down));
      out.push_back(detail::u64_frame(server_id));
      out.push_back(detail::u64_list_frame(ids));
      send_front(out);
    }
    for (const auto& l : sit->second.lanes)
      if (!l.empty()) lanes.erase(l);
    servers.erase(sit);
    n_servers = servers.size();
  }

  // silent: it missed its heartbeats (it may still be there, waiting for replies), rather than
  // said it leaves.
  // Takes routing off its client id's connections; the client's newest other connection here,
  // or clients.end() if that was its last.
  std::unordered_map<std::string, ClientRec>::iterator forget_connection(
      uint64_t client_id, const std::string& routing) {
    auto it = connections_of.find(client_id);
    if (it == connections_of.end()) return clients.end();
    std::erase(it->second, routing);
    while (!it->second.empty()) {
      auto live = clients.find(it->second.back());
      if (live != clients.end() && live->second.client_id == client_id) return live;
      it->second.pop_back();  // not expected: every record takes itself off as it goes
    }
    connections_of.erase(it);
    return clients.end();
  }

  void drop_client(std::unordered_map<std::string, ClientRec>::iterator cit, bool silent) {
    ClientRec& client = cit->second;
    PATRO_LOG(debug, "broker") << "client " << printable(cit->first) << " gone";
    const auto still =
        client.client_id != 0 ? forget_connection(client.client_id, cit->first) : clients.end();
    for (uint64_t s : client.servers) {
      if (still != clients.end()) {
        // The client is still here on a newer connection: that one answers for its servers
        // from now on (and tells them when it goes).
        if (still->second.servers.size() < kMaxServersPerClient) still->second.servers.insert(s);
        if (auto sit = servers.find(s); sit != servers.end()) {
          sit->second.clients.erase(cit->first);
          sit->second.clients.insert(still->first);
        }
        continue;
      }
      auto sit = servers.find(s);
      if (sit == servers.end()) continue;
      sit->second.clients.erase(cit->first);
      if (client.client_id == 0) continue;
      for (const auto& l : sit->second.lanes) {
        if (l.empty()) continue;
        Multipart out;
        out.push_back(routing_frame(l));
        out.push_back(detail::header_frame(Command::client_gone));
        out.push_back(detail::u64_frame(client.client_id));
        send_back(out);
        break;  // one lane tells the whole server
      }
    }
    if (silent && !cit->second.pending.empty() && orphans.size() < kMaxOrphans)
      orphans[cit->first] =
          Orphan{std::move(cit->second.pending), cit->second.pending_bytes, Clock::now()};
    clients.erase(cit);
    n_clients = clients.size();
  }

  void expire(Clock::time_point now) {
    while (!expiries.empty() && expiries.top().when <= now) {
      Expiry e = expiries.top();
      expiries.pop();
      if (e.client) {
        auto it = clients.find(e.routing);
        if (it == clients.end()) continue;
        if (it->second.expiry > now) {
          expiries.push({it->second.expiry, true, e.routing});
        } else {
          drop_client(it, true);
        }
      } else {
        auto it = lanes.find(e.routing);
        if (it == lanes.end()) continue;
        if (it->second.expiry > now) {
          expiries.push({it->second.expiry, false, e.routing});
        } else {
          drop_lane(it, "missed heartbeats");
        }
      }
    }
  }

  static uint64_t clock_ns(Clock::time_point t) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
  }

  // To a client: [instance]. To a lane: [our clock], from which it keeps the offset to its own.
  void heartbeat_client(const std::string& routing) {
    Multipart out;
    out.push_back(routing_frame(routing));
    out.push_back(detail::header_frame(Command::heartbeat));
    out.push_back(detail::u64_frame(instance));
    send_front(out);
  }

  void heartbeat_all() {
    for (const auto& [routing, lane] : lanes) {
      Multipart out;
      out.push_back(routing_frame(routing));
      out.push_back(detail::header_frame(Command::heartbeat));
      out.push_back(detail::u64_frame(clock_ns(Clock::now())));
      send_back(out);
    }
    for (const auto& [routing, client] : clients) heartbeat_client(routing);
  }

  // The allow lists were read again: from now on every message's key is checked against the new
  // ones (so the live sessions of a key that left a list are refused), and the servers that a
  // key no longer allowed registered are dropped.
  void revoke() {
    lists_seen = zap->generation();
    const ZapHandler::List old_clients = allowed_clients;
    std::tie(allowed_clients, allowed_servers) = zap->lists();
    if (allowed_clients) {
      // One message to each server, by one of its lanes (one lane tells the whole server).
      auto tell_every_server = [&](Command command,
                                   std::initializer_list<std::string_view> frames) {
        for (const auto& [id, s] : servers)
          for (const auto& l : s.lanes) {
            if (l.empty()) continue;
            Multipart out;
            out.push_back(routing_frame(l));
            out.push_back(detail::header_frame(command));
            for (const std::string_view f : frames)
              out.push_back(zmq::message_t(f.data(), f.size()));
            send_back(out);
            break;
          }
      };
      // Rights per key: every client's next request to each server tells the server its key's
      // rights again, and the servers' direct paths learn the new rights of the keys vouched
      // for there whose rights changed.
      for (auto& [routing, client] : clients) client.rights_told.clear();
      for (const std::string& key : vouched_keys) {
        const auto now_it = allowed_clients->find(key);
        if (now_it == allowed_clients->end()) continue;  // revoked below
        const std::string rights = now_it->second.rights_text();
        const auto was = old_clients ? old_clients->find(key) : KeyRights::const_iterator();
        if (old_clients && was != old_clients->end() && was->second.rights_text() == rights)
          continue;
        tell_every_server(Command::key_rights, {key, rights});
      }
      // Client keys vouched for to servers and no longer allowed: their direct sessions end too.
      for (auto it = vouched_keys.begin(); it != vouched_keys.end();) {
        if (allowed_clients->find(*it) != allowed_clients->end()) {
          ++it;
          continue;
        }
        tell_every_server(Command::key_revoked, {*it});
        PATRO_LOG(info, "broker") << "client key " << key_fingerprint(*it)
                                  << " left the allow list: revoked at the servers' direct paths";
        it = vouched_keys.erase(it);
      }
    }
    if (!allowed_servers) return;
    std::vector<uint64_t> gone;
    for (const auto& [id, s] : servers)
      if (allowed_servers->find(s.key) == allowed_servers->end()) gone.push_back(id);
    for (uint64_t id : gone) {
      refuse(key_revoked);
      PATRO_LOG(warn, "broker") << "server " << short_id(id) << ": its key "
                                << key_fingerprint(servers.at(id).key)
                                << " left the allow list; dropping it";
      drop_server(servers.find(id), "key revoked");
    }
  }

  // What is due at now: heartbeats to every peer (and forgetting old requests), then expiry.
  void timers(Clock::time_point now) {
    if (now >= next_heartbeat) {
      heartbeat_all();
      forget_old_requests(now);
      next_heartbeat = now + opts.heartbeat.interval;
    }
    expire(now);
  }

  void run() {
    PATRO_LOG(info, "broker") << "serving clients at " << front_endpoint << ", servers at "
                              << back_endpoint;
    next_heartbeat = Clock::now() + opts.heartbeat.interval;
    zmq::pollitem_t items[] = {{front.handle(), 0, ZMQ_POLLIN, 0},
                               {back.handle(), 0, ZMQ_POLLIN, 0},
                               {nullptr, stop_fd, ZMQ_POLLIN, 0}};
    Multipart msg;
    while (!stopping.load(std::memory_order_relaxed)) {
      auto now = Clock::now();
      auto until = next_heartbeat;
      if (!expiries.empty()) until = std::min(until, expiries.top().when);
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
      if (wait.count() < 0) wait = std::chrono::milliseconds(0);
      try {
        zmq::poll(items, 3, wait + std::chrono::milliseconds(1));
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;
        if (e.num() == ETERM) break;
        PATRO_LOG(error, "broker") << "poll failed: " << e.what() << "; going on";
        continue;
      }
      if (items[2].revents & ZMQ_POLLIN) break;
      // The broker's barrier: whatever one message or timer throws (zmq::error_t from a send,
      // bad_alloc) is logged and the broker goes on; no peer can end the process.
      try {
        if (zap && zap->generation() != lists_seen) revoke();
        // Bounded batches, so neither side starves the other or the timers. Each message is
        // stamped when it is read: one that took long to handle makes no later one look late.
        for (int i = 0; i < 256 && detail::recv_multipart(back, msg, true); ++i)
          on_back(msg, Clock::now());
        for (int i = 0; i < 256 && detail::recv_multipart(front, msg, true); ++i)
          on_front(msg, Clock::now());
        timers(Clock::now());
      } catch (const std::exception& e) {
        PATRO_LOG(error, "broker") << e.what() << "; going on";
      } catch (...) {
        PATRO_LOG(error, "broker") << "something not a std::exception was thrown; going on";
      }
    }
    PATRO_LOG(info, "broker") << "stopped";
  }
};

Broker::Broker(const BrokerOptions& options) : impl_(std::make_unique<Impl>(options)) {}
Broker::~Broker() = default;
std::string Broker::frontend_endpoint() const {
  return impl_->front_endpoint;
}
std::string Broker::backend_endpoint() const {
  return impl_->back_endpoint;
}
void Broker::run() {
  impl_->run();
}

void Broker::stop() {
  impl_->stopping = true;
  const uint64_t one = 1;
  (void)!::write(impl_->stop_fd, &one, sizeof one);
}

BrokerStats Broker::stats() const {
  BrokerStats s;
  s.routed = impl_->routed;
  s.replies = impl_->replies;
  s.dropped = impl_->dropped;
  s.rejected = impl_->rejected;
  s.servers = impl_->n_servers;
  s.clients = impl_->n_clients;
  s.retried = impl_->retried;
  s.refused = impl_->zap ? impl_->zap->refused() : 0;
  s.connections = impl_->connections->open();
  s.max_connections = impl_->connections->max();
  for (size_t k = 0; k < Impl::kRefusals; ++k)
    if (const uint64_t n = impl_->refusals[k].load(std::memory_order_relaxed))
      s.refused_by_kind[Impl::kRefusalNames[k]] = n;
  if (const uint64_t n = impl_->connections->refused()) s.refused_by_kind["connection_cap"] = n;
  // Requests the servers refused for their key's rights, as the servers report them.
  if (const uint64_t n = impl_->server_refusals.load(std::memory_order_relaxed))
    s.refused_by_kind["not_authorized_at_servers"] = n;
  for (size_t c = 0; c < Impl::kCodes; ++c)
    if (const uint64_t n = impl_->rejected_codes[c]) s.rejected_by_code[static_cast<Errc>(c)] = n;
  s.in_flight = impl_->n_in_flight;
  const size_t buckets = BrokerStats::latency_bounds().size() + 1;
  for (size_t b = 0; b < buckets; ++b) s.latency_counts.push_back(impl_->latency_counts[b]);
  s.latency_sum = static_cast<double>(impl_->latency_sum_ns.load()) / 1e9;
  s.latency_count = impl_->latency_count;
  return s;
}

void Broker::reload() {
  if (!impl_->zap) return;
  try {
    impl_->zap->load();
    PATRO_LOG(info, "broker") << "allow lists reloaded";
  } catch (const std::exception& e) {
    PATRO_LOG(error, "broker") << "allow lists not reloaded: " << e.what();
    throw;
  }
}

std::string Broker::public_key() const {
  return impl_->opts.curve.public_key;
}

void detail::BrokerDriver::deliver(Broker& b, bool back, Multipart& f,
                                   std::chrono::steady_clock::time_point now) {
  if (back) {
    b.impl_->on_back(f, now);
  } else {
    b.impl_->on_front(f, now);
  }
}

void detail::BrokerDriver::tick(Broker& b, std::chrono::steady_clock::time_point now) {
  b.impl_->timers(now);
}

const std::vector<double>& BrokerStats::latency_bounds() {
  static const std::vector<double> bounds{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                          0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                          1,      2.5,     5,      10,    30};
  return bounds;
}

}  // namespace patro
