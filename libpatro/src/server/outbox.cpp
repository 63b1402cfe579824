#include "outbox.hpp"

#include <unistd.h>

#include "assert.hpp"
#include "executor.hpp"
#include "ids.hpp"
#include "log.hpp"
#include "trace.hpp"

namespace patro::detail {

ValueArray outcome_values(const SyncOutcome& o) {
  return {Value(o.ok), Value(o.count), Value(o.error), Value(static_cast<int64_t>(o.token))};
}

void Outbox::push(Late late) {
  {
    MutexLock lock(mu_);
    queue_.push_back(std::move(late));
  }
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void Outbox::send_results(const std::string& routing, uint64_t client_id, uint64_t request_id,
                          const ValueArray& results) {
  push(Late{routing, client_id, request_id, results});
}

void Outbox::send_error(const std::string& routing, uint64_t client_id, uint64_t request_id,
                        const Error& e) {
  zmq::message_t body;
  if (const auto* re = dynamic_cast<const RemoteError*>(&e))
    body = error_reply(request_id, e.code(), e.what(), re->type(), re->error_number());
  else
    body = error_reply(request_id, e.code(), e.what());
  push(Late{routing, client_id, request_id, std::move(body)});
}

void Outbox::post_owed(std::vector<DeferredReply>& owed) {
  if (owed.empty()) return;
  {
    MutexLock lock(mu_);
    for (DeferredReply& d : owed)
      queue_.push_back(
          Late{std::move(d.routing), d.client_id, d.request_id, outcome_values(d.outcome)});
  }
  owed.clear();
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void Outbox::request_stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

void Outbox::reply(zmq::socket_t& sock, std::string_view routing, uint64_t request_id,
                   zmq::message_t body, uint8_t version) {
  if (const auto lane = direct_lane(routing)) {
    if (*lane != lane_) {
      // Another lane's client: that lane's ROUTER sends it (already in the reply cache).
      // The lanes' outboxes are set before any lane starts, and a direct routing names one of
      // them (this server's lanes made it).
      PATRO_ASSERT(peers_ != nullptr && *lane < peers_->size(),
                   "a direct routing names a lane this server does not have");
      (*peers_)[*lane]->push(Late{std::string(routing), 0, request_id, std::move(body)});
      return;
    }
    PATRO_ASSERT(direct_ != nullptr, "a reply to a direct request on a lane with no ROUTER");
    annotate_sent(request_id);
    Multipart out;
    out.reserve(4);
    out.push_back(zmq::message_t(routing.data() + 4, routing.size() - 4));
    append_reply(out, false, {}, request_id, std::move(body), version);
    emit(*direct_, out, version >= kBundleVersion);
    return;
  }
  zmq::socket_t* via = &sock;
  if (const unsigned broker = routing_broker(routing).value_or(0); broker != 0) {
    PATRO_ASSERT(brokers_ != nullptr && broker < brokers_->size(),
                 "a routing names a broker this lane has no socket to");
    via = &(*brokers_)[broker];
  }
  routing = broker_peer(routing);  // the first broker's may be marked too (routing.hpp)
  annotate_sent(request_id);
  Multipart out;
  out.reserve(4);
  append_reply(out, true, routing, request_id, std::move(body), version);
  emit(*via, out);
}

void Outbox::emit(zmq::socket_t& sock, Multipart& out, bool bundle) {
  if (holding_) {
    const bool joins = bundle && out.size() == 2;  // [routing][envelope with its body]
    held_.push_back(Held{&sock, std::move(out), joins});
  } else {
    send_multipart(sock, out, false);
  }
}

void Outbox::send_held() {
  holding_ = false;
  // Each reply, or bundle, has its own barrier, as flush()'s late replies: one that fails does
  // not lose the rest.
  for (size_t i = 0; i < held_.size();) {
    size_t end = i + 1;
    if (held_[i].bundle) {
      // [routing][inline envelope]: the ones after it to the same client join it.
      size_t bytes = bundled_size(held_[i].out[1]);
      while (end < held_.size() && end - i < kMaxBundle && held_[end].bundle &&
             held_[end].sock == held_[i].sock &&
             held_[end].out[0].to_string_view() == held_[i].out[0].to_string_view() &&
             bytes + bundled_size(held_[end].out[1]) <= kMaxBundleBytes)
        bytes += bundled_size(held_[end++].out[1]);
    }
    try {
      send_bundle(i, end);
    } catch (const std::exception& e) {
      PATRO_LOG(error, "server") << "lane " << lane_ << ": " << (end - i)
                                 << " repl(ies) not sent: " << e.what();
    }
    i = end;
  }
  held_.clear();
}

void Outbox::send_bundle(size_t from, size_t to) {
  Held& first = held_[from];
  if (to == from + 1) {
    send_multipart(*first.sock, first.out, false);
    return;
  }
  std::vector<const zmq::message_t*> envelopes;
  envelopes.reserve(to - from);
  for (size_t i = from; i < to; ++i) envelopes.push_back(&held_[i].out[1]);
  Multipart out;
  out.reserve(2);
  out.push_back(bundle_frame(envelopes));
  out.insert(out.begin(), std::move(first.out[0]));
  send_multipart(*first.sock, out, false);
}

bool Outbox::send_log_line(zmq::socket_t& sock, std::string_view routing, Multipart& frames) {
  Multipart out;
  out.reserve(frames.size() + 2);
  zmq::socket_t* via = &sock;
  if (const auto lane = direct_lane(routing)) {
    // The subscription came by this lane's ROUTER (LogForwarder keeps it to this lane).
    if (*lane != lane_ || direct_ == nullptr) return false;
    via = direct_;
    out.push_back(zmq::message_t(routing.data() + 4, routing.size() - 4));
    out.push_back(header_frame(Command::log_line));
  } else {
    if (const unsigned broker = routing_broker(routing).value_or(0); broker != 0) {
      if (brokers_ == nullptr || broker >= brokers_->size()) return false;
      via = &(*brokers_)[broker];
    }
    routing = broker_peer(routing);
    out.push_back(header_frame(Command::log_line));
    out.push_back(zmq::message_t(routing.data(), routing.size()));
  }
  for (auto& f : frames) out.push_back(std::move(f));
  return send_multipart(*via, out, true);
}

void Outbox::answer(zmq::socket_t& sock, const std::string& routing, uint64_t client_id,
                    uint64_t request_id, zmq::message_t body) {
  std::optional<std::string> reroute;
  // The wire trace: a reply made after its request was taken (a forwarded direct reply, client id
  // 0, was traced by the lane that made it).
  if (wire_trace() && client_id != 0)
    PATRO_LOG(trace, "server") << "-> reply #" << request_id << " late "
                               << trace_outcome(body, Limits{}, std::nullopt);
  if (client_id != 0) reroute = cache_.finish(client_id, request_id, body, released_);
  reply(sock, reroute ? *reroute : routing, request_id, std::move(body));
}

void Outbox::send_owed(zmq::socket_t& sock, Executor& encoder, std::vector<DeferredReply>& owed) {
  for (const DeferredReply& d : owed)
    answer(sock, d.routing, d.client_id, d.request_id,
           encoder.results_reply(d.client_id, d.request_id, outcome_values(d.outcome)));
  owed.clear();
}

bool Outbox::flush(zmq::socket_t& sock, Executor& encoder) {
  std::deque<Late> late;
  bool stop;
  {
    MutexLock lock(mu_);
    late.swap(queue_);
    stop = stop_;
  }
  for (Late& l : late) {
    // Each reply has its own barrier: one that fails (a send, a broken invariant, logged where it
    // failed) does not lose the others, nor the stop asked with them.
    try {
      if (auto* results = std::get_if<ValueArray>(&l.reply))
        answer(sock, l.routing, l.client_id, l.request_id,
               encoder.results_reply(l.client_id, l.request_id, *results));
      else
        answer(sock, l.routing, l.client_id, l.request_id,
               std::move(std::get<zmq::message_t>(l.reply)));
    } catch (const std::exception& e) {
      PATRO_LOG(error, "server") << "lane " << lane_ << ": a late reply to request #"
                                 << l.request_id << " was not sent: " << e.what();
    }
  }
  return stop;
}

}  // namespace patro::detail
