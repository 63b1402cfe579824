#include "lane.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "ids.hpp"
#include "log.hpp"
#include "routing.hpp"
#include "server.hpp"

namespace patro::detail {

using Clock = std::chrono::steady_clock;

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}
constexpr auto kNever = Clock::time_point::max();
}  // namespace

void BrokerClock::observe(uint64_t broker_ns) {
  samples_[next_] = static_cast<int64_t>(broker_ns) - now_ns();
  next_ = (next_ + 1) % samples_.size();
  n_ = std::min(n_ + 1, samples_.size());
}

std::chrono::nanoseconds BrokerClock::age(uint64_t forwarded_ns) const {
  if (n_ == 0) return std::chrono::nanoseconds(0);
  const int64_t offset = *std::max_element(samples_.begin(), samples_.begin() + n_);
  return std::chrono::nanoseconds(
      std::max<int64_t>(now_ns() + offset - static_cast<int64_t>(forwarded_ns), 0));
}

Lane::Lane(Server& server, unsigned index, int wake_fd, std::shared_ptr<Outbox> outbox)
    : server_(server),
      index_(index),
      wake_fd_(wake_fd),
      outbox_(std::move(outbox)),
      dispatcher_(
          server.objects_, server.options_, *server.locks_, server.replies_, outbox_,
          server.options_.idle_timeout.count() > 0
              ? std::function<void(uint64_t)>([&server](uint64_t c) { server.client_seen(c); })
              : std::function<void(uint64_t)>(),
          server.rights_.get()),
      encoder_(dispatcher_.encoder()),
      collect_every_(std::clamp<Clock::duration>(server.options_.reference_lease / 4,
                                                 std::chrono::milliseconds(5),
                                                 std::chrono::seconds(1))),
      next_collect_(Clock::now() + collect_every_) {
  const ServerOptions& options = server_.options_;
  encoder_.set_remote_refs(server_.remote_refs_.get());
  if (!server_.direct_bind_.empty()) {
    direct_ = detail::make_socket(server_.ctx_, zmq::socket_type::router, options.limits);
    direct_.set(zmq::sockopt::linger, static_cast<int>(options.limits.close_linger.count()));
    // Under CURVE: encrypted with the server's key, which the broker hands the clients it
    // vouches for; the gate admits those.
    if (server_.gate_)
      detail::set_curve_server(direct_, server_.curve_.keys, detail::DirectGate::kDomain);
    direct_endpoint_ = server_.bind_direct(direct_, index_);
    if (direct_endpoint_.empty()) direct_.close();
  }
  outbox_->set_direct(direct_.handle() != nullptr ? &direct_ : nullptr);
  reg_body_ = registration();

  const size_t n_brokers = server_.broker_endpoints_.size();
  links_.resize(n_brokers);
  socks_.reserve(n_brokers);
  for (size_t b = 0; b < n_brokers; ++b) {
    socks_.push_back(make_socket(b));
    send_register(socks_[b]);
    Link& l = links_[b];
    l.interval = options.heartbeat.interval;
    l.window = options.heartbeat.window();
    l.beats.start(Clock::now(), l.interval);
  }
  outbox_->set_brokers(&socks_);
  items_.push_back({nullptr, wake_fd_, ZMQ_POLLIN, 0});
  if (direct_.handle() != nullptr) items_.push_back({direct_.handle(), 0, ZMQ_POLLIN, 0});
  first_broker_item_ = items_.size();
  for (auto& sk : socks_) items_.push_back({sk.handle(), 0, ZMQ_POLLIN, 0});
}

std::string Lane::registration() const {
  flatbuffers::FlatBufferBuilder fb(512);
  std::vector<flatbuffers::Offset<wire::NameBinding>> names;
  for (size_t i = 0; i < server_.served_.size(); ++i) {
    if (server_.served_[i].name.empty()) continue;
    const ObjectEntry& e = server_.entries_[i];
    names.push_back(wire::CreateNameBindingDirect(fb, server_.served_[i].name.c_str(), e.id.server,
                                                  e.id.object, e.type_name.c_str(),
                                                  e.reftype.c_str()));
  }
  auto nv = fb.CreateVector(names);
  auto ep = direct_endpoint_.empty() ? 0 : fb.CreateString(direct_endpoint_);
  // The secret itself: there is no digest in this library's dependencies, and in plaintext a
  // digest would prove no more (whoever reads it can send it again); docs/SECURITY.md.
  const std::string& secret = server_.options_.server_secret;
  auto proof = secret.empty() ? 0
                              : fb.CreateVector(reinterpret_cast<const uint8_t*>(secret.data()),
                                                secret.size());
  auto reg = wire::CreateRegister(fb, server_.objects_.server_id(), index_,
                                  static_cast<uint32_t>(server_.lanes_.size()), nv,
                                  server_.incarnation_, ep, proof, kBundleVersion);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, reg.Union()),
            wire::ControlIdentifier());
  return std::string(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());
}

