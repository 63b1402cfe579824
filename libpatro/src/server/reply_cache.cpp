#include "reply_cache.hpp"

#include <algorithm>

namespace patro::detail {

ReplyCache::Seen ReplyCache::begin(uint64_t client, uint64_t request_id, std::string_view routing,
                                   Clock::time_point now, zmq::message_t* cached) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  if (++s.since_sweep >= 4096) sweep(s, now);
  PerClient& c = s.clients[client];
  c.last = now;
  c.unconfirmed = false;
  if (const auto broker = routing_broker(routing)) c.via = static_cast<int>(*broker);
  auto [it, inserted] = c.entries.try_emplace(request_id);
  if (inserted) {
    c.order.emplace_back(request_id, now);
    evict(s, c, now);
    return Seen::fresh;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  if (!it->second.done) {
    it->second.reroute.assign(routing.data(), routing.size());
    return Seen::running;
  }
  if (it->second.cancelled) return Seen::cancelled;
  if (it->second.dropped) return Seen::dropped;
  cached->copy(it->second.body);
  return Seen::answered;
}

namespace {
// An answered entry's target (done: ready, cancelled or dropped), or waiting.
template <class Entries>
ReplyCache::Target answer_of(Entries& entries, uint64_t on, zmq::message_t* reply) {
  auto it = entries.find(on);
  if (it == entries.end() || !it->second.done) return ReplyCache::Target::waiting;
  if (it->second.cancelled) return ReplyCache::Target::cancelled;
  if (it->second.dropped) return ReplyCache::Target::dropped;
  reply->copy(it->second.body);
  return ReplyCache::Target::ready;
}
}  // namespace

ReplyCache::Target ReplyCache::answered(uint64_t client, uint64_t on, zmq::message_t* reply) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  auto c = s.clients.find(client);
  return c == s.clients.end() ? Target::waiting : answer_of(c->second.entries, on, reply);
}

ReplyCache::Target ReplyCache::await_result(uint64_t client, Dependent& d, zmq::message_t* reply) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  PerClient& c = s.clients[client];
  if (const Target t = answer_of(c.entries, d.on, reply); t != Target::waiting) return t;
  // Running, or not here yet (it may come by another route, or be resent): wait for it.
  if (c.waiting_count >= max_entries_) return Target::full;
  c.waiting[d.on].push_back(std::move(d));
  ++c.waiting_count;
  return Target::waiting;
}

void ReplyCache::release_waiting(PerClient& c, uint64_t request_id, Dependent::On state,
                                 const zmq::message_t* reply, std::vector<Dependent>& released) {
  auto w = c.waiting.find(request_id);
  if (w == c.waiting.end()) return;
  for (Dependent& d : w->second) {
    d.state = state;
    if (reply != nullptr) d.on_reply.copy(const_cast<zmq::message_t&>(*reply));
    released.push_back(std::move(d));
  }
  c.waiting_count -= w->second.size();
  c.waiting.erase(w);
}

std::optional<std::string> ReplyCache::finish(uint64_t client, uint64_t request_id,
                                              const zmq::message_t& body,
                                              std::vector<Dependent>& released) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  auto cit = s.clients.find(client);
  if (cit == s.clients.end()) return std::nullopt;  // forgotten: the client is gone
  auto it = cit->second.entries.find(request_id);
  if (it == cit->second.entries.end() || it->second.done) return std::nullopt;
  Entry& e = it->second;
  e.done = true;
  e.body.copy(const_cast<zmq::message_t&>(body));
  e.seq = seq_.fetch_add(1, std::memory_order_relaxed) + 1;
  s.stored.push_back({e.seq, client, request_id});
  ++s.bodies;
  // Records of entries forgotten since (count, age, a gone client) are compacted away here, so
  // the record queue stays within twice the bodies held.
  if (s.stored.size() > 2 * s.bodies + 64) {
    std::deque<Stored> live;
    for (const Stored& r : s.stored)
      if (holder(s, r)) live.push_back(r);
    s.stored.swap(live);
  }
  std::optional<std::string> reroute;
  if (!e.reroute.empty()) reroute = std::move(e.reroute);
  if (cit->second.waiting_count > 0)
    release_waiting(cit->second, request_id, Dependent::On::ready, &body, released);
  if (bytes_.fetch_add(e.body.size(), std::memory_order_relaxed) + e.body.size() > max_bytes_) {
    lock.unlock();
    shed();
  }
  return reroute;
}

bool ReplyCache::cancel(uint64_t client, uint64_t request_id, Clock::time_point now,
                        std::vector<Dependent>& released) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  PerClient& c = s.clients[client];
  c.last = now;
  auto [it, inserted] = c.entries.try_emplace(request_id);
  if (!inserted) return false;
  // Done and dropped: no body to count, and nothing for release() to free.
  it->second.done = it->second.dropped = it->second.cancelled = true;
  c.order.emplace_back(request_id, now);
  evict(s, c, now);
  if (c.waiting_count > 0)
    release_waiting(c, request_id, Dependent::On::cancelled, nullptr, released);
  return true;
}

