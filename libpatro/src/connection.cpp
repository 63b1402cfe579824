#include "connection.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "ids.hpp"
#include "log.hpp"

namespace patro::detail {

Connection::Connection(std::vector<std::string> brokers, const ClientOptions& options)
    : brokers_(std::move(brokers)),
      options_(options),
      client_id_(random_id()),
      heartbeat_ms_(options.heartbeat.interval.count()),
      broker_window_ms_(options.heartbeat.window().count()) {
  if (brokers_.empty()) throw Error(Errc::bad_config, "no broker address to connect to");
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw Error(Errc::internal, "eventfd failed");
}

Connection::~Connection() {
  {
    MutexLock lock(state_mu_);
    stopping_ = true;
    state_cv_.notify_all();
  }
  if (heartbeat_.joinable()) heartbeat_.join();
  {
    MutexLock io(io_mu_);
    if (sock_.handle() != nullptr) {
      try {
        Multipart bye;
        bye.push_back(header_frame(Command::disconnect));
        send_multipart(sock_, bye, true);
        sock_.set(zmq::sockopt::linger, 100);
        sock_.close();
      } catch (const zmq::error_t&) {
      }
    }
  }
  ::close(wake_fd_);
}

void Connection::wake() noexcept {
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void Connection::connect() {
  std::string errors;
  for (const std::string& endpoint : brokers_) {
    {
      MutexLock io(io_mu_);
      sock_ = zmq::socket_t(ctx_, zmq::socket_type::dealer);
      sock_.set(zmq::sockopt::linger, 0);
      sock_.set(zmq::sockopt::sndhwm, 100000);
      sock_.set(zmq::sockopt::rcvhwm, 100000);
      sock_.set(zmq::sockopt::maxmsgsize,
                static_cast<int64_t>(
                    std::min<size_t>(options_.limits.max_message_size * 2 + 65536, INT32_MAX)));
      try {
        sock_.connect(endpoint);
      } catch (const zmq::error_t& e) {
        errors += " " + endpoint + ": " + e.what() + ";";
        continue;
      }
      last_heard_ = Clock::now();
      next_heartbeat_ = last_heard_ + options_.heartbeat.interval;
    }
    flatbuffers::FlatBufferBuilder fb(64);
    fb.Finish(wire::CreateControl(fb, wire::ControlBody::Hello,
                                  wire::CreateHello(fb, client_id_).Union()),
              wire::ControlIdentifier());
    const uint64_t rid = next_request_id_++;
    Multipart m;
    m.push_back(header_frame(Command::hello));
    m.push_back(u64_frame(rid));
    m.push_back(body_frame(fb));
    try {
      zmq::message_t body =
          exchange(rid, std::move(m), Clock::now() + options_.connect_timeout, 0, wire::Op::Get);
      AlignedScratch scratch;
      const wire::Control* c = verified_control(body, options_.limits, scratch);
      if (c && c->body_as_Welcome()) {
        endpoint_ = endpoint;
        const uint32_t theirs = c->body_as_Welcome()->heartbeat_ms();
        if (theirs > 0 && theirs < heartbeat_ms_) heartbeat_ms_ = theirs;
        if (theirs > 0 && c->body_as_Welcome()->liveness() > 0)
          broker_window_ms_ = int64_t{theirs} * c->body_as_Welcome()->liveness();
        {
          // The broker's faster interval applies now: the first heartbeat must not wait for ours,
          // or a broker with a shorter window drops this client after a long call.
          MutexLock io(io_mu_);
          next_heartbeat_ = std::min(
              next_heartbeat_, Clock::now() + std::chrono::milliseconds(heartbeat_ms_.load()));
        }
        if (!heartbeat_.joinable()) heartbeat_ = std::thread([this] { heartbeat_main(); });
        return;
      }
      errors += " " + endpoint + ": the answer to hello was not a welcome;";
    } catch (const Error& e) {
      errors += " " + endpoint + ": no answer within " +
                std::to_string(options_.connect_timeout.count()) + " ms;";
    }
  }
  throw Error(Errc::broker_unreachable, "no broker answers:" + errors);
}

void Connection::submit(Multipart frames) {
  {
    MutexLock out(out_mu_);
    outbox_.push_back(std::move(frames));
  }
  if (io_mu_.try_lock()) {
    flush();
    release_io();
  } else {
    wake();  // the holder of the socket flushes it
  }
}

void Connection::flush() {
  for (;;) {
    Multipart m;
    {
      MutexLock out(out_mu_);
      if (outbox_.empty()) return;
      m = std::move(outbox_.front());
      outbox_.pop_front();
    }
    try {
      if (!send_multipart(sock_, m, false)) PATRO_LOG(warn, "client") << "a request was not sent";
    } catch (const zmq::error_t& e) {
      PATRO_LOG(warn, "client") << "send failed: " << e.what();
    }
  }
}

void Connection::release_io() {
  io_mu_.unlock();
  // Whatever was queued while we held the socket, and nobody could flush, goes now.
  for (;;) {
    {
      MutexLock out(out_mu_);
      if (outbox_.empty()) break;
    }
    if (!io_mu_.try_lock()) break;  // the new holder flushes
    flush();
    io_mu_.unlock();
  }
  MutexLock lock(state_mu_);
  ++io_generation_;
  state_cv_.notify_all();
}

void Connection::fail_pending(Errc code, const std::string& text, std::optional<uint64_t> server) {
  MutexLock lock(state_mu_);
  for (auto& [id, slot] : slots_) {
    if (slot.done || (server && slot.server != *server)) continue;
    slot.done = true;
    slot.error = code;
    slot.error_text = text;
    if (code == Errc::server_unavailable && !idempotent(slot.op)) {
      slot.error = Errc::outcome_unknown;
      slot.error_text = text + "; the call may or may not have run";
    }
  }
  state_cv_.notify_all();
}

void Connection::dispatch(Multipart& msg) {
  const auto cmd = msg.empty() ? std::nullopt : parse_header(msg[0]);
  if (!cmd) return;
  switch (*cmd) {
    case Command::reply:
    case Command::welcome:
    case Command::lookup_reply:
    case Command::broker_info_reply: {
      if (msg.size() != 3) return;
      auto rid = parse_u64(msg[1]);
      if (!rid) return;
      MutexLock lock(state_mu_);
      auto it = slots_.find(*rid);
      if (it == slots_.end() || it->second.done) return;  // late: its caller gave up
      it->second.body = std::move(msg[2]);
      it->second.done = true;
      state_cv_.notify_all();
      return;
    }
    case Command::server_down: {
      auto server = msg.size() == 2 ? parse_u64(msg[1]) : std::nullopt;
      if (!server) return;
      fail_pending(Errc::server_unavailable,
                   "server " + ObjectId{*server, 0}.to_hex().substr(0, 16) +
                       " went away while the call was in flight",
                   *server);
      return;
    }
    default:
      return;  // heartbeats
  }
}

void Connection::pump(uint64_t request_id, Clock::time_point until) {
  zmq::pollitem_t items[] = {{sock_.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  Multipart msg;
  for (;;) {
    flush();
    auto now = Clock::now();
    if (now >= next_heartbeat_) {
      Multipart hb;
      hb.push_back(header_frame(Command::heartbeat));
      hb.push_back(u64_frame(client_id_));
      try {
        send_multipart(sock_, hb, true);
      } catch (const zmq::error_t&) {
      }
      next_heartbeat_ = now + std::chrono::milliseconds(heartbeat_ms_.load());
    }
    bool got = false;
    while (recv_multipart(sock_, msg, true)) {
      got = true;
      last_heard_ = Clock::now();
      dispatch(msg);
    }
    const std::chrono::milliseconds broker_window(broker_window_ms_.load());
    if (!got && now - last_heard_ > broker_window) {
      fail_pending(Errc::broker_unreachable,
                   "the broker at " + endpoint_ + " has been silent for more than " +
                       std::to_string(broker_window.count()) + " ms",
                   std::nullopt);
      last_heard_ = now;  // each call after this gets its own full window
    }
    if (request_id != 0) {
      MutexLock lock(state_mu_);
      auto it = slots_.find(request_id);
      if (it == slots_.end() || it->second.done) return;
    }
    now = Clock::now();
    if (now >= until) return;
    auto limit = std::min(until, next_heartbeat_);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(limit - now) +
                std::chrono::milliseconds(1);
    items[0].revents = items[1].revents = 0;
    try {
      zmq::poll(items, 2, wait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t n;
      (void)!::read(wake_fd_, &n, sizeof n);
      flush();
      return;  // someone else wants the socket: let them have a turn
    }
  }
}

zmq::message_t Connection::exchange(uint64_t request_id, Multipart frames,
                                    Clock::time_point deadline, uint64_t server, wire::Op op) {
  {
    MutexLock lock(state_mu_);
    Slot& slot = slots_[request_id];
    slot.server = server;
    slot.op = op;
  }
  submit(std::move(frames));
  for (;;) {
    uint64_t generation;
    {
      MutexLock lock(state_mu_);
      auto it = slots_.find(request_id);
      if (it->second.done) {
        Slot slot = std::move(it->second);
        slots_.erase(it);
        if (slot.error != Errc::ok) throw Error(slot.error, slot.error_text);
        return std::move(slot.body);
      }
      if (Clock::now() >= deadline) {
        slots_.erase(it);
        throw Error(Errc::timeout,
                    "no answer to request " + std::to_string(request_id) + " by its deadline");
      }
      generation = io_generation_;
    }
    if (io_mu_.try_lock()) {
      try {
        pump(request_id, deadline);
      } catch (...) {
        release_io();
        throw;
      }
      release_io();
      continue;
    }
    MutexLock lock(state_mu_);
    state_cv_.wait_until(lock.native(), deadline, [&]() PATRO_NO_TSA {
      auto it = slots_.find(request_id);
      return it->second.done || io_generation_ != generation;
    });
  }
}

void Connection::heartbeat_main() {
  for (;;) {
    {
      MutexLock lock(state_mu_);
      state_cv_.wait_for(lock.native(), std::chrono::milliseconds(heartbeat_ms_.load()) / 2,
                         [&]() PATRO_NO_TSA { return stopping_; });
      if (stopping_) return;
    }
    if (io_mu_.try_lock()) {  // otherwise a caller is pumping, and heartbeats for us
      try {
        pump(0, Clock::now());
      } catch (const zmq::error_t& e) {
        PATRO_LOG(warn, "client") << "heartbeat failed: " << e.what();
      }
      release_io();
    }
  }
}

ValueArray Connection::call(const ObjectId& id, wire::Op op, const Path& path,
                            const ValueArray& args, std::string_view name,
                            wire::CallContext context, const CallExtras& extras) {
  const uint64_t rid = next_request_id_++;
  const auto timeout = extras.timeout.value_or(options_.call_timeout);
  flatbuffers::FlatBufferBuilder fb(256);
  const RefWriter refs = [](flatbuffers::FlatBufferBuilder& b, const Reference& r) {
    if (r.node)
      throw Error(Errc::invalid_argument,
                  "cannot send a local object to a server; serve it with patronize()");
    return wire::CreateRef(b, r.id.server, r.id.object, 0, 0, encode_path(b, r.path));
  };
  auto p = encode_path(fb, path);
  auto a = args.empty() ? 0 : encode_values(fb, args, refs);
  auto n = name.empty() ? 0 : fb.CreateString(name.data(), name.size());
  wire::RequestBuilder b(fb);
  b.add_request_id(rid);
  b.add_client_id(client_id_);
  b.add_timeout_ms(static_cast<uint32_t>(
      std::min<int64_t>(timeout.count(), std::numeric_limits<uint32_t>::max())));
  b.add_server(id.server);
  b.add_object(id.object);
  b.add_op(op);
  if (!p.IsNull()) b.add_path(p);
  if (!a.IsNull()) b.add_args(a);
  if (!n.IsNull()) b.add_name(n);
  b.add_context(context);
  if (extras.fence != 0) b.add_fence_token(extras.fence);
  fb.Finish(b.Finish(), wire::RequestIdentifier());
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
  zmq::message_t body = exchange(rid, std::move(m), Clock::now() + timeout, id.server, op);

  AlignedScratch scratch;
  const wire::Reply* reply = verified_reply(body, options_.limits, scratch);
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
  const RefReader read_ref = [&self](const wire::Ref& r) {
    return Value(Reference{nullptr,
                           self,
                           ObjectId{r.server(), r.object()},
                           {},
                           r.type_name() ? r.type_name()->str() : std::string(),
                           r.reftype() ? r.reftype()->str() : std::string()});
  };
  if (extras.changed && reply->changed_args()) {
    for (const auto* c : *reply->changed_args())
      extras.changed->emplace_back(c->index(), decode_value(c->value(), read_ref));
  }
  return decode_values(reply->results(), read_ref);
}

zmq::message_t Connection::control(Command command, const flatbuffers::FlatBufferBuilder& fb) {
  const uint64_t rid = next_request_id_++;
  Multipart m;
  m.push_back(header_frame(command));
  m.push_back(u64_frame(rid));
  m.push_back(body_frame(fb));
  return exchange(rid, std::move(m), Clock::now() + options_.call_timeout, 0, wire::Op::Describe);
}

std::optional<NameInfo> Connection::lookup(const std::string& name) {
  flatbuffers::FlatBufferBuilder fb(128);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Lookup,
                                wire::CreateLookupDirect(fb, name.c_str()).Union()),
            wire::ControlIdentifier());
  const uint64_t rid = next_request_id_++;
  Multipart m;
  m.push_back(header_frame(Command::lookup));
  m.push_back(u64_frame(rid));
  m.push_back(body_frame(fb));
  zmq::message_t body =
      exchange(rid, std::move(m), Clock::now() + options_.call_timeout, 0, wire::Op::Describe);
  AlignedScratch scratch;
  const wire::Control* c = verified_control(body, options_.limits, scratch);
  const wire::LookupReply* lr = c ? c->body_as_LookupReply() : nullptr;
  if (!lr) throw Error(Errc::bad_message, "a lookup reply failed verification");
  if (!lr->found() || !lr->binding()) return std::nullopt;
  const auto* b = lr->binding();
  return NameInfo{ObjectId{b->server(), b->object()},
                  b->type_name() ? b->type_name()->str() : std::string(),
                  b->reftype() ? b->reftype()->str() : std::string()};
}

}  // namespace patro::detail