zmq::socket_t Lane::make_socket(size_t broker) const {
  const ServerOptions& options = server_.options_;
  zmq::socket_t s = detail::make_socket(server_.ctx_, zmq::socket_type::dealer, options.limits);
  if (server_.curve_.enabled()) detail::set_curve_client(s, server_.curve_, server_.curve_.keys);
  s.set(zmq::sockopt::linger, static_cast<int>(options.limits.close_linger.count()));
  s.connect(server_.broker_endpoints_[broker]);
  return s;
}

void Lane::send_register(zmq::socket_t& s) {
  Multipart m;
  m.push_back(header_frame(Command::register_server));
  m.push_back(zmq::message_t(reg_body_.data(), reg_body_.size()));
  send_multipart(s, m, false);
}

void Lane::send_simple(zmq::socket_t& s, Command c) {
  Multipart m;
  m.push_back(header_frame(c));
  send_multipart(s, m, true);
}

void Lane::send_heartbeat(zmq::socket_t& s) {
  Multipart m;
  m.push_back(header_frame(Command::heartbeat));
  m.push_back(u64_frame(server_.replies_.hits()));
  m.push_back(u64_frame(server_.replies_.expired()));
  m.push_back(u64_frame(server_.direct_requests_.load(std::memory_order_relaxed)));
  m.push_back(u64_frame(server_.brokered_requests_.load(std::memory_order_relaxed)));
  // Requests refused for their key's rights, once there are any (a broker older than this reads
  // only the four above, and only from a heartbeat of four or six frames).
  if (const uint64_t refused = server_.rights_->refused(); refused != 0)
    m.push_back(u64_frame(refused));
  send_multipart(s, m, true);
}

void Lane::handle_request(Multipart& rq, uint64_t stamp, size_t broker, uint8_t version) {
  if (rq.size() != 5) return;
  auto request_id = parse_u64(rq[3]);
  if (!request_id) return;
  serve_request(rq[1].to_string_view(), *request_id, rq[4], stamp, false, broker, {}, version);
}

void Lane::serve_request(std::string_view routing, uint64_t request_id, const zmq::message_t& body,
                         uint64_t stamp, bool is_direct, size_t broker, const std::string& key,
                         uint8_t version) {
  annotate_received(request_id);
  (is_direct ? server_.direct_requests_ : server_.brokered_requests_)
      .fetch_add(1, std::memory_order_relaxed);
  Taken taken{routing, {}, nullptr};
  if (!is_direct && needs_marking(static_cast<unsigned>(broker), routing)) {
    marked_ = broker_routing(static_cast<unsigned>(broker), routing);
    taken.routing = marked_;
  }
  if (stamp != 0) taken.age = links_[broker].clock.age(stamp);
  // Rights per key: looked up only once some broker said a key is limited.
  if (server_.rights_->any())
    taken.rights =
        is_direct ? server_.rights_->of_key(key) : server_.rights_->of_routing(taken.routing);
  zmq::message_t reply;
  std::optional<std::string> reroute;
  const Dispatched d =
      dispatcher_.dispatch_body(request_id, body, taken, scratch_, reply, reroute, owed_);
  // Parked, deferred or a copy of one running: its reply leaves later, by the outbox.
  // A brokered one's routing names its broker (marked, past the first): it leaves by that one.
  if (d == Dispatched::reply) {
    if (reroute)
      outbox_->reply(first(), *reroute, request_id, std::move(reply));
    else
      outbox_->reply(first(), taken.routing, request_id, std::move(reply), version);
  }
  outbox_->send_owed(first(), encoder_, owed_);
  run_dependents();
}