void ReplyCache::forget(uint64_t client) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  auto it = s.clients.find(client);
  if (it == s.clients.end()) return;
  it->second.via = -1;         // attached nowhere now
  it->second.waiting.clear();  // nobody waits for their replies now
  it->second.waiting_count = 0;
  // Finished replies keep their bodies: a broker's word that a client is gone can be wrong (a
  // client that moved to another broker and back, cut off from this one meanwhile; a stall), and
  // such a client resends what it had in flight. They go with age or the byte bound, as others.
  std::erase_if(it->second.entries, [](const auto& e) { return !e.second.done; });
}

void ReplyCache::attach(uint64_t client, unsigned broker, Clock::time_point now) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  PerClient& c = s.clients[client];
  c.last = now;
  c.via = static_cast<int>(broker);
  c.unconfirmed = false;
}

bool ReplyCache::gone_at(uint64_t client, unsigned broker) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  auto it = s.clients.find(client);
  return it == s.clients.end() || it->second.via < 0 || it->second.via == static_cast<int>(broker);
}

size_t ReplyCache::mark_unconfirmed(unsigned broker) {
  size_t n = 0;
  for (Shard& s : shards_) {
    MutexLock lock(s.mu);
    for (auto& [client, c] : s.clients)
      if (c.via == static_cast<int>(broker)) {
        c.unconfirmed = true;
        ++n;
      }
  }
  return n;
}

std::vector<uint64_t> ReplyCache::unconfirmed(unsigned broker) {
  std::vector<uint64_t> out;
  for (Shard& s : shards_) {
    MutexLock lock(s.mu);
    for (auto& [client, c] : s.clients) {
      if (!c.unconfirmed || c.via != static_cast<int>(broker)) continue;
      c.unconfirmed = false;
      out.push_back(client);
    }
  }
  return out;
}

void ReplyCache::sweep(Shard& s, Clock::time_point now) {
  s.since_sweep = 0;
  for (auto it = s.clients.begin(); it != s.clients.end();) {
    // Heard from lately: kept, without a look at its entries (a busy client has thousands, and a
    // sweep comes every 4,096 stores: scanning them was 2% of a server's time under load).
    const bool stale =
        now - it->second.last > max_age_ &&
        std::all_of(it->second.entries.begin(), it->second.entries.end(),
                    [](const auto& entry) { return entry.second.done; });  // none running
    if (!stale) {
      ++it;
      continue;
    }
    for (auto& [rid, e] : it->second.entries) release(s, e);
    it = s.clients.erase(it);
  }
}

void ReplyCache::release(Shard& s, Entry& e) {
  if (!e.done || e.dropped) return;
  e.dropped = true;
  bytes_.fetch_sub(e.body.size(), std::memory_order_relaxed);
  e.body = zmq::message_t();
  --s.bodies;
}

ReplyCache::Entry* ReplyCache::holder(Shard& s, const Stored& r) {
  auto cit = s.clients.find(r.client);
  if (cit == s.clients.end()) return nullptr;
  auto it = cit->second.entries.find(r.request_id);
  if (it == cit->second.entries.end()) return nullptr;
  Entry& e = it->second;
  return e.done && !e.dropped && e.seq == r.seq ? &e : nullptr;
}

void ReplyCache::shed() {
  // Each round looks at every shard's oldest body (dropping the records of bodies gone), then
  // drops the oldest of them, if it is still there. A body always leaves, or a shard's record
  // does, or another lane's shed got there first: rounds are bounded by what is stored.
  for (int round = 0; round < 1'000'000 && bytes_.load(std::memory_order_relaxed) > max_bytes_;
       ++round) {
    Shard* oldest = nullptr;
    uint64_t oldest_seq = 0;
    for (Shard& s : shards_) {
      MutexLock lock(s.mu);
      while (!s.stored.empty() && !holder(s, s.stored.front())) s.stored.pop_front();
      if (s.stored.empty()) continue;
      if (!oldest || s.stored.front().seq < oldest_seq) {
        oldest = &s;
        oldest_seq = s.stored.front().seq;
      }
    }
    if (!oldest) return;  // nothing finished left to drop (what remains is running)
    MutexLock lock(oldest->mu);
    if (oldest->stored.empty() || oldest->stored.front().seq != oldest_seq) continue;
    if (Entry* e = holder(*oldest, oldest->stored.front())) {
      release(*oldest, *e);
      evicted_.fetch_add(1, std::memory_order_relaxed);
    }
    oldest->stored.pop_front();
  }
}

void ReplyCache::evict(Shard& s, PerClient& c, Clock::time_point now) {
  // Oldest first; an entry still running goes to the back (it is bounded by what the client has
  // in flight), and each entry is looked at once per call at most.
  for (size_t n = c.order.size(); n > 0; --n) {
    const auto [rid, when] = c.order.front();
    const bool full = c.order.size() > max_entries_;
    if (!full && now - when < max_age_) return;
    c.order.pop_front();
    auto it = c.entries.find(rid);
    if (it == c.entries.end()) continue;
    if (!it->second.done) {
      c.order.emplace_back(rid, now);
      continue;
    }
    release(s, it->second);
    c.entries.erase(it);
  }
}

}  // namespace patro::detail
