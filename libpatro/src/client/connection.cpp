#include "connection.hpp"

#include <algorithm>
#include <cerrno>
#include <tuple>

#include "assert.hpp"
#include "endpoint.hpp"
#include "ids.hpp"
#include "log.hpp"
#include "os_failure.hpp"
#include "trace.hpp"

namespace patro::detail {

namespace {
std::atomic<CallbackHostFactory> callback_host_factory{nullptr};
}  // namespace

void set_callback_host_factory(CallbackHostFactory factory) noexcept {
  callback_host_factory.store(factory);
}

namespace {
uint32_t timeout_ms(std::chrono::milliseconds t) {
  return static_cast<uint32_t>(
      std::clamp<int64_t>(t.count(), 0, std::numeric_limits<uint32_t>::max()));
}
}  // namespace

Connection::Connection(std::vector<std::string> brokers, const ClientOptions& options)
    : brokers_(std::move(brokers)),
      options_(options),
      client_id_(random_id()),
      requests_(options.retry, options.retry_backoff, options.limits,
                reply_release(releases_, options.limits)),
      link_(ctx_, brokers_, options_, curve_, client_id_, timing_) {
  if (brokers_.empty()) throw Error(Errc::bad_config, "no broker address to connect to");
  for (const std::string& b : brokers_)
    if (auto why = endpoint_problem(b)) throw Error(Errc::invalid_argument, bad_endpoint(b, *why));
  (void)log_level();  // reads the environment now: the wire trace (PATRO_DEBUG) is then known
  curve_ = resolve_curve(options_.curve);
  route_ = options_.route;
  if (options_.forward_logs) {
    (void)LogSelection::parse(options_.forward_log_selections);  // refused here, not later
    MutexLock io(loop_.turn());
    log_level_ = options_.forward_logs;
    log_selections_ = options_.forward_log_selections;
  }
  if (options_.continuations == Continuations::event_loop)
    completions_ = std::make_unique<Completions>();
}

Connection::~Connection() {
  {
    // The callback host first: its lanes leave the broker before this connection does.
    MutexLock lock(callbacks_mu_);
    callbacks_.reset();
  }
  {
    MutexLock lock(requests_.mutex());
    stopping_ = true;
    loop_.notify();
    heartbeat_cv_.notify_all();
  }
  if (heartbeat_.joinable()) {
    if (heartbeat_.get_id() == std::this_thread::get_id()) {
      // The last reference went away in a then-callback the heartbeat thread ran: it must not
      // touch this connection again.
      heartbeat_gone_->store(true);
      heartbeat_.detach();
    } else {
      heartbeat_.join();
    }
  }
  {
    MutexLock io(loop_.turn());
    routes_.clear();
    direct_socks_.clear();  // they close (linger 0) before the context ends
    link_.close();
  }
}

void Connection::connect() {
  std::string errors;  // "ENDPOINT: why; ENDPOINT: why"
  const auto failed = [&errors](const std::string& endpoint, const std::string& why) {
    errors += (errors.empty() ? " " : "; ") + endpoint + ": " + why;
  };
  bool refused = false;  // a broker refused the handshake (rather than not answering)
  // With several brokers each gets its share of the time, so a dead first one leaves time for the
  // others.
  const auto budget =
      brokers_.size() == 1
          ? options_.connect_timeout
          : std::max(options_.connect_timeout / static_cast<int64_t>(brokers_.size()),
                     std::min(options_.connect_timeout, std::chrono::milliseconds(500)));
  for (size_t index = 0; index < brokers_.size(); ++index) {
    const std::string& endpoint = brokers_[index];
    const auto deadline = Clock::now() + budget;
    {
      MutexLock io(loop_.turn());
      const BrokerLink::Opened opened = link_.open(index, budget);
      if (!opened.ok) {
        refused = refused || opened.refused;
        failed(endpoint, opened.why);
        continue;
      }
    }
    const uint64_t rid = next_request_id_++;
    Multipart m = control_frames(Command::hello, rid, hello_body(client_id_));
    SlotPtr slot = new_slot(rid, 0, wire::Op::Get, Clock::now(), deadline, nullptr, true);
    submit(std::move(m), slot);
    await(slot);
    if (slot->error != Errc::ok) {
      failed(endpoint, "no answer within " + std::to_string(budget.count()) + " ms");
      continue;
    }
    AlignedScratch scratch;
    const wire::Control* c = verified_control(slot->body, options_.limits, scratch);
    if (c && c->body_as_Welcome()) {
      {
        MutexLock io(loop_.turn());
        link_.welcomed(index, *c->body_as_Welcome());
      }
      if (!heartbeat_.joinable())
        heartbeat_ = std::thread([this, gone = heartbeat_gone_] { heartbeat_main(*gone); });
      return;
    }
    failed(endpoint, "the answer to hello was not a welcome");
  }
  if (refused) throw Error(Errc::not_authorized, "no broker accepts this client:" + errors);
  throw Error(Errc::broker_unreachable, "no broker answers:" + errors);
}

SlotPtr Connection::new_slot(uint64_t request_id, uint64_t server, wire::Op op,
                             Clock::time_point started, Clock::time_point deadline,
                             const Multipart* frames, bool control, uint32_t oneway_calls) {
  made_since_poll_.fetch_add(1, std::memory_order_relaxed);
  return requests_.add(request_id, server, op, started, deadline, frames, control, oneway_calls);
}

void Connection::submit(Multipart frames, SlotPtr slot) {
  {
    MutexLock out(out_mu_);
    seal_batch();  // oneway calls made before this request go before it
    outbox_.push_back(Outgoing{std::move(frames), std::move(slot)});
  }
  kick();
}

void Connection::kick() {
  // Held by a patro::Bundle: sent when it ends, or by a caller that waits (pump flushes).
  if (corked_.load(std::memory_order_relaxed) > 0) return;
  send_queued();
}

void Connection::send_queued() {
  if (loop_.try_take()) {
    flush();
    release_io();
  } else {
    loop_.wake();  // the holder of the socket flushes it
  }
}

void Connection::uncork() {
  if (corked_.fetch_sub(1, std::memory_order_relaxed) == 1) send_queued();
}

void Connection::flush() {
  if (closed()) [[unlikely]] {
    // Nothing goes out any more; what was queued, and anything still waiting, fails.
    {
      MutexLock out(out_mu_);
      outbox_.clear();
    }
    fail_pending(Errc::disconnected, "the connection was closed", std::nullopt);
    return;
  }
  for (;;) {
    Outgoing o;
    {
      MutexLock out(out_mu_);
      if (outbox_.empty()) break;
      o = std::move(outbox_.front());
      outbox_.pop_front();
    }
    send_out(o, true);
  }
  send_bundled();
}

void Connection::send_out(Outgoing& o, bool may_bundle) {
  // Anything but a request that joins them goes after the requests waiting to leave together.
  if (!may_bundle || o.cancel || o.log_change) send_bundled();
  if (o.cancel) return send_cancel(o);
  if (o.log_change) return change_log_forwarding(o);
  zmq::socket_t* direct = nullptr;
  if (o.slot) link_.note_server(o.slot->server);
  if (o.slot && !o.slot->control && o.slot->server != 0 && route_ != Route::broker) {
    const uint64_t server = o.slot->server;
    const auto choice = routes_.choose(server, Clock::now(), timing_.window(),
                                       [&] { return brokered_in_flight(server); });
    if (choice.locate) link_.locate(server);
    switch (choice.way) {
      case DirectRoutes::Way::broker:
        break;
      case DirectRoutes::Way::direct: {
        auto it = direct_socks_.find(server);
        PATRO_ASSERT(it != direct_socks_.end(), "a live direct route has its socket");
        direct = &it->second;
        break;
      }
      case DirectRoutes::Way::hold:
        routes_.hold(server, std::move(o));
        return;
      case DirectRoutes::Way::refuse:
        fail_slots({o.slot}, "server " + ObjectId{server, 0}.to_hex().substr(0, 16) +
                                 " cannot be reached directly (route=direct)");
        return;
    }
  }
  // Log forwarding: a server's first request is preceded by the subscription, the same way.
  if (o.slot && !o.slot->control && o.slot->server != 0 &&
      ((log_level_ && log_subscribed_.insert(o.slot->server).second) ||
       (!log_pending_.empty() && log_pending_.count(o.slot->server)))) {
    log_pending_.erase(o.slot->server);
    send_bundled();
    send_log_subscribe(o.slot->server, direct);
  }
  // Traced before it leaves (sending moves the frames out); a direct send that finds the
  // connection closed is traced again on the way it then takes.
  if (o.slot && !o.slot->traced.empty()) [[unlikely]]
    trace_sent(o.frames, *o.slot, direct != nullptr, 1);
  if (direct != nullptr && may_bundle) {
    const uint64_t server = o.slot->server;
    pack_direct(o);
    // One frame, an envelope with its body in it, to a server that reads bundles: it waits for
    // the next ones to the same server, up to a bundle's worth.
    if (o.frames.size() == 1 && (envelope_flags(o.frames[0]) & envelope_flag::kReadsBundles)) {
      if (bundling_.server != server || bundling_.items.size() >= kMaxBundle ||
          bundling_.bytes + bundled_size(o.frames[0]) > kMaxBundleBytes)
        send_bundled();
      bundling_.server = server;
      bundling_.bytes += bundled_size(o.frames[0]);
      bundling_.items.push_back(std::move(o));
      return;
    }
  }
  send_bundled();  // what does not join them leaves after them
  if (direct != nullptr && !send_direct(*direct, o)) {
    // The direct connection is closed: the request never left, so it goes as the route now says
    // (through the broker, or held until the server is located again), after those in flight
    // on the closed connection.
    route_failed(o.slot->server, "its direct connection is closed");
    return send_out(o);
  }
  if (o.slot) {
    o.slot->sent = true;
    o.slot->sent_direct = direct != nullptr;
  }
  if (direct == nullptr) send_to_broker(o.frames, "request");
}

void Connection::send_to_broker(Multipart& m, const char* what) {
  // A broker that reads version 2 gets a REQUEST as [envelope][body] (anything else as it is).
  if (link_.wire_version() >= kEnvelopeVersion) pack_envelope(m, 0, false);
  link_.send(m, false, what);
}

void Connection::send_log_subscribe(uint64_t server, zmq::socket_t* direct) {
  Multipart m;
  m.reserve(5);
  m.push_back(header_frame(Command::log_subscribe));
  m.push_back(u64_frame(server));
  m.push_back(u64_frame(client_id_));
  if (log_level_) {
    m.push_back(u64_frame(static_cast<uint64_t>(log_verbosity(*log_level_))));
    m.push_back(zmq::message_t(log_selections_.data(), log_selections_.size()));
  }
  if (direct != nullptr)
    send_logged(*direct, m, false, "log subscription");
  else
    link_.send(m, false, "log subscription");
}

void Connection::forward_logs(std::optional<LogLevel> level, const std::string& selections) {
  if (level) (void)LogSelection::parse(selections);  // throws Error(invalid_argument)
  check_open();
  Outgoing o;
  o.log_change = true;
  o.log_level = level;
  o.log_selections = level ? selections : std::string();
  {
    MutexLock out(out_mu_);
    seal_batch();  // oneway calls made before this go before it
    outbox_.push_back(std::move(o));
  }
  kick();
}

void Connection::change_log_forwarding(const Outgoing& o) {
  const bool was = log_level_.has_value();
  log_level_ = o.log_level;
  log_selections_ = o.log_selections;
  if (!log_level_ && !was) return;
  // Every server subscribed to (changed or ended), and every one talked to (started), the way
  // requests to it go now, so that the next request finds it in force (the same lane, behind it).
  std::unordered_set<uint64_t> servers = log_subscribed_;
  for (uint64_t s : link_.servers_seen()) servers.insert(s);
  for (uint64_t s : routes_.not_dead()) servers.insert(s);
  for (uint64_t s : servers) {
    const DirectRoutes::Entry* e = routes_.find(s);
    auto sock = direct_socks_.find(s);
    send_log_subscribe(s, e && e->active && sock != direct_socks_.end() ? &sock->second : nullptr);
  }
  // Sent again before the next request to each, the way that request goes: one that takes
  // another way than the guess above finds the change in force all the same.
  log_pending_ = servers;
  if (log_level_)
    log_subscribed_ = std::move(servers);
  else
    log_subscribed_.clear();
}

void Connection::on_log_line(const Multipart& msg) {
  // [hdr][host][pid][level][who][time][text][dropped]
  if (msg.size() != 8 || !log_level_) return;
  const auto pid = parse_u64(msg[2]);
  const auto verbosity = parse_u64(msg[3]);
  const auto dropped = parse_u64(msg[7]);
  if (!pid || !verbosity || !dropped || *verbosity > 6 || msg[1].size() > 255 ||
      msg[4].size() > 255 || msg[5].size() > 64)
    return;
  LogRecord r;
  for (int l = 0; l <= 6; ++l)
    if (log_verbosity(static_cast<LogLevel>(l)) == static_cast<int>(*verbosity))
      r.level = static_cast<LogLevel>(l);
  r.host = msg[1].to_string();
  r.pid = static_cast<int64_t>(*pid);
  r.who = msg[4].to_string();
  r.time = msg[5].to_string();
  r.text = msg[6].to_string();
  r.dropped = *dropped;
  log_lines_.fetch_add(1, std::memory_order_relaxed);
  if (options_.on_log) {
    try {
      options_.on_log(r);
    } catch (const std::exception& e) {
      PATRO_LOG(warn, "client") << "the on_log handler threw: " << e.what();
    } catch (...) {
      PATRO_LOG(warn, "client") << "the on_log handler threw something not a std::exception";
    }
    return;
  }
  std::string text = "[" + r.host + ":" + std::to_string(r.pid) + " " + r.who + "] " + r.text;
  if (r.dropped > 0) text += " (" + std::to_string(r.dropped) + " lines dropped before this one)";
  write_forwarded_line(r.level, r.who, text);
}

bool Connection::direct_closed(uint64_t server) {
  // With ZMQ_IMMEDIATE a socket queues nothing while it has no connection; a full queue (a
  // high-water mark's worth of requests in flight) refuses too, and is waited for.
  return requests_.direct_in_flight(server) <
         static_cast<size_t>(std::max(options_.limits.high_water_mark, 2)) / 2;
}

void Connection::pack_direct(Outgoing& o) {
  if (!o.frames.empty() && is_envelope(o.frames[0])) return;  // packed already
  const auto v = direct_versions_.find(o.slot->server);
  if (v != direct_versions_.end()) pack_envelope(o.frames, 0, false, v->second >= kBundleVersion);
}

bool Connection::send_direct(zmq::socket_t& sock, Outgoing& o) {
  // A lane that reads version 2 gets [envelope][body]; unpacked again if it goes another way.
  pack_direct(o);
  if (send_or_wait(sock, o.slot->server, o.frames, "request")) return true;
  if (is_envelope(o.frames[0])) unpack_envelope(o.frames, 0);
  return false;
}

bool Connection::send_or_wait(zmq::socket_t& sock, uint64_t server, Multipart& m,
                              const char* what) {
  if (send_logged(sock, m, true, what)) return true;
  if (direct_closed(server)) return false;
  (void)send_logged(sock, m, false, what);  // a full queue: wait for room
  return true;
}

void Connection::send_bundled() {
  if (bundling_.items.empty()) return;
  // Taken whole (a failure below sends each again, which finds bundling_ empty); the vectors
  // keep their room, so the usual lone request costs no allocation here.
  std::vector<Outgoing>& items = bundling_.sending;
  items.swap(bundling_.items);
  struct Cleared {
    std::vector<Outgoing>& v;
    ~Cleared() { v.clear(); }
  } cleared{items};
  const uint64_t server = bundling_.server;
  bundling_.bytes = 0;
  auto sock = direct_socks_.find(server);
  bool sent = false;
  if (sock != direct_socks_.end()) {
    if (items.size() == 1) {
      sent = send_direct(sock->second, items[0]);
    } else {
      std::vector<const zmq::message_t*> envelopes;
      envelopes.reserve(items.size());
      for (const Outgoing& o : items) envelopes.push_back(&o.frames[0]);
      Multipart m;
      m.push_back(bundle_frame(envelopes));
      sent = send_or_wait(sock->second, server, m, "bundle of requests");
    }
  }
  if (sent) {
    if (items.size() > 1) bundles_sent_.fetch_add(1, std::memory_order_relaxed);
    for (Outgoing& o : items) {
      o.slot->sent = true;
      o.slot->sent_direct = true;
    }
    return;
  }
  // The direct connection is closed: none of them left, so they go as the route now says (as
  // version 1 frames, unpacked again), in their order, after those in flight on the closed
  // connection.
  for (Outgoing& o : items)
    if (!o.frames.empty() && is_envelope(o.frames[0])) unpack_envelope(o.frames, 0);
  if (sock != direct_socks_.end()) route_failed(server, "its direct connection is closed");
  for (Outgoing& o : items) send_out(o);
}

void Connection::send_cancel(Outgoing& o) {
  // Its request went before it (the outbox is in order): the CANCEL follows it to the same lane.
  // A request held for its direct route (route=direct) holds its CANCEL behind it; one refused
  // or failed there never left, and needs none.
  const Slot& s = *o.slot;
  if (!s.sent) {
    if (route_ == Route::direct) {
      const auto choice =
          routes_.choose(s.server, Clock::now(), timing_.window(), [] { return true; });
      if (choice.way == DirectRoutes::Way::hold) routes_.hold(s.server, std::move(o));
    }
    return;
  }
  if (s.sent_direct) {
    // Its direct connection gone, the request is not resent (it is no longer in flight): the
    // CANCEL has nowhere to go, and the lane it went to is not waiting for anything from us.
    if (auto it = direct_socks_.find(s.server); it != direct_socks_.end())
      send_logged(it->second, o.frames, false, "cancel");
    return;
  }
  link_.send(o.frames, false, "cancel");
}

void Connection::trace_sent(const Multipart& frames, const Slot& slot, bool direct,
                            uint32_t attempt) {
  if (frames.size() < 4) return;
  const std::string via = direct ? " via=direct" : " via=broker";
  const std::string again = attempt > 1 ? " attempt=" + std::to_string(attempt) : std::string();
  AlignedScratch scratch;
  const uint8_t* body = aligned_bytes(frames[3], scratch);
  if (slot.oneway_calls == 0) {
    const auto* r = flatbuffers::GetRoot<wire::Request>(body);
    PATRO_LOG(trace, "client") << "-> request #" << slot.request_id << ' ' << slot.traced << ' '
                               << trace_args(*r) << via << again;
    return;
  }
  // A batch: its line, then one line per oneway call in it.
  const auto* batch = flatbuffers::GetRoot<wire::Batch>(body);
  PATRO_LOG(trace, "client") << "-> batch #" << slot.request_id << ' ' << slot.traced << via
                             << again;
  if (attempt > 1 || batch->requests() == nullptr) return;
  for (const wire::Request* r : *batch->requests())
    PATRO_LOG(trace, "client") << "-> oneway #" << r->request_id() << ' ' << trace_target(*r) << ' '
                               << trace_args(*r);
}

bool Connection::brokered_in_flight(uint64_t server) {
  return requests_.brokered_in_flight(server);
}

void Connection::on_locate_reply(Multipart& msg) {
  auto server = msg.size() == 3 ? parse_u64(msg[1]) : std::nullopt;
  if (!server) return;
  if (!routes_.locating(*server)) return;
  AlignedScratch scratch;
  const wire::Control* c = verified_control(msg[2], options_.limits, scratch);
  const wire::LocateReply* lr = c ? c->body_as_LocateReply() : nullptr;
  std::vector<std::string> endpoints;
  if (lr && lr->endpoints())
    for (const auto* e : *lr->endpoints()) endpoints.push_back(e ? e->str() : std::string());
  const std::string endpoint = DirectRoutes::pick_endpoint(endpoints, client_id_);
  const std::string id_text = "server " + ObjectId{*server, 0}.to_hex().substr(0, 16);
  if (endpoint.empty()) return route_failed(*server, id_text + " has no direct endpoint");
  // Under CURVE the broker vouched for our key to the server and hands us the server's.
  const std::string server_key = lr && lr->server_key() ? lr->server_key()->str() : std::string();
  if (curve_.enabled() && !is_curve_key(server_key))
    return route_failed(*server, id_text +
                                     ": the broker gave no key for its direct path (a "
                                     "broker older than the direct path under CURVE)");
  try {
    zmq::socket_t sock = make_socket(ctx_, zmq::socket_type::dealer, options_.limits);
    sock.set(zmq::sockopt::linger, 0);
    if (curve_.enabled()) {
      CurveOptions direct = curve_;
      direct.broker_key = server_key;  // the peer's key: the server's, here
      set_curve_client(sock, direct, curve_.keys);
    }
    // Nothing is queued for a connection not made, or one that closed: a request sent to a
    // process that died is refused at once (and goes another way) instead of waiting in the
    // socket, where it could only fail later as outcome_unknown.
    sock.set(zmq::sockopt::immediate, 1);
    sock.connect(endpoint);
    direct_socks_[*server] = std::move(sock);
    // What its direct ROUTERs read (an older broker or server says nothing: version 1).
    if (lr && lr->wire_version() >= kEnvelopeVersion)
      direct_versions_[*server] = std::min(lr->wire_version(), kBundleVersion);
    else
      direct_versions_.erase(*server);
  } catch (const zmq::error_t& e) {
    return route_failed(*server, "cannot connect to " + endpoint + ": " + e.what());
  }
  PATRO_LOG(debug, "client") << "server " << ObjectId{*server, 0}.to_hex().substr(0, 16)
                             << ": trying its direct endpoint " << endpoint;
  routes_.probing(*server, Clock::now());
}

void Connection::reconnect_direct(uint64_t server, zmq::socket_t& sock) {
  try {
    const std::string endpoint = sock.get(zmq::sockopt::last_endpoint);
    if (endpoint.empty()) return;
    sock.disconnect(endpoint);
    sock.connect(endpoint);
    PATRO_LOG(debug, "client") << "server " << ObjectId{server, 0}.to_hex().substr(0, 16)
                               << ": no connection to its direct endpoint yet; connecting again";
  } catch (const zmq::error_t& e) {
    PATRO_LOG(debug, "client") << "server " << ObjectId{server, 0}.to_hex().substr(0, 16)
                               << ": connecting to its direct endpoint again failed: " << e.what();
  }
}

void Connection::dispatch_direct(uint64_t server, Multipart& msg) {
  DirectRoutes::Heard heard = routes_.heard(server, Clock::now());
  if (!heard.known) return;
  if (heard.up) {
    PATRO_LOG(debug, "client") << "server " << ObjectId{server, 0}.to_hex().substr(0, 16)
                               << ": direct path up";
    // route=direct: nothing went through the broker; the held requests go now, in their order.
    for (Outgoing& o : heard.ready) send_out(o);
  }
  if (msg.size() == 1 && is_bundle(msg[0])) {
    // Replies in one bundle: each read as if it came alone, in order, where it lies in the bundle
    // (a malformed bundle: dropped whole, as a malformed envelope is; anything in it but a REPLY
    // of no routing is ignored, as it is alone).
    if (!bundled_envelopes(msg[0], bundled_)) return;
    bundles_received_.fetch_add(1, std::memory_order_relaxed);
    for (std::string_view e : bundled_) (void)answer_inline(e, true);
    return;
  }
  dispatch(msg, true);  // a reply ([hdr][rid][body]); a heartbeat ([hdr]) needs nothing more
}

Connection::Clock::time_point Connection::tend_routes(Clock::time_point now) {
  if (now < routes_.next_check()) return routes_.next_check();
  DirectRoutes::Tending due = routes_.tend(now, timing_.window(), timing_.heartbeat());
  for (uint64_t server : due.locate) link_.locate(server);
  for (uint64_t server : due.heartbeat) {
    auto it = direct_socks_.find(server);
    if (it == direct_socks_.end()) continue;
    Multipart hb;
    hb.push_back(header_frame(Command::heartbeat));
    hb.push_back(u64_frame(client_id_));
    bool sent = false;
    try {
      sent = send_multipart(it->second, hb, true);
    } catch (const zmq::error_t&) {
    }
    // Not connected: a probe (the connection is still being made) goes again soon; a live
    // route's connection closed.
    if (!sent && routes_.beat_unsent(server, now) && direct_closed(server))
      due.failed.emplace_back(server, "its direct connection is closed");
    else if (!sent && routes_.reconnect_due(server, now))
      reconnect_direct(server, it->second);
  }
  for (const auto& [server, why] : due.failed) route_failed(server, why);
  return routes_.next_check();
}

void Connection::route_failed(uint64_t server, const std::string& why) {
  DirectRoutes::Failure failure = routes_.fail(server, Clock::now(), timing_.heartbeat());
  if (!failure.known) return;
  log_subscribed_.erase(server);  // its lines came that way: subscribed again, the next way
  direct_socks_.erase(server);    // closed (linger 0)
  const bool was_active = failure.was_active;
  // The requests in flight on it, in the order they were made (each may have run).
  const std::vector<SlotPtr> lost = requests_.lost_direct(server);
  const std::string text = "server " + ObjectId{server, 0}.to_hex().substr(0, 16) + ": " + why;
  if (route_ == Route::direct) {
    std::vector<SlotPtr> held;
    for (Outgoing& o : failure.held)
      if (o.slot) held.push_back(o.slot);
    fail_slots(held, text + " (route=direct)");
    fail_slots(lost, text + " (route=direct); the call may or may not have run");
    return;
  }
  if (was_active || !lost.empty())
    PATRO_LOG(info, "client") << text << "; " << lost.size()
                              << " request(s) in flight go through the broker";
  else
    PATRO_LOG(debug, "client") << text << "; requests go through the broker";
  // Resent before anything queued after them, so the server still runs them in their order.
  std::vector<SlotPtr> resendable, unrecoverable;
  for (const SlotPtr& slot : lost)
    (slot->frames.empty() ? unrecoverable : resendable).push_back(slot);
  send_again(resendable);
  fail_slots(unrecoverable, text + "; the call may or may not have run (retries are off)");
}

void Connection::fail_slots(const std::vector<SlotPtr>& slots, const std::string& why) {
  if (slots.empty()) return;
  requests_.fail(slots, why, Clock::now());
  loop_.notify();
}

void Connection::read_queued() {
  if (closed()) return;
  if (loop_.try_take()) {  // else its holder reads
    try {
      if (link_.readable()) pump([]() PATRO_NO_TSA { return false; }, Clock::now(), true);
    } catch (const zmq::error_t&) {
      // The request's own sending and waiting meet the same failure and report it.
    }
    release_io();
  }
}

void Connection::release_io() {
  loop_.let_go();
  // Whatever was queued while we held the socket, and nobody could flush, goes now.
  for (;;) {
    {
      MutexLock out(out_mu_);
      if (outbox_.empty()) break;
    }
    if (!loop_.try_take()) break;  // the new holder flushes
    flush();
    loop_.let_go();
  }
  std::vector<SlotPtr> ready;
  loop_.next_turn([&]() PATRO_NO_TSA { ready = requests_.take_ready(); });
  deliver(ready);
}

void Connection::run_callbacks() {
  std::vector<SlotPtr> ready;
  {
    MutexLock lock(requests_.mutex());
    ready = requests_.take_ready();
  }
  deliver(ready);
}

void Connection::deliver(const std::vector<SlotPtr>& ready) {
  if (ready.empty()) return;
  // The program's loop runs them (event_loop).
  if (completions_) return completions_->post(ready);
  // Callbacks run with no lock held (a callback may call the connection). Nothing of this
  // connection is touched after them: a callback may drop its last reference.
  RequestTable::run_callbacks(ready);
}

Completions& Connection::completions(const char* what) const {
  if (!completions_)
    throw Error(Errc::invalid_argument,
                std::string("this connection runs continuations on any thread: ") + what +
                    " needs ClientOptions::continuations = event_loop");
  return *completions_;
}

int Connection::event_fd() const {
  return completions("its event fd").fd();
}

size_t Connection::run_ready() {
  return completions("run_ready").run();
}

RetryTiming Connection::retry_timing() const noexcept {
  return RetryTiming{timing_.window(), timing_.heartbeat()};
}

void Connection::fail_pending(Errc code, const std::string& text, std::optional<uint64_t> server,
                              const std::vector<uint64_t>* only) {
  requests_.fail_pending(code, text, server, Clock::now(), retry_timing(), only);
  loop_.notify();
}

void Connection::resend(const std::vector<SlotPtr>& slots) {
  flush();  // what was queued before goes first
  send_again(slots);
}

void Connection::send_again(const std::vector<SlotPtr>& slots) {
  for (const SlotPtr& s : slots) {
    Multipart m;
    m.reserve(s->frames.size() + 1);
    for (zmq::message_t& f : s->frames) {
      zmq::message_t c;
      c.copy(f);
      m.push_back(std::move(c));
    }
    const uint32_t attempt = requests_.next_attempt(s);
    if (!s->control) m.push_back(u64_frame(attempt));
    s->sent = true;
    s->sent_direct = false;
    retries_.fetch_add(1, std::memory_order_relaxed);
    PATRO_LOG(debug, "client") << "resending request " << s->request_id << " (attempt " << attempt
                               << ")";
    if (!s->traced.empty()) [[unlikely]]
      trace_sent(m, *s, false, attempt);
    send_to_broker(m, "resend");
  }
}

void Connection::resend_all(const char* why) {
  // In the order they were made; those sent directly did not pass the broker.
  const std::vector<SlotPtr> all = requests_.take_all_for_resend();
  if (all.empty()) return;
  PATRO_LOG(info, "client") << why << ": resending " << all.size() << " request(s) in flight";
  resend(all);
}

void Connection::resend_due(Clock::time_point now) {
  if (now < requests_.next_retry()) return;
  resend(requests_.take_due(now));
}

void Connection::broker_instance(uint64_t instance) {
  if (link_.instance(instance) != BrokerLink::Instance::restarted) return;
  if (options_.retry) resend_all("the broker restarted");
  // A new broker learns again which servers we talk to (for CLIENT_GONE), and each server that we
  // are still here (CLIENT_AT): it releases the locks of clients that do not come back.
  locate_known(routes_.not_dead());
}

void Connection::locate_known(const std::vector<uint64_t>& routed) {
  const auto& seen = link_.servers_seen();
  for (uint64_t server : seen) link_.locate(server);
  for (uint64_t server : routed)
    if (!seen.count(server)) link_.locate(server);
}

std::string Connection::broker_server_endpoint() {
  std::string se, reached;
  {
    MutexLock io(loop_.turn());
    se = link_.server_endpoint();
    reached = link_.endpoint();
  }
  if (se.empty())
    throw Error(Errc::unsupported, "the broker at " + reached +
                                       " does not say where servers register (an older "
                                       "broker): callbacks need a newer one");
  // A wildcard back end (tcp://0.0.0.0:7171, tcp://*:7171) is reached at the host we reached.
  for (const std::string wild : {"tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"}) {
    if (se.rfind(wild, 0) != 0) continue;
    const auto colon = reached.rfind(':');
    if (reached.rfind("tcp://", 0) == 0 && colon != std::string::npos)
      se = reached.substr(0, colon + 1) + se.substr(wild.size());
    break;
  }
  return se;
}

Value Connection::serve_local(const Reference& r) {
  MutexLock lock(callbacks_mu_);
  if (!callbacks_) {
    check_open();  // a closed connection starts no host (close() stopped its own)
    CallbackHostFactory factory = callback_host_factory.load();
    if (factory == nullptr)
      throw Error(Errc::unsupported, "callbacks are not built into this library");
    callbacks_ = factory(*this);
    callback_server_.store(callbacks_->server_id(), std::memory_order_relaxed);
  }
  return callbacks_->serve(r);
}

uint64_t Connection::count_pass(const ObjectId& id) {
  MutexLock lock(callbacks_mu_);
  return callbacks_ ? callbacks_->count_pass(id) : 0;
}

size_t Connection::callbacks_served() {
  MutexLock lock(callbacks_mu_);
  return callbacks_ ? callbacks_->served() : 0;
}

RequestTable::Counts Connection::request_counts() {
  return requests_.counts();
}

void Connection::stop_callbacks() {
  std::unique_ptr<CallbackHost> host;
  {
    MutexLock lock(callbacks_mu_);
    if (callbacks_ && callbacks_->on_host_thread())
      throw Error(Errc::invalid_argument,
                  "patro::stop_callbacks cannot run inside a callback (it would wait for itself)");
    host.swap(callbacks_);
    callback_server_.store(0, std::memory_order_relaxed);
  }
  // Stopped outside the lock: a callback running now may pass another local object meanwhile
  // (and start a new host).
}

void Connection::check_open() const {
  if (closed()) throw Error(Errc::disconnected, "the connection was closed");
}

void Connection::close() {
  std::unique_ptr<CallbackHost> host;
  {
    MutexLock lock(callbacks_mu_);
    if (callbacks_ && callbacks_->on_host_thread())
      throw Error(Errc::invalid_argument,
                  "a connection cannot be closed inside one of its callbacks (stopping its "
                  "callback host would wait for itself)");
    if (closed_.exchange(true, std::memory_order_acq_rel)) return;
    host.swap(callbacks_);
    callback_server_.store(0, std::memory_order_relaxed);
  }
  PATRO_LOG(debug, "client") << "closing the connection";
  // What waits fails now, before the host stops: a callback running there may wait for an answer
  // on this connection. A request that a racing call adds later fails in the pump (closed()).
  fail_pending(Errc::disconnected, "the connection was closed", std::nullopt);
  run_callbacks();
  host.reset();  // its lanes leave the broker before this connection does
  {
    MutexLock lock(requests_.mutex());
    stopping_ = true;
    heartbeat_cv_.notify_all();
  }
  // A then-callback the heartbeat thread runs may close: it ends by itself (stopping_), and the
  // destructor joins it.
  if (heartbeat_.joinable() && heartbeat_.get_id() != std::this_thread::get_id()) heartbeat_.join();
  loop_.wake();  // a holder of the turn lets go
  MutexLock io(loop_.turn());
  routes_.clear();
  direct_socks_.clear();
  link_.close();  // tells the broker (DISCONNECT), which tells the servers we talked to
}

LocalServer Connection::local_server() const {
  auto* self = const_cast<Connection*>(this);
  return [self](const Reference& r) { return self->serve_local(r); };
}

std::string Connection::endpoint() {
  MutexLock io(loop_.turn());
  return link_.endpoint();
}

void Connection::switch_broker(const std::string& why, std::optional<size_t> to) {
  const auto now = Clock::now();
  const std::string from = link_.move(to, next_request_id_++, now);
  PATRO_LOG(warn, "client") << why << "; moving to the broker at " << link_.endpoint();
  failovers_.fetch_add(1, std::memory_order_relaxed);
  log_subscribed_.clear();  // lines come through the broker they were asked through
  // A LOCATE for each server we talk to: it tells the server we are attached here now.
  locate_known(routes_.locate_again(now));
  if (options_.retry) {
    resend_all(("moved from the broker at " + from + " to " + link_.endpoint()).c_str());
  } else {
    fail_pending(Errc::broker_unreachable, why + "; retries are off", std::nullopt);
  }
}

void Connection::expire_slots(Clock::time_point now) {
  std::vector<SlotPtr> cancel;
  Clock::time_point next;
  if (requests_.expire(now, &cancel, &next)) loop_.notify();
  // A deadline made earlier is looked at when it comes, not at the next usual turn.
  if (expire_at_.load(std::memory_order_relaxed) != std::numeric_limits<Clock::rep>::max())
    expire_at_.store(next.time_since_epoch().count(), std::memory_order_relaxed);
  for (const SlotPtr& slot : cancel) queue_cancel(slot);
}

bool Connection::expire_after(const SlotPtr& slot, Clock::duration after) {
  const auto deadline = Clock::now() + after;
  if (!requests_.shorten(slot, deadline)) return false;
  const Clock::rep at = deadline.time_since_epoch().count();
  Clock::rep seen = expire_at_.load(std::memory_order_relaxed);
  while (at < seen && !expire_at_.compare_exchange_weak(seen, at, std::memory_order_relaxed)) {
  }
  {
    MutexLock lock(requests_.mutex());
    kicked_ = true;  // the heartbeat thread looks again, and waits no longer than the deadline
  }
  heartbeat_cv_.notify_one();
  return true;
}

void Connection::answer(uint64_t request_id, zmq::message_t body, bool direct) {
  annotate_received(request_id);
  // None found: late, its caller gave up.
  if (requests_.answer(request_id, std::move(body), Clock::now(), direct ? "direct" : "broker"))
    loop_.notify();
}

bool Connection::answer_inline(std::string_view envelope, bool direct) {
  const auto reply = read_inline_envelope(envelope);
  if (!reply || reply->request || (reply->flags & envelope_flag::kRouting) != 0) return false;
  answer(reply->request_id, zmq::message_t(reply->body.data(), reply->body.size()), direct);
  return true;
}

void Connection::dispatch(Multipart& msg, bool direct) {
  // A version 2 REPLY that holds its body is read where it lies; any other envelope ([envelope]
  // [body]) as the version 1 frames it stands for.
  if (msg.size() == 1 && answer_inline(msg[0].to_string_view(), direct)) return;
  if (!msg.empty() && is_envelope(msg[0]) && !unpack_envelope(msg, 0)) return;
  const auto cmd = msg.empty() ? std::nullopt : parse_header(msg[0]);
  if (!cmd) return;
  switch (*cmd) {
    case Command::welcome:
      // The answer to a move's hello finds no slot: the version the broker reads is kept here.
      if (!direct && msg.size() == 3) {
        AlignedScratch scratch;
        const wire::Control* c = verified_control(msg[2], options_.limits, scratch);
        if (const wire::Welcome* w = c ? c->body_as_Welcome() : nullptr) link_.heard_version(*w);
      }
      [[fallthrough]];
    case Command::reply:
    case Command::lookup_reply:
    case Command::broker_info_reply: {
      if (msg.size() != 3) return;
      auto rid = parse_u64(msg[1]);
      if (!rid) return;
      answer(*rid, std::move(msg[2]), direct);
      return;
    }
    case Command::no_route: {
      // The broker has no server for it now: it surely did not run; resend after a backoff.
      auto rid = msg.size() == 3 ? parse_u64(msg[1]) : std::nullopt;
      if (!rid) return;
      // outcome_unknown: it ran (its reply was held back at the broker); a resend gets its answer.
      AlignedScratch scratch;
      const wire::Reply* r = verified_reply(msg[2], options_.limits, scratch);
      const bool ran = r && static_cast<Errc>(r->error_code()) == Errc::outcome_unknown;
      if (requests_.no_route(*rid, std::move(msg[2]), ran, Clock::now(), retry_timing()))
        loop_.notify();
      return;
    }
    case Command::heartbeat:
      if (auto instance = msg.size() == 2 ? parse_u64(msg[1]) : std::nullopt)
        broker_instance(*instance);
      return;
    case Command::locate_reply:
      on_locate_reply(msg);
      return;
    case Command::log_line:
      on_log_line(msg);
      return;
    case Command::server_down: {
      // [server id]([request ids]): the broker names the requests the process that went had
      // (those sent since may be a restarted one's); one that names none fails them all.
      auto server = msg.size() >= 2 ? parse_u64(msg[1]) : std::nullopt;
      if (!server) return;
      std::optional<std::vector<uint64_t>> only;
      if (msg.size() >= 3 && !(only = parse_u64_list(msg[2]))) return;
      fail_pending(Errc::server_unavailable,
                   "server " + ObjectId{*server, 0}.to_hex().substr(0, 16) +
                       " went away while the call was in flight",
                   *server, only ? &*only : nullptr);
      // Its direct endpoints went with it: located again on the next request.
      if (routes_.forget(*server)) direct_socks_.erase(*server);
      link_.forget_server(*server);
      log_subscribed_.erase(*server);  // a restarted one is subscribed again
      return;
    }
    default:
      return;  // heartbeats
  }
}

template <class Done>
void Connection::pump(Done done, Clock::time_point until, bool read_first) {
  Multipart msg;
  // Each receive that finds nothing costs a system call in libzmq, so a socket is read only when
  // the poll says it is readable (the poll sees messages already queued at once), and reading
  // stops when what we wait for has come.
  bool readable = read_first;
  bool direct_readable = read_first && !direct_socks_.empty();
  poll_items_.clear();
  poll_servers_.clear();
  // The heartbeat thread's single pass (an idle connection polls nothing): a dropped broker
  // connection is noticed here too.
  if (closed()) [[unlikely]]
    return flush();  // its sockets are closed: fails what waits
  if (read_first && until <= Clock::now() && link_.dropped())
    switch_broker("the connection to the broker at " + link_.endpoint() + " dropped");
  for (;;) {
    flush();
    auto now = Clock::now();
    link_.beat(now);
    bool got = false;
    bool was_silent = false;
    while (readable && link_.receive(msg, now, was_silent)) {
      got = true;
      const uint64_t instance = link_.instance();
      dispatch(msg);
      // Heard again after its window: what we sent meanwhile, or what it held, may be lost (a
      // broken connection loses what was in it). A restart was handled by dispatch.
      if (was_silent && instance == link_.instance()) resend_all("the broker is heard again");
      MutexLock lock(requests_.mutex());
      if (done()) return;
    }
    if (direct_readable) {
      // The direct sockets the poll saw readable (all of them before the first poll).
      std::vector<uint64_t> servers;
      if (poll_items_.empty()) {
        for (const auto& [server, sock] : direct_socks_) servers.push_back(server);
      } else {
        for (size_t i = 0; i < poll_servers_.size(); ++i)
          if (poll_items_[2 + i].revents & ZMQ_POLLIN) servers.push_back(poll_servers_[i]);
      }
      for (uint64_t server : servers) {
        for (int n = 0; n < 256; ++n) {
          // Looked up each time: a message may change the routes.
          auto it = direct_socks_.find(server);
          if (it == direct_socks_.end() || !recv_multipart(it->second, msg, true)) break;
          dispatch_direct(server, msg);
          MutexLock lock(requests_.mutex());
          if (done()) return;
        }
      }
    }
    // Silent past its window (broker_link.hpp: silence_allowed): with several brokers, move on.
    if (readable && !got) {
      if (const auto text = link_.overdue(now)) {
        if (link_.several()) {
          switch_broker(*text);
          readable = false;
          continue;
        }
        if (!options_.retry)
          fail_pending(Errc::broker_unreachable, *text, std::nullopt);
        else if (link_.went_silent(now))  // requests wait for it until their deadlines
          PATRO_LOG(warn, "client") << *text << "; waiting for it";
      }
    }
    const auto route_check = routes_.empty() ? Clock::time_point::max() : tend_routes(now);
    resend_due(now);
    {
      MutexLock lock(requests_.mutex());
      if (done()) return;
    }
    now = Clock::now();
    if (now >= until) return;
    auto limit = std::min({until, link_.next_beat(), route_check});
    // Several brokers: wake when the broker's silence would be long enough to move on.
    if (link_.several()) limit = std::min(limit, link_.move_due());
    limit = std::min(limit, requests_.next_retry());
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(limit - now) +
                std::chrono::milliseconds(1);
    // A limit already past (a resend or a route check that fell due while this pass ran) is
    // looked at now: zmq_poll waits forever on a negative timeout, and with the broker gone
    // nothing would wake it (a call then outlived its deadline under ASan).
    if (wait.count() < 0) wait = std::chrono::milliseconds(0);
    poll_items_.assign({{link_.socket_handle(), 0, ZMQ_POLLIN, 0}, loop_.wake_item()});
    poll_servers_.clear();
    for (auto& [server, sock] : direct_socks_) {
      poll_items_.push_back(zmq::pollitem_t{sock.handle(), 0, ZMQ_POLLIN, 0});
      poll_servers_.push_back(server);
    }
    void* const watch = link_.watch_handle();
    if (watch != nullptr) poll_items_.push_back(zmq::pollitem_t{watch, 0, ZMQ_POLLIN, 0});
    made_since_poll_.store(0, std::memory_order_relaxed);
    try {
      zmq::poll(poll_items_.data(), poll_items_.size(), wait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (poll_items_[1].revents & ZMQ_POLLIN) {
      loop_.drain_wake();
      flush();
      return;  // someone else wants the socket: let them have a turn
    }
    if (watch != nullptr && (poll_items_.back().revents & ZMQ_POLLIN) && link_.dropped()) {
      switch_broker("the connection to the broker at " + link_.endpoint() + " dropped");
      readable = false;
      direct_readable = false;
      poll_items_.clear();
      continue;
    }
    direct_readable = false;
    for (size_t i = 2; i < 2 + poll_servers_.size(); ++i)
      direct_readable = direct_readable || (poll_items_[i].revents & ZMQ_POLLIN) != 0;
    // Readable, or the poll timed out (then a read finds out whether the broker went silent).
    readable = (poll_items_[0].revents & ZMQ_POLLIN) != 0 ||
               (poll_items_[1].revents == 0 && !direct_readable);
  }
}

template <class Done>
bool Connection::drive(Done done, Clock::time_point until) {
  // Calls a patro::Bundle holds leave before anyone waits: sent here, or, while another thread
  // holds the socket (the heartbeat thread in a long poll, say), by that thread, woken for them.
  if (corked_.load(std::memory_order_relaxed) > 0) send_queued();
  return loop_.drive(
      done, until, [&]() PATRO_NO_TSA { return requests_.in_flight(); },
      [&](size_t in_flight) PATRO_NO_TSA {
        try {
          // With requests in flight that were made before the sockets were last polled, their
          // answers, and maybe ours, may be queued already: read before polling. The answers to
          // those made since (a lone call, or the calls of a Bundle) cannot be there yet, and a
          // read that finds nothing costs libzmq system calls; the poll sees an answer already
          // queued at once.
          pump(done, until, in_flight > made_since_poll_.load(std::memory_order_relaxed));
        } catch (...) {
          release_io();
          throw;
        }
        release_io();
      });
}

bool Connection::await(const SlotPtr& slot, Clock::time_point until) {
  {
    MutexLock lock(requests_.mutex());  // expire_after may move it
    until = std::min(until, slot->deadline);
  }
  return drive([&]() PATRO_NO_TSA { return slot->done; }, until) || ready(slot);
}

void Connection::await(const SlotPtr& slot) {
  Clock::time_point deadline;
  {
    MutexLock lock(requests_.mutex());
    deadline = slot->deadline;
  }
  if (!drive([&]() PATRO_NO_TSA { return slot->done; }, deadline)) {
    if (requests_.time_out(slot, Clock::now())) queue_cancel(slot);
    run_callbacks();
  }
}

void Connection::queue_cancel(const SlotPtr& slot) {
  // A control request or a batch of oneway calls is not cancelled on the wire: only answered.
  if (slot->control || slot->oneway_calls != 0 || slot->server == 0) return;
  Multipart m;
  m.reserve(4);
  m.push_back(header_frame(Command::cancel));
  m.push_back(object_id_frame(ObjectId{slot->server, 0}));
  m.push_back(u64_frame(slot->request_id));
  m.push_back(u64_frame(client_id_));
  {
    MutexLock out(out_mu_);
    outbox_.push_back(Outgoing{std::move(m), slot, true});
  }
  kick();
}

bool Connection::cancel(const SlotPtr& slot) {
  if (!requests_.cancel(slot, Clock::now())) return false;
  queue_cancel(slot);
  loop_.notify();
  run_callbacks();
  return true;
}

bool Connection::ready(const SlotPtr& slot) {
  MutexLock lock(requests_.mutex());
  return slot->done;
}

void Connection::on_done(const SlotPtr& slot, std::function<void()> f) {
  {
    MutexLock lock(requests_.mutex());
    if (requests_.add_callback(slot, f)) {
      kicked_ = true;  // the heartbeat thread drives the socket while nobody else does
      heartbeat_cv_.notify_one();
      return;
    }
  }
  if (completions_)
    completions_->post(std::move(f));
  else
    f();
}

void Connection::heartbeat_main(const std::atomic<bool>& gone) {
  auto next_expiry = Clock::now();
  for (;;) {
    std::chrono::microseconds wait = std::chrono::microseconds(timing_.heartbeat()) / 2;
    send_releases();
    bool sealed = false;
    {
      MutexLock out(out_mu_);
      if (const auto due = batcher_.due()) {
        const auto now = Clock::now();
        if (batcher_.overdue(now)) {
          seal_batch();
          sealed = true;
        } else {
          wait = std::min(wait, std::chrono::duration_cast<std::chrono::microseconds>(*due - now));
        }
      }
    }
    bool drive_callbacks;
    {
      MutexLock lock(requests_.mutex());
      if (stopping_) return;
      drive_callbacks = requests_.callbacks_waiting() > 0;
    }
    const auto now = Clock::now();
    const Clock::time_point soon(Clock::duration(expire_at_.load(std::memory_order_relaxed)));
    if (now >= next_expiry || now >= soon) {
      expire_slots(now);
      next_expiry = now + timing_.heartbeat() / 2;
    }
    if (soon > now && soon < next_expiry)
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::microseconds>(soon - now) +
                                std::chrono::microseconds(100));
    // Then-callbacks wait for answers nobody else may wait for: drive the socket for them,
    // giving it up whenever a caller wants it.
    if (loop_.try_take()) {
      try {
        const auto until = drive_callbacks
                               ? now + std::min<Clock::duration>(wait, std::chrono::milliseconds(5))
                               : now;
        // Without callbacks to drive, one pass that reads everything queued.
        pump(
            [&]() PATRO_NO_TSA {
              // event_loop: each answer goes to the program's loop as soon as it is here.
              return drive_callbacks && (requests_.callbacks_waiting() == 0 || stopping_ ||
                                         kicked_ || (completions_ && requests_.has_ready()));
            },
            until, true);
      } catch (const zmq::error_t& e) {
        PATRO_LOG(warn, "client") << "heartbeat failed: " << e.what();
      }
      release_io();
      if (gone.load()) return;
    } else {
      if (sealed) loop_.wake();  // the holder of the socket sends the batch
      run_callbacks();
      if (gone.load()) return;
    }
    MutexLock lock(requests_.mutex());
    if (stopping_) return;
    if (requests_.callbacks_waiting() > 0 && !kicked_)
      wait = std::min(wait, std::chrono::microseconds(200));
    heartbeat_cv_.wait_for(lock.native(), wait,
                           [&]() PATRO_NO_TSA { return stopping_ || kicked_; });
    kicked_ = false;
  }
}

flatbuffers::Offset<wire::Request> Connection::encode_request(
    flatbuffers::FlatBufferBuilder& fb, uint64_t rid, const ObjectId& id, wire::Op op,
    const Path& path, const ValueArray& args, std::string_view name, wire::CallContext context,
    std::chrono::milliseconds timeout, uint64_t fence, uint64_t pipeline_of) {
  const RefWriter refs = [this](flatbuffers::FlatBufferBuilder& b, const Reference& r) {
    // local_copies left local scalars only: a null offset sends one as a copy.
    if (r.node) return flatbuffers::Offset<wire::Ref>();
    // A callback object's reference says what it is (a proxy's does not: its server knows).
    auto tn = r.type_name.empty() ? 0 : b.CreateString(r.type_name);
    auto rt = r.reftype.empty() ? 0 : b.CreateString(r.reftype);
    // One of our callback host's objects: a pass, which its receiver releases with this key.
    const uint64_t pass =
        r.id.server != 0 && r.id.server == callback_server_.load(std::memory_order_relaxed)
            ? count_pass(r.id)
            : 0;
    return wire::CreateRef(b, r.id.server, r.id.object, tn, rt, encode_path(b, r.path), pass);
  };
  ValueArray copies;
  // Local containers travel as copies, local objects as references to the callback host.
  const ValueArray& sent = local_copies(args, copies, local_server());
  auto p = encode_path(fb, path);
  auto a = sent.empty() ? 0 : encode_values(fb, sent, refs);
  auto n = name.empty() ? 0 : fb.CreateString(name.data(), name.size());
  wire::RequestBuilder b(fb);
  b.add_request_id(rid);
  b.add_client_id(client_id_);
  b.add_timeout_ms(timeout_ms(timeout));
  b.add_server(id.server);
  b.add_object(id.object);
  b.add_op(op);
  if (!p.IsNull()) b.add_path(p);
  if (!a.IsNull()) b.add_args(a);
  if (!n.IsNull()) b.add_name(n);
  b.add_context(context);
  if (fence != 0) b.add_fence_token(fence);
  if (pipeline_of != 0) b.add_pipeline_of(pipeline_of);
  return b.Finish();
}

SlotPtr Connection::start(const ObjectId& id, wire::Op op, const Path& path, const ValueArray& args,
                          std::string_view name, wire::CallContext context,
                          const CallExtras& extras) {
  check_open();
  // A client that drops references faster than its heartbeat thread turns releases them on the
  // way, so the objects its server keeps for it stay bounded.
  if (releases_->queued() >= kReleaseEarly) send_releases();
  const auto timeout = extras.timeout.value_or(options_.call_timeout);
  const auto started = Clock::now();
  const auto deadline = started + timeout;
  bool full, idle;
  {
    MutexLock lock(requests_.mutex());
    full = requests_.in_flight() >= options_.max_in_flight;
    idle = requests_.in_flight() == 0;
  }
  if (idle) read_queued();
  if (full && !drive([&]() PATRO_NO_TSA { return requests_.in_flight() < options_.max_in_flight; },
                     deadline))
    throw Error(Errc::timeout, "no room for another request in flight by the call's deadline (" +
                                   std::to_string(options_.max_in_flight) + " in flight)");
  const uint64_t rid = next_request_id_++;
  // One builder per thread, reused: no allocation for it in the steady state.
  thread_local flatbuffers::FlatBufferBuilder fb(1024);
  fb.Clear();
  fb.Finish(encode_request(fb, rid, id, op, path, args, name, context, timeout, extras.fence,
                           extras.pipeline_of),
            wire::RequestIdentifier());
  if (fb.GetSize() > options_.limits.max_message_size)
    throw Error(Errc::message_too_large, "the request of " + std::to_string(fb.GetSize()) +
                                             " bytes is over the limit of " +
                                             std::to_string(options_.limits.max_message_size));
  Multipart m;
  m.reserve(4);
  m.push_back(header_frame(Command::request));
  m.push_back(object_id_frame(id));
  m.push_back(u64_frame(rid));
  m.push_back(body_frame(fb));
  SlotPtr slot = new_slot(rid, id.server, op, started, deadline, &m, false);
  annotate_sent(rid);
  submit(std::move(m), slot);
  return slot;
}

ValueArray Connection::results(const SlotPtr& slot,
                               std::vector<std::pair<uint32_t, Value>>* changed) {
  if (slot->error != Errc::ok) throw Error(slot->error, slot->error_text);
  AlignedScratch scratch;
  const wire::Reply* reply = verified_reply(slot->body, options_.limits, scratch);
  if (reply == nullptr) throw Error(Errc::bad_message, "a reply failed verification");
  if (reply->status() != wire::Status::Ok) {
    const int code = reply->error_code();
    const bool known =
        code != 0 && std::string_view(errc_name(static_cast<Errc>(code))) != "unknown_error";
    const Errc errc = known ? static_cast<Errc>(code) : Errc::internal;
    std::string text = reply->error_text() ? reply->error_text()->str() : std::string();
    // The server's text already starts with the code's name; keep only its message.
    const std::string prefix = std::string(errc_name(errc)) + ": ";
    if (text.rfind(prefix, 0) == 0) text.erase(0, prefix.size());
    if (reply->error_type() || reply->error_number() != 0)
      throw RemoteError(errc, text,
                        reply->error_type() ? reply->error_type()->str() : std::string(),
                        reply->error_number());
    throw Error(errc, text);
  }
  auto self = shared_from_this();
  // Each reference is held once however often the reply is read: the server counted it once.
  MutexLock lock(slot->refs_mu);
  ReplyHolds* holds = nullptr;
  const RefReader read_ref = [&self, &holds](const wire::Ref& r) {
    const ObjectId id{r.server(), r.object()};
    return Value(Reference{nullptr,
                           self,
                           id,
                           {},
                           r.type_name() ? r.type_name()->str() : std::string(),
                           r.reftype() ? r.reftype()->str() : std::string(),
                           holds->next([&] { return self->hold(id); }),
                           false});
  };
  // A reading that fails part way still counts as read: what it held stays held.
  auto read = [&](ReplyHolds& part, auto decode) PATRO_NO_TSA {
    holds = &part;
    part.start();
    try {
      decode();
    } catch (...) {
      part.read();
      throw;
    }
    part.read();
  };
  // A reply with no changed arguments has no references there to release when the slot goes
  // (Slot::~Slot would verify it again to find none).
  if (!reply->changed_args() || reply->changed_args()->size() == 0) slot->changed_holds.read();
  if (changed && reply->changed_args()) {
    read(slot->changed_holds, [&] {
      for (const auto* c : *reply->changed_args())
        changed->emplace_back(c->index(), decode_value(c->value(), read_ref));
    });
  }
  ValueArray out;
  read(slot->result_holds, [&] { out = decode_values(reply->results(), read_ref); });
  return out;
}

ValueArray Connection::call(const ObjectId& id, wire::Op op, const Path& path,
                            const ValueArray& args, std::string_view name,
                            wire::CallContext context, const CallExtras& extras) {
  SlotPtr slot = start(id, op, path, args, name, context, extras);
  await(slot);
  return results(slot, extras.changed);
}

void Connection::seal_batch() {
  if (auto batch = batcher_.seal()) queue_batch(std::move(*batch));
}

void Connection::queue_batch(OnewayBatcher::Sealed batch) {
  annotate_sent(batch.request_id);
  const auto started = Clock::now();
  SlotPtr slot = new_slot(batch.request_id, batch.target.server, wire::Op::Call, started,
                          started + options_.call_timeout, &batch.frames, false, batch.calls);
  outbox_.push_back(Outgoing{std::move(batch.frames), std::move(slot)});
}

void Connection::send_oneway(const ObjectId& id, wire::Op op, const Path& path,
                             const ValueArray& args, std::string_view name, uint64_t fence) {
  check_open();
  if (!op_info(op).oneway)
    throw Error(Errc::invalid_argument,
                std::string("a ") + op_info(op).name + " cannot be a oneway call");
  {
    // Checked (and local objects served) before the call enters its batch, so a refused call never
    // leaves a half-built table in the shared builder.
    ValueArray scratch;
    (void)local_copies(args, scratch, local_server());
  }
  const auto deadline = Clock::now() + options_.call_timeout;
  const size_t window = std::max(options_.oneway_window, options_.oneway_batch);
  bool full;
  {
    MutexLock lock(requests_.mutex());
    full = requests_.oneway_unacked() >= window;
  }
  if (full) {
    {
      MutexLock out(out_mu_);
      seal_batch();
    }
    kick();
    if (!drive([&]() PATRO_NO_TSA { return requests_.oneway_unacked() < window; }, deadline))
      throw Error(Errc::timeout, "the server acknowledged none of " + std::to_string(window) +
                                     " oneway calls in flight by the call's deadline");
  }
  Batched b;
  {
    MutexLock out(out_mu_);
    b = append_oneway(id, op, path, args, name, fence);
  }
  if (b.sealed) kick();
  if (b.opened) {
    MutexLock lock(requests_.mutex());
    kicked_ = true;  // the heartbeat thread sends the batch after oneway_delay
    heartbeat_cv_.notify_one();
  }
}

Connection::Batched Connection::append_oneway(const ObjectId& id, wire::Op op, const Path& path,
                                              const ValueArray& args, std::string_view name,
                                              uint64_t fence) {
  auto appended =
      batcher_.append(id, Clock::now(), [&](flatbuffers::FlatBufferBuilder& fb, uint64_t rid) {
        return encode_request(fb, rid, id, op, path, args, name, wire::CallContext::Void,
                              options_.call_timeout, fence);
      });
  for (OnewayBatcher::Sealed& batch : appended.sealed) queue_batch(std::move(batch));
  return Batched{!appended.sealed.empty(), appended.opened};
}

namespace {
// Made in place and never copied: each one that goes queues one release.
struct ReferenceHold {
  ReferenceHold(std::shared_ptr<ReleaseQueue> q, const ObjectId& i, uint64_t p)
      : queue(std::move(q)), id(i), pass(p) {}
  ReferenceHold(const ReferenceHold&) = delete;
  ReferenceHold& operator=(const ReferenceHold&) = delete;
  ~ReferenceHold() { queue->add(id, pass); }
  const std::shared_ptr<ReleaseQueue> queue;
  const ObjectId id;
  const uint64_t pass;
};
}  // namespace

std::shared_ptr<const void> Connection::hold(const ObjectId& id, uint64_t pass) {
  return std::make_shared<const ReferenceHold>(releases_, id, pass);
}

void Connection::send_releases() {
  if (releases_->queued() == 0) return;  // most heartbeat turns: no lock taken
  const auto dropped = releases_->take();
  if (dropped.empty()) return;
  bool sealed = false;
  // Oneway calls in the batches every oneway call takes (acknowledged per batch, and counted in
  // the window), without waiting for the window: a release is small, and the heartbeat thread
  // must not block.
  {
    MutexLock out(out_mu_);
    for (const auto& [id, pass, count] : dropped) {
      ValueArray args{Value(static_cast<int64_t>(count))};
      if (pass != 0) args.emplace_back(static_cast<int64_t>(pass));  // a callback's passes
      sealed |= append_oneway(id, wire::Op::Release, {}, args, {}, 0).sealed;
    }
  }
  released_.fetch_add(dropped.size(), std::memory_order_relaxed);
  if (sealed) kick();  // the open batch goes after oneway_delay, as any
}

uint64_t Connection::await_oneway(std::chrono::milliseconds timeout) {
  check_open();
  {
    MutexLock out(out_mu_);
    seal_batch();
  }
  kick();
  if (!drive([&]() PATRO_NO_TSA { return requests_.oneway_unacked() == 0; },
             Clock::now() + timeout))
    throw Error(Errc::timeout, "oneway calls still unacknowledged after " +
                                   std::to_string(timeout.count()) + " ms");
  MutexLock lock(requests_.mutex());
  return requests_.take_oneway_failed();
}

size_t Connection::oneway_outstanding() {
  // Both under out_mu_: sealing a batch (which holds it) moves its calls from the open batch to
  // the unacknowledged ones, and a read between the two would count them twice.
  MutexLock out(out_mu_);
  const size_t open = batcher_.open_calls();
  MutexLock lock(requests_.mutex());
  return open + requests_.oneway_unacked();
}

zmq::message_t Connection::control(Command command, const flatbuffers::FlatBufferBuilder& fb) {
  check_open();
  const uint64_t rid = next_request_id_++;
  Multipart m = control_frames(command, rid, fb);
  const auto started = Clock::now();
  SlotPtr slot =
      new_slot(rid, 0, wire::Op::Describe, started, started + options_.call_timeout, &m, true);
  submit(std::move(m), slot);
  await(slot);
  if (slot->error != Errc::ok) throw Error(slot->error, slot->error_text);
  return std::move(slot->body);
}

std::optional<NameInfo> Connection::lookup(const std::string& name) {
  flatbuffers::FlatBufferBuilder fb(128);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Lookup,
                                wire::CreateLookupDirect(fb, name.c_str()).Union()),
            wire::ControlIdentifier());
  const zmq::message_t answer = control(Command::lookup, fb);
  auto parse = [this](const zmq::message_t& body) -> std::optional<NameInfo> {
    AlignedScratch scratch;
    const wire::Control* c = verified_control(body, options_.limits, scratch);
    const wire::LookupReply* lr = c ? c->body_as_LookupReply() : nullptr;
    if (!lr) throw Error(Errc::bad_message, "a lookup reply failed verification");
    // The broker refused it: this client's key may not reach the name (rights per key).
    if (lr->refusal()) throw Error(Errc::not_authorized, lr->refusal()->str());
    if (!lr->found() || !lr->binding()) return std::nullopt;
    const auto* b = lr->binding();
    return NameInfo{ObjectId{b->server(), b->object()},
                    b->type_name() ? b->type_name()->str() : std::string(),
                    b->reftype() ? b->reftype()->str() : std::string()};
  };
  if (auto found = parse(answer)) return found;
  // Brokers may disagree (a server registered at some only, or not yet): ask the others, and
  // move to the first that knows the name, which routes to its server.
  const std::string current = endpoint();
  for (size_t i = 0; i < brokers_.size(); ++i) {
    if (brokers_[i] == current) continue;
    auto body =
        ask_broker(ctx_, brokers_[i], options_, curve_, Command::lookup, next_request_id_++, fb);
    std::optional<NameInfo> found;
    try {
      if (body) found = parse(*body);
    } catch (const Error& e) {  // a bad answer from another broker: as if it did not know
      PATRO_LOG(warn, "client") << "the broker at " << brokers_[i] << ": " << e.what();
    }
    if (!found) continue;
    MutexLock io(loop_.turn());
    if (link_.endpoint() == current)
      switch_broker("the broker at " + current + " does not know the name '" + name + "'", i);
    return found;
  }
  return std::nullopt;
}

}  // namespace patro::detail