void Lane::run_dependents() {
  // Each finished dependent may release others (a chain): taken again until none is left.
  for (int round = 0; round < 1'000'000; ++round) {
    auto more = dispatcher_.take_released();
    for (auto& d : outbox_->take_released()) more.push_back(std::move(d));
    for (auto& d : std::exchange(released_, {})) more.push_back(std::move(d));
    if (more.empty()) return;
    for (ReplyCache::Dependent& d : more) {
      zmq::message_t reply;
      std::optional<std::string> reroute;
      const Dispatched out = dispatcher_.dispatch_dependent(d, scratch_, reply, reroute, owed_);
      if (out == Dispatched::reply)
        outbox_->reply(first(), reroute ? *reroute : d.routing, d.request_id, std::move(reply));
      outbox_->send_owed(first(), encoder_, owed_);
    }
  }
}

void Lane::release_client(uint64_t client_id) {
  const ServerOptions& options = server_.options_;
  if (server_.logs_) server_.logs_->unsubscribe(client_id);
  server_.locks_->drop_monitor(client_id, owed_);
  server_.replies_.forget(client_id);
  server_.objects_.drop_client(client_id);  // the references it held
  if (options.idle_timeout.count() > 0) server_.client_left(client_id);
  outbox_->send_owed(first(), encoder_, owed_);
  if (options.on_client_gone) {
    try {
      options.on_client_gone(client_id);
    } catch (const std::exception& e) {
      PATRO_LOG(error, "server") << "on_client_gone threw: " << e.what();
    } catch (...) {
      PATRO_LOG(error, "server") << "on_client_gone threw something not a std::exception";
    }
  }
}

void Lane::broker_lost(size_t broker, Clock::time_point now) {
  links_[broker].live = false;
  server_.broker_went_away(broker, now + 2 * links_[broker].window);
}

void Lane::broker_registered(size_t broker, Clock::time_point now) {
  links_[broker].live = true;
  server_.broker_came_back(now + 2 * links_[broker].window);
}

void Lane::check_lost(Clock::time_point now) {
  if (index_ != 0) return;
  bool any_live = false;
  for (const Link& l : links_) any_live = any_live || l.live;
  for (const size_t b : server_.brokers_to_check(now, any_live)) {
    const auto stale = server_.replies_.unconfirmed(static_cast<unsigned>(b));
    if (!stale.empty())
      PATRO_LOG(info, "server") << stale.size() << " client(s) attached through the broker at "
                                << server_.broker_endpoints_[b]
                                << " did not come back after it went away: released";
    for (uint64_t client_id : stale) release_client(client_id);
  }
}

void Lane::handle_registered(size_t broker, Multipart& m, Clock::time_point now) {
  const ServerOptions& options = server_.options_;
  Link& link = links_[broker];
  const wire::Control* c =
      m.size() == 2 ? verified_control(m[1], options.limits, scratch_) : nullptr;
  const wire::Registered* r = c ? c->body_as_Registered() : nullptr;
  if (r && r->clock_ns() != 0) link.clock.observe(r->clock_ns());
  if (r && r->heartbeat_ms() > 0) {
    link.interval =
        std::min(options.heartbeat.interval, std::chrono::milliseconds(r->heartbeat_ms()));
    // The alive thread beats at the fastest interval of any broker.
    int64_t alive = server_.alive_ms_.load();
    while ((alive == 0 || link.interval.count() < alive) &&
           !server_.alive_ms_.compare_exchange_weak(alive, link.interval.count())) {
    }
    if (r->liveness() > 0)
      link.window = std::chrono::milliseconds(int64_t{r->heartbeat_ms()} * r->liveness());
  }
  std::string refusal;
  if (r && r->refused()) {
    for (const auto* nb : *r->refused()) {
      if (!nb->name()) continue;
      refusal += (refusal.empty() ? "" : "; ") + std::string("the name '") + nb->name()->str() +
                 "' is registered at the broker " + server_.broker_endpoints_[broker] +
                 " by server " + ObjectId{nb->server(), 0}.to_hex().substr(0, 16) + " (object " +
                 ObjectId{nb->server(), nb->object()}.to_hex() +
                 "), which is alive: a name has one owner until it stops";
    }
  }
  // A REGISTER refused as a whole (its server id held by another live process): say why first.
  if (!refusal.empty() && r->refusal()) refusal = r->refusal()->str() + "; " + refusal;
  broker_registered(broker, now);
  if (!link.counted && !refusal.empty() && now + link.interval < server_.register_until_) {
    link.register_again = now + link.interval;
  } else if (!link.counted) {
    link.counted = true;
    server_.lane_registered(
        broker, r && r->client_endpoint() ? r->client_endpoint()->str() : std::string(), refusal);
  } else if (!refusal.empty() && index_ == 0) {
    PATRO_LOG(error, "server") << "registering again: " << refusal;
  }
}

