#include "request_table.hpp"

#include <algorithm>
#include <string_view>

#include "log.hpp"
#include "trace.hpp"

namespace patro::detail {

namespace {

/// A request whose deadline passed: its error. An answer from the broker that it had no route is
/// kept as the answer when no copy can have run (server_unavailable).
void time_out_slot(Slot& s) {
  if (s.body.size() != 0 && !s.maybe_ran) return;
  s.body = zmq::message_t();
  s.error = Errc::timeout;
  s.error_text = "no answer to request " + std::to_string(s.request_id) + " by its deadline";
  // Whoever reads this decides whether to call again: say whether the call may have run.
  if (s.control) return;
  if (s.oneway_calls == 0 && idempotent(s.op))
    s.error_text += " (" + std::string(op_info(s.op).name) + " is idempotent: safe to retry)";
  else
    s.error_text += ": it may have run on the server, and calling again may run it twice";
}

bool slot_idempotent(const Slot& s) {
  return s.oneway_calls == 0 && op_info(s.op).idempotent;
}

void by_request_id(std::vector<SlotPtr>& slots) {
  std::sort(slots.begin(), slots.end(),
            [](const SlotPtr& a, const SlotPtr& b) { return a->request_id < b->request_id; });
}

}  // namespace

Slot::~Slot() {
  // The last owner is going (no reading can be under way): no lock needed.
  if (reply_release == nullptr || !done || error != Errc::ok || body.size() == 0) return;
  const bool results = !result_holds.was_read(), changed = !changed_holds.was_read();
  if (results || changed) reply_release->release_unread(body, results, changed);
}

SlotPtr RequestTable::add(uint64_t request_id, uint64_t server, wire::Op op,
                          Clock::time_point started, Clock::time_point deadline,
                          const Multipart* frames, bool control, uint32_t oneway_calls) {
  auto slot = std::make_shared<Slot>();
  // A request's reply may bring references; a control request's or a batch's acknowledgement not.
  if (!control && oneway_calls == 0) slot->reply_release = reply_release_;
  slot->request_id = request_id;
  slot->server = server;
  slot->op = op;
  slot->started = started;
  slot->deadline = deadline;
  slot->oneway_calls = oneway_calls;
  slot->control = control;
  if (wire_trace() && !control && frames != nullptr && frames->size() >= 4) [[unlikely]] {
    if (oneway_calls > 0) {
      slot->traced = "calls=" + std::to_string(oneway_calls);
    } else {
      AlignedScratch scratch;
      // Our own request, as Connection::encode_request made it.
      slot->traced =
          trace_target(*flatbuffers::GetRoot<wire::Request>(aligned_bytes((*frames)[3], scratch)));
    }
  }
  if (frames != nullptr && retry_) {
    // Copies that share the bodies' buffers with what goes out (ZeroMQ counts references).
    slot->frames.resize(frames->size());
    for (size_t i = 0; i < frames->size(); ++i)
      slot->frames[i].copy(const_cast<zmq::message_t&>((*frames)[i]));
  }
  MutexLock lock(mu_);
  slots_.emplace(request_id, slot);
  oneway_unacked_ += oneway_calls;
  if (!control) ++counts_.requests;
  return slot;
}

RequestTable::Counts RequestTable::counts() {
  MutexLock lock(mu_);
  Counts c = counts_;
  c.in_flight = slots_.size();
  return c;
}

void RequestTable::complete(const SlotPtr& s, Clock::time_point now, const char* via) {
  s->done = true;
  slots_.erase(s->request_id);
  if (!s->control && std::string_view(via) != "local") {
    ++counts_.replies;
    if (std::string_view(via) == "direct") ++counts_.direct_replies;
  }
  if (!s->traced.empty()) [[unlikely]] {
    const auto took = now - s->started;
    std::string outcome;
    if (s->error != Errc::ok)
      outcome = trace_failure(std::string(errc_name(s->error)) + ": " + s->error_text, took);
    else
      outcome = trace_outcome(s->body, limits_, took, s->oneway_calls > 0);
    PATRO_LOG(trace, "client") << (s->oneway_calls > 0 ? "<- batch #" : "<- reply #")
                               << s->request_id << ' ' << s->traced << ' ' << outcome
                               << " via=" << via;
  }
  if (s->oneway_calls > 0) {
    oneway_unacked_ -= std::min<size_t>(oneway_unacked_, s->oneway_calls);
    uint64_t failed = 0;
    std::string first;
    if (s->error != Errc::ok) {
      failed = s->oneway_calls;
      first = std::string(errc_name(s->error)) + ": " + s->error_text;
    } else {
      AlignedScratch scratch;
      const wire::Reply* r = verified_reply(s->body, limits_, scratch);
      if (r == nullptr || r->status() != wire::Status::Ok) {
        failed = s->oneway_calls;
        first = r && r->error_text() ? r->error_text()->str() : "a bad acknowledgement";
      } else if (r->results() && r->results()->size() >= 3) {
        failed = static_cast<uint64_t>(std::max<int64_t>(r->results()->Get(1)->i(), 0));
        if (r->results()->Get(2)->s()) first = r->results()->Get(2)->s()->str();
      }
    }
    if (failed > 0) {
      oneway_failed_ += failed;
      PATRO_LOG(warn, "client") << failed << " of a batch of " << s->oneway_calls
                                << " oneway calls failed; the first: " << first;
    }
    s->body = zmq::message_t();
  }
  if (!s->callbacks.empty()) {
    if (callbacks_waiting_ > 0) --callbacks_waiting_;
    ready_.push_back(s);
  }
}

bool RequestTable::answer(uint64_t request_id, zmq::message_t body, Clock::time_point now,
                          const char* via) {
  // Outlives the lock: a slot whose Future is gone ends here, and lets go of what its answer
  // brings (reading it) without holding up the table.
  SlotPtr slot;
  bool late = false;
  {
    MutexLock lock(mu_);
    auto it = slots_.find(request_id);
    if (it != slots_.end()) {
      slot = it->second;
      slot->body = std::move(body);
      complete(slot, now, via);
      return true;
    }
    // Late: the server counted what it brings for us, and nobody will read it. (A second copy
    // of the same answer, from the reply cache, brings nothing new: forgotten at the first.)
    const auto g = std::find(given_up_.begin(), given_up_.end(), request_id);
    late = g != given_up_.end();
    if (late) given_up_.erase(g);
  }
  if (late) reply_release_->release_unread(body, true, true);
  return false;
}

void RequestTable::given_up(const Slot& slot) {
  if (slot.reply_release == nullptr) return;
  if (given_up_.size() >= kGivenUp) given_up_.pop_front();
  given_up_.push_back(slot.request_id);
}

bool RequestTable::no_route(uint64_t request_id, zmq::message_t body, bool ran,
                            Clock::time_point now, const RetryTiming& timing) {
  MutexLock lock(mu_);
  auto it = slots_.find(request_id);
  if (it == slots_.end() || it->second->done) return false;
  SlotPtr slot = it->second;
  if (ran) slot->maybe_ran = true;
  if (slot->lost_direct && !slot_idempotent(*slot)) {
    // Its direct connection closed with a copy in flight, and the broker has no route to its
    // server: its process is most likely gone (its lanes have no connection), perhaps after
    // running it. Sent on, it would reach a process that replaces that one, whose reply cache
    // does not know it: it could run twice.
    slot->body = zmq::message_t();
    slot->error = Errc::outcome_unknown;
    slot->error_text = "server " + ObjectId{slot->server, 0}.to_hex().substr(0, 16) +
                       ": its direct connection closed and the broker has no route to it; the "
                       "call may or may not have run";
    complete(slot, now, "broker");
    return true;
  }
  if (!retry_) {
    slot->body = std::move(body);
    complete(slot, now, "broker");
  } else {
    // Kept in case it may not wait: its answer is then this error.
    if (!slot->maybe_ran) slot->body = std::move(body);
    retry_later(slot, now, timing);
  }
  return true;
}

bool RequestTable::expire(Clock::time_point now, std::vector<SlotPtr>* cancel,
                          Clock::time_point* next) {
  MutexLock lock(mu_);
  std::vector<SlotPtr> late;
  if (next != nullptr) *next = Clock::time_point::max();
  for (auto& [id, slot] : slots_) {
    if (slot->done) continue;
    if (slot->deadline <= now)
      late.push_back(slot);
    else if (next != nullptr)
      *next = std::min(*next, slot->deadline);
  }
  for (const SlotPtr& slot : late) {
    time_out_slot(*slot);
    given_up(*slot);
    complete(slot, now);
    if (cancel != nullptr && slot->cancel_on_timeout) cancel->push_back(slot);
  }
  return !late.empty();
}

bool RequestTable::shorten(const SlotPtr& slot, Clock::time_point deadline) {
  MutexLock lock(mu_);
  if (slot->done) return false;
  slot->deadline = std::min(slot->deadline, deadline);
  slot->cancel_on_timeout = true;
  return true;
}

bool RequestTable::time_out(const SlotPtr& slot, Clock::time_point now) {
  MutexLock lock(mu_);
  if (slot->done) return false;
  time_out_slot(*slot);
  given_up(*slot);
  complete(slot, now);
  return slot->cancel_on_timeout;
}

bool RequestTable::cancel(const SlotPtr& slot, Clock::time_point now) {
  MutexLock lock(mu_);
  if (slot->done) return false;
  slot->body = zmq::message_t();
  slot->error = Errc::cancelled;
  slot->error_text =
      "request " + std::to_string(slot->request_id) +
      " was cancelled by its caller (a server that had not started it never runs it)";
  given_up(*slot);
  complete(slot, now);
  return true;
}

void RequestTable::fail(const std::vector<SlotPtr>& slots, const std::string& why,
                        Clock::time_point now) {
  if (slots.empty()) return;
  MutexLock lock(mu_);
  for (const SlotPtr& slot : slots) {
    if (slot->done) continue;
    slot->body = zmq::message_t();
    slot->error = slot->maybe_ran && !slot_idempotent(*slot) ? Errc::outcome_unknown
                                                             : Errc::server_unavailable;
    slot->error_text = why;
    complete(slot, now);
  }
}

void RequestTable::fail_pending(Errc code, const std::string& text, std::optional<uint64_t> server,
                                Clock::time_point now, const RetryTiming& timing,
                                const std::vector<uint64_t>* only) {
  MutexLock lock(mu_);
  std::vector<SlotPtr> failing;
  if (only != nullptr) {
    for (uint64_t id : *only)
      if (auto it = slots_.find(id); it != slots_.end() && !it->second->done &&
                                     it->second->server == *server && !it->second->sent_direct &&
                                     !it->second->lost_direct)
        failing.push_back(it->second);
  }
  // Sent directly, it went to the process that went, whatever the list says; so did a copy lost
  // with its direct connection and resent through the broker, which has no route for it until a
  // restart replaces that process: sent there, it would run a second time.
  for (auto& [id, slot] : slots_)
    if (!slot->done && (!server || slot->server == *server) &&
        (only == nullptr || slot->sent_direct || slot->lost_direct))
      failing.push_back(slot);
  for (const SlotPtr& slot : failing) {
    const bool idempotent = slot_idempotent(*slot);
    if (code == Errc::server_unavailable && idempotent && !slot->frames.empty()) {
      // Its server went away: an idempotent request may go to it again once it is back (a
      // server that keeps its id across a restart, or that only re-registered).
      slot->maybe_ran = true;
      retry_later(slot, now, timing);
      continue;
    }
    slot->error = code;
    slot->error_text = text;
    if (code == Errc::server_unavailable && !idempotent) {
      slot->error = Errc::outcome_unknown;
      slot->error_text = text + "; the call may or may not have run";
    }
    complete(slot, now);
  }
}

void RequestTable::retry_later(const SlotPtr& slot, Clock::time_point now,
                               const RetryTiming& timing) {
  // No route within twice the broker's window: the server is not coming back.
  const auto grace = 2 * timing.broker_window;
  if (slot->no_route_since == Clock::time_point::max()) slot->no_route_since = now;
  const auto wait = slot->backoff.count() == 0 ? retry_backoff_ : slot->backoff;
  if (slot->frames.empty() || now + wait >= slot->deadline || now - slot->no_route_since > grace) {
    if (slot->maybe_ran && !slot_idempotent(*slot)) {
      slot->body = zmq::message_t();
      slot->error = Errc::outcome_unknown;
      slot->error_text =
          "its server went away and did not come back; the call may or may not have run";
    } else if (slot->body.size() == 0 || slot->maybe_ran) {
      slot->body = zmq::message_t();
      slot->error = Errc::server_unavailable;
      slot->error_text = "no server took the request (its server is not registered)";
    }
    complete(slot, now);
    return;
  }
  slot->retry_at = now + wait;
  slot->backoff = std::min(wait * 2, timing.max_backoff);
  Clock::rep next = next_retry_.load();
  const Clock::rep mine = slot->retry_at.time_since_epoch().count();
  while (mine < next && !next_retry_.compare_exchange_weak(next, mine)) {
  }
}

std::vector<SlotPtr> RequestTable::take_all_for_resend() {
  std::vector<SlotPtr> all;
  {
    MutexLock lock(mu_);
    for (auto& [id, slot] : slots_) {
      // Those sent directly did not pass the broker: its fault lost none of them.
      if (slot->done || slot->frames.empty() || slot->sent_direct) continue;
      slot->maybe_ran = true;
      slot->retry_at = Clock::time_point::max();
      all.push_back(slot);
    }
  }
  by_request_id(all);
  return all;
}

std::vector<SlotPtr> RequestTable::take_due(Clock::time_point now) {
  std::vector<SlotPtr> due;
  {
    MutexLock lock(mu_);
    Clock::time_point next = Clock::time_point::max();
    for (auto& [id, slot] : slots_) {
      if (slot->done || slot->retry_at == Clock::time_point::max()) continue;
      if (slot->retry_at <= now) {
        slot->retry_at = Clock::time_point::max();
        due.push_back(slot);
      } else {
        next = std::min(next, slot->retry_at);
      }
    }
    next_retry_ = next.time_since_epoch().count();
  }
  by_request_id(due);
  return due;
}

uint32_t RequestTable::next_attempt(const SlotPtr& slot) {
  MutexLock lock(mu_);
  return ++slot->attempts;
}

bool RequestTable::brokered_in_flight(uint64_t server) {
  MutexLock lock(mu_);
  for (const auto& [rid, slot] : slots_)
    if (slot->server == server && !slot->done && slot->sent && !slot->sent_direct) return true;
  return false;
}

size_t RequestTable::direct_in_flight(uint64_t server) {
  MutexLock lock(mu_);
  size_t n = 0;
  for (const auto& [rid, slot] : slots_)
    n += slot->server == server && !slot->done && slot->sent && slot->sent_direct;
  return n;
}

std::vector<SlotPtr> RequestTable::lost_direct(uint64_t server) {
  std::vector<SlotPtr> lost;
  {
    MutexLock lock(mu_);
    for (auto& [rid, slot] : slots_)
      if (slot->server == server && !slot->done && slot->sent && slot->sent_direct) {
        slot->maybe_ran = slot->lost_direct = true;
        slot->retry_at = Clock::time_point::max();
        lost.push_back(slot);
      }
  }
  by_request_id(lost);
  return lost;
}

bool RequestTable::add_callback(const SlotPtr& slot, std::function<void()>& f) {
  if (slot->done) return false;
  if (slot->callbacks.empty()) ++callbacks_waiting_;
  slot->callbacks.push_back(std::move(f));
  return true;
}

std::vector<SlotPtr> RequestTable::take_ready() {
  std::vector<SlotPtr> ready;
  ready.swap(ready_);
  return ready;
}

void RequestTable::run_callbacks(const std::vector<SlotPtr>& ready) {
  for (const SlotPtr& s : ready) {
    for (auto& f : s->callbacks) {
      try {
        f();
      } catch (const std::exception& e) {
        PATRO_LOG(warn, "client") << "a then-callback threw: " << e.what();
      }
    }
    s->callbacks.clear();
  }
}

}  // namespace patro::detail