void Lane::handle_broker(size_t broker, Multipart& m, Clock::time_point now) {
  Link& link = links_[broker];
  // The usual REQUEST, an inline envelope as the broker forwards it (its stamp and the client's
  // routing, no attempt), is read where it lies.
  if (m.size() == 1)
    if (const auto e = read_inline_envelope(m[0]); e && e->request &&
                                                   (e->flags & envelope_flag::kRouting) &&
                                                   (e->flags & envelope_flag::kAttempt) == 0) {
      const zmq::message_t body(e->body.data(), e->body.size());
      return serve_request(e->routing, e->request_id, body, e->stamp, false, broker, {},
                           kEnvelopeVersion);
    }
  // A version 2 REQUEST is read as the version 1 frames it stands for, and answered in version 2.
  const bool v2 = !m.empty() && is_envelope(m[0]);
  if (v2 && !unpack_envelope(m, 0)) return;
  uint64_t stamp = 0;  // a request's: when the broker forwarded it
  const auto cmd = m.empty() ? std::nullopt : parse_header(m[0], stamp);
  if (!cmd) return;
  switch (*cmd) {
    case Command::request:
      handle_request(m, stamp, broker, v2 ? kEnvelopeVersion : kWireVersion);
      break;
    case Command::heartbeat:
      if (auto clock = m.size() == 2 ? parse_u64(m[1]) : std::nullopt) link.clock.observe(*clock);
      break;
    case Command::registered:
      handle_registered(broker, m, now);
      break;
    case Command::disconnect:
      // The broker does not know this lane (it restarted): register again.
      PATRO_LOG(info, "server") << "lane " << index_ << " registering again at "
                                << server_.broker_endpoints_[broker];
      send_register(socks_[broker]);
      link.clock.reset();
      broker_lost(broker, now);
      break;
    case Command::client_at: {
      // A client located us at this broker: with several brokers, the one it is attached to.
      // [client id]([client key]): under CURVE the broker vouches for the key (the direct path).
      auto client_id = m.size() >= 2 && m.size() <= 4 ? parse_u64(m[1]) : std::nullopt;
      if (client_id && *client_id != 0) {
        server_.replies_.attach(*client_id, static_cast<unsigned>(broker), now);
        PATRO_LOG(debug, "server") << "client " << *client_id << " attached through the broker at "
                                   << server_.broker_endpoints_[broker];
      }
      // ([rights]): what the key may do (none: everything), kept before the key is admitted.
      if (client_id && (m.size() == 3 || m.size() == 4) && server_.gate_) {
        const std::string key(m[2].to_string_view());
        const bool ok = server_.rights_->set_key(key, m.size() == 4 ? m[3].to_string_view() : "") &&
                        server_.gate_->vouch(key);
        if (!ok)
          PATRO_LOG(debug, "server") << "a CLIENT_AT with a malformed client key or rights: "
                                        "ignored";
      }
      break;
    }
    case Command::key_rights: {
      // [client key][rights]([client id][client routing id]): what the key may do now; with the
      // last two, the requests this broker forwards from that routing come under the key.
      if (m.size() != 3 && m.size() != 5) break;
      const std::string key(m[1].to_string_view());
      if (!server_.rights_->set_key(key, m[2].to_string_view())) break;
      if (m.size() == 5) {
        const auto client_id = parse_u64(m[3]);
        if (!client_id) break;
        server_.rights_->bind(broker_routing(static_cast<unsigned>(broker), m[4].to_string_view()),
                              *client_id, key);
      }
      break;
    }
    case Command::key_revoked:
      // [client key]: it left the broker's allow list; its direct sessions end.
      if (m.size() == 2 && server_.gate_) {
        const std::string key(m[1].to_string_view());
        server_.gate_->revoke(key);
        PATRO_LOG(info, "server") << "client key " << key_fingerprint(key)
                                  << " revoked by the broker at "
                                  << server_.broker_endpoints_[broker];
      }
      break;
    case Command::log_subscribe:
      if (m.size() >= 2)
        handle_log_subscribe(m,
                             broker_routing(static_cast<unsigned>(broker), m[1].to_string_view()));
      break;
    case Command::client_gone: {
      // A client died or left: its locks are released and its waits dropped.
      auto client_id = m.size() == 2 ? parse_u64(m[1]) : std::nullopt;
      if (!client_id) break;
      // What this broker bound for it (its connections here) goes, wherever it went.
      server_.rights_->drop_client(*client_id, static_cast<unsigned>(broker));
      if (!server_.replies_.gone_at(*client_id, static_cast<unsigned>(broker))) {
        // It moved to another broker, which will tell us when it is gone.
        PATRO_LOG(debug, "server") << "client " << *client_id << " left "
                                   << server_.broker_endpoints_[broker] << " for another broker";
        break;
      }
      release_client(*client_id);
      break;
    }
    default:
      break;  // heartbeats
  }
}

bool Lane::refuse_revoked(zmq::message_t& router_id, std::optional<uint64_t> request_id,
                          const zmq::message_t& props, uint8_t version) {
  // From a session opened before its key was revoked, nothing runs any more; a request is
  // answered not_authorized.
  if (!server_.gate_->revoked(message_property(props, "User-Id"))) return false;
  if (!request_id) return true;
  Multipart no;
  no.push_back(std::move(router_id));
  append_reply(no, false, {}, *request_id,
               error_reply(*request_id, Errc::not_authorized,
                           "this client's key was revoked (it left the broker's allow list)"),
               version);
  send_multipart(direct_, no, true);
  return true;
}

namespace {
// The wire version a direct client reads its reply in, by its request's envelope flags.
uint8_t direct_version(uint8_t envelope_flags) {
  return envelope_flags & envelope_flag::kReadsBundles ? kBundleVersion : kEnvelopeVersion;
}
}  // namespace

void Lane::serve_direct(const zmq::message_t& router_id, uint64_t request_id,
                        const zmq::message_t& body, const zmq::message_t& props, uint8_t version) {
  const std::string routing = direct_routing(index_, router_id.to_string_view());
  const std::string key =
      server_.rights_->any() ? message_property(props, "User-Id") : std::string();
  serve_request(routing, request_id, body, 0, true, 0, key, version);
}

void Lane::handle_direct_request(Multipart& m, const InlineEnvelope& e,
                                 const zmq::message_t& props) {
  const uint8_t version = direct_version(e.flags);
  if (server_.gate_ && server_.gate_->any_revoked() &&
      refuse_revoked(m[0], e.request_id, props, version))
    return;
  serve_direct(m[0], e.request_id, zmq::message_t(e.body.data(), e.body.size()), props, version);
}

void Lane::handle_direct(Multipart& m, const zmq::message_t& bundle_props) {
  // Direct requests: [client id at the ROUTER][hdr][object id][request id][body]([attempt]), run
  // as a brokered one is, their reply leaving by the ROUTER; heartbeats are answered.
  // A version 2 REQUEST ([routing][envelope][body]) is read as its version 1 frames.
  // Its envelope keeps the session's properties (the client's key), which the frames made from it
  // lack.
  // One that came in a bundle keeps the properties in the bundle's frame (bundle_props); its
  // reply may go in a bundle when its envelope says the client reads them (version 3).
  // The usual one, an inline envelope as a client sends it (no broker's stamp or routing), is
  // read where it lies.
  if (m.size() == 2)
    if (const auto e = read_inline_envelope(m[1]);
        e && e->request && (e->flags & (envelope_flag::kRouting | envelope_flag::kStamp)) == 0)
      return handle_direct_request(m, *e, bundle_props.size() != 0 ? bundle_props : m[1]);
  zmq::message_t envelope;
  if (!unpack_envelope_keeping(m, 1, envelope)) return;
  const bool v2 = envelope.size() != 0;
  const zmq::message_t& props = bundle_props.size() != 0 ? bundle_props : v2 ? envelope : m[1];
  const uint8_t version = v2 ? direct_version(envelope_flags(envelope)) : kWireVersion;
  if (server_.gate_ && server_.gate_->any_revoked() && m.size() >= 2) {
    // [client id at the ROUTER][hdr][object id][request id]...
    const bool request = m.size() >= 4 && parse_header(m[1]) == Command::request;
    if (refuse_revoked(m[0], request ? parse_u64(m[3]) : std::nullopt, props, version)) return;
  }
  const auto cmd = m.size() >= 2 ? parse_header(m[1]) : std::nullopt;
  if (cmd == Command::request && (m.size() == 5 || m.size() == 6)) {
    // [client id at the ROUTER][hdr][object id][request id][body]([attempt, if resent])
    if (const auto request_id = parse_u64(m[3]))
      serve_direct(m[0], *request_id, m[4], props, version);
  } else if (cmd == Command::log_subscribe) {
    std::string routing = direct_routing(index_, m[0].to_string_view());
    std::swap(m[0], m[1]);  // [hdr][ROUTER id]...: as from a broker
    handle_log_subscribe(m, std::move(routing));
  } else if (cmd == Command::heartbeat) {
    Multipart hb;
    hb.push_back(std::move(m[0]));
    hb.push_back(header_frame(Command::heartbeat));
    send_multipart(direct_, hb, true);
  }
}

void Lane::handle_log_subscribe(Multipart& m, std::string routing) {
  // [hdr][client routing][server id][client id]([level][selections])
  static LogLimiter refused;
  if (!server_.logs_) return;
  const LogTapPause pause;  // a line about forwarding is not forwarded
  const bool subscribe = m.size() == 6;
  const auto server_id = subscribe || m.size() == 4 ? parse_u64(m[2]) : std::nullopt;
  const auto client_id = server_id ? parse_u64(m[3]) : std::nullopt;
  if (!client_id || *client_id == 0 || *server_id != server_.server_id()) return;
  if (!subscribe) {
    server_.logs_->unsubscribe(*client_id);
    return;
  }
  const auto verbosity = parse_u64(m[4]);
  std::optional<LogLevel> level;
  for (int l = 0; verbosity && l <= 6; ++l)
    if (log_verbosity(static_cast<LogLevel>(l)) == static_cast<int>(*verbosity))
      level = static_cast<LogLevel>(l);
  try {
    if (!level) throw Error(Errc::invalid_argument, "no such level");
    server_.logs_->subscribe(*client_id, std::move(routing), index_, *level,
                             LogSelection::parse(m[5].to_string_view()));
  } catch (const Error& e) {
    // Not forwarded: this line's component is the forwarder's own ("server" lines would be).
    PATRO_LOG_LIMITED(info, "logfwd", refused)
        << "refused client " << *client_id << "'s log subscription: " << e.what();
  }
}

void Lane::send_log_lines() {
  if (!server_.logs_) return;
  const LogTapPause pause;  // a line about a send is not forwarded
  for (auto& o : server_.logs_->take(index_))
    if (!outbox_->send_log_line(first(), o.routing, o.frames)) server_.logs_->not_sent(o.client_id);
}

void Lane::handle_cancel(const Multipart& m) {
  // [hdr][client routing] (brokered) or [routing][hdr] (direct), then [object id:16][request
  // id:8][client id:8]; the object id only routed it.
  const auto request_id = m.size() == 5 ? parse_u64(m[3]) : std::nullopt;
  const auto client_id = request_id ? parse_u64(m[4]) : std::nullopt;
  if (!client_id || *client_id == 0) return;  // a raw peer's ids are not deduplicated
  const bool recorded = server_.replies_.cancel(*client_id, *request_id, Clock::now(), released_);
  PATRO_LOG(debug, "server") << "lane " << index_ << ": client " << *client_id
                             << " cancelled request " << *request_id
                             << (recorded ? " before it ran" : ", already running or answered");
  run_dependents();  // those pipelined on it fail
}

void Lane::read_ahead() {
  const size_t most = std::max<size_t>(server_.options_.limits.lane_read_ahead, 1);
  // One message from each socket in turn, so that one flooding its socket does not keep the
  // others' messages from the lane (as each took at most a batch a turn before).
  auto read_one = [&](zmq::socket_t& s, bool direct, size_t broker) {
    if (ahead_.size() >= most) return false;
    Ahead a{{}, direct, broker};
    if (!recv_multipart(s, a.msg, true)) return false;
    if (!direct) links_[broker].beats.heard(Clock::now());
    const size_t header = direct ? 1 : 0;
    if (a.msg.size() > header && parse_header(a.msg[header]) == Command::cancel)
      handle_cancel(a.msg);
    else if (direct && a.msg.size() == 2 && is_bundle(a.msg[1]))
      split_direct_bundle(a);
    else
      ahead_.push_back(std::move(a));
    return true;
  };
  // A socket found empty is not asked again in this pass: each empty read costs a system call.
  bool direct_more = direct_.handle() != nullptr;
  dry_.assign(socks_.size(), false);
  for (bool more = true; more && ahead_.size() < most;) {
    more = direct_more = direct_more && read_one(direct_, true, 0);
    for (size_t b = 0; b < socks_.size(); ++b) {
      if (dry_[b]) continue;
      if (read_one(socks_[b], false, b))
        more = true;
      else
        dry_[b] = true;
    }
  }
  read_at_ = Clock::now();
}

void Lane::split_direct_bundle(Ahead& a) {
  if (!bundled_envelopes(a.msg[1], bundled_)) {
    // Dropped as a malformed envelope is (handle_direct): whoever sent it waits for its deadline.
    PATRO_LOG(debug, "server") << "lane " << index_ << ": a malformed bundle dropped";
    return;
  }
  for (std::string_view e : bundled_) {
    Ahead one{{}, true, 0};
    one.msg.reserve(2);
    one.msg.emplace_back(a.msg[0].data(), a.msg[0].size());
    one.props.copy(a.msg[1]);  // shares the bundle's buffer: no copy of its bytes
    if (one.props.data() == a.msg[1].data())
      // A view into that buffer, which one.props keeps alive (a constant message: libzmq neither
      // copies nor frees its bytes).
      one.msg.emplace_back(const_cast<char*>(e.data()), e.size(), nullptr);
    else
      one.msg.emplace_back(e.data(), e.size());  // a bundle small enough to be copied whole
    ahead_.push_back(std::move(one));
  }
}

std::string_view Lane::bundle_reader(const Ahead& a) {
  if (!a.direct || a.msg.size() != 2 ||
      (envelope_flags(a.msg[1]) & envelope_flag::kReadsBundles) == 0)
    return {};
  return a.msg[0].to_string_view();
}

bool Lane::from_reader_next(std::string_view reader) const {
  return !reader.empty() && !ahead_.empty() && ahead_.front().direct &&
         ahead_.front().msg.size() >= 2 && ahead_.front().msg[0].to_string_view() == reader;
}

bool Lane::pipelined_next() const {
  // [routing][hdr] (direct) or [hdr][client routing] (brokered), then [object id][request id]
  // [body], or in version 2 ([routing])[envelope][body]: a pipelined call names object 0 of its
  // server (docs/WIRE.md "Pipelining").
  if (ahead_.empty()) return false;
  const Ahead& a = ahead_.front();
  const size_t at = a.direct ? 1 : 0;
  if (a.msg.size() > at && is_envelope(a.msg[at])) {
    const auto id = envelope_object_id(a.msg[at]);
    return id && id->server != 0 && id->object == 0;
  }
  uint64_t stamp = 0;
  if (a.msg.size() < 5 || parse_header(a.msg[a.direct ? 1 : 0], stamp) != Command::request)
    return false;
  const auto id = parse_object_id(a.msg[2]);
  return id && id->server != 0 && id->object == 0;
}

void Lane::collect(Clock::time_point now) {
  if (index_ != 0 || now < next_collect_) return;
  if (const size_t freed = server_.objects_.collect(now); freed > 0)
    PATRO_LOG(debug, "server") << "freed " << freed << " object(s) no client holds";
  next_collect_ = now + collect_every_;
}

void Lane::keep_links(Clock::time_point now) {
  for (size_t b = 0; b < socks_.size(); ++b) {
    Link& l = links_[b];
    if (l.beats.beat_due(now, l.interval)) send_heartbeat(socks_[b]);
    if (now >= l.register_again) {
      l.register_again = kNever;
      send_register(socks_[b]);
    }
    // Silent past its window, unless what it sent waits unread (we were in a long call): a new
    // socket would drop it.
    if (l.beats.overdue(now, l.window) && !(socks_[b].get(zmq::sockopt::events) & ZMQ_POLLIN)) {
      // The broker went silent: a new socket, and register again (Majordomo's reconnect).
      const bool newly = l.beats.went_silent(now);
      if (newly)
        PATRO_LOG(warn, "server") << "lane " << index_ << ": broker "
                                  << server_.broker_endpoints_[b] << " silent for "
                                  << l.window.count() << " ms; reconnecting";
      socks_[b].set(zmq::sockopt::linger, 0);
      socks_[b].close();
      socks_[b] = make_socket(b);
      send_register(socks_[b]);
      l.clock.reset();  // perhaps another broker
      if (newly) broker_lost(b, now);
    }
  }
}

// How long the lane handles what it read ahead before it reads its sockets again.
constexpr auto kReadAgain = std::chrono::microseconds(100);
// How many replies the lane holds to send together (Outbox::hold), at most: a bundle's worth.
constexpr size_t kHeldReplies = kMaxBundle;

bool Lane::turn() {
  auto now = Clock::now();
  auto until = index_ == 0 ? std::min(server_.next_lost_check(), next_collect_) : kNever;
  for (const Link& l : links_) until = std::min({until, l.beats.next_beat(), l.register_again});
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
  if (wait.count() < 0) wait = std::chrono::milliseconds(0);
  for (size_t b = 0; b < socks_.size(); ++b)
    items_[first_broker_item_ + b].socket = socks_[b].handle();
  try {
    zmq::poll(items_.data(), items_.size(),
              ahead_.empty() ? wait + std::chrono::milliseconds(1) : std::chrono::milliseconds(0));
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return true;
    PATRO_LOG(error, "server") << "lane " << index_ << " poll failed: " << e.what();
    return false;
  }
  if (items_[0].revents & ZMQ_POLLIN) {
    uint64_t n;
    (void)!::read(wake_fd_, &n, sizeof n);
    if (outbox_->flush(first(), encoder_)) return false;
    run_dependents();
    send_log_lines();
  }
  // Everything waiting is read ahead before the next message is handled, and again after any
  // that took longer than kReadAgain: a CANCEL that reached the lane before its request runs is
  // applied first (docs/WIRE.md "Cancelling"). Not after each message: a read that finds nothing
  // costs libzmq a system call per socket, which halved the pipelined rate when paid per request.
  read_ahead();
  // The replies to a chain of pipelined calls read together leave together (Outbox::hold): while
  // the next message read ahead is a call pipelined on an earlier one, at most kHeldReplies of
  // them and for at most kReadAgain. So do the replies to a direct client that reads bundles
  // while the next message is its too (requests it sent together, or that queued while the lane
  // ran): they leave in one bundle, one message and one CURVE box. Replies to other requests are
  // not held: a client with a few independent calls in flight waits for the first.
  Clock::time_point held_since{};
  struct SendHeld {  // also when a message's handling throws
    Outbox& o;
    ~SendHeld() { o.send_held(); }
  } send_held{*outbox_};
  for (size_t batch = 0; batch < 64 * (socks_.size() + 1) && !ahead_.empty(); ++batch) {
    Ahead a = std::move(ahead_.front());
    ahead_.pop_front();
    const std::string reader(bundle_reader(a));
    if (!outbox_->holding() && (pipelined_next() || from_reader_next(reader))) {
      outbox_->hold();
      held_since = Clock::now();
    }
    if (a.direct)
      handle_direct(a.msg, a.props);
    else
      handle_broker(a.broker, a.msg, Clock::now());
    if (server_.logs_ && server_.logs_->pending(index_)) send_log_lines();
    const auto after = Clock::now();
    if (after - read_at_ >= kReadAgain) read_ahead();
    if (outbox_->holding() && ((!pipelined_next() && !from_reader_next(reader)) ||
                               outbox_->held() >= kHeldReplies || after - held_since >= kReadAgain))
      outbox_->send_held();
  }
  outbox_->send_held();
  now = Clock::now();
  check_lost(now);
  collect(now);
  keep_links(now);
  return true;
}

void Lane::run() {
  for (;;) {
    // The lane's barrier: whatever escapes one turn (a zmq::error_t from a send, bad_alloc) is
    // logged and the lane goes on; each request has its own barrier inside.
    try {
      if (!turn()) break;
    } catch (const std::exception& e) {
      PATRO_LOG(error, "server") << "lane " << index_ << ": " << e.what() << "; going on";
    } catch (...) {
      PATRO_LOG(error, "server") << "lane " << index_
                                 << ": something not a std::exception was thrown; going on";
    }
  }
  leave();
}

void Lane::leave() {
  for (auto& sk : socks_) {
    try {
      send_simple(sk, Command::disconnect);
    } catch (const zmq::error_t&) {
    }
    sk.close();
  }
  outbox_->set_brokers(nullptr);
  outbox_->set_direct(nullptr);
  if (direct_.handle() != nullptr) direct_.close();
}

}  // namespace patro::detail
