#include "reply_cache.hpp"

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
    evict(c, now);
    return Seen::fresh;
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  if (!it->second.done) {
    it->second.reroute.assign(routing.data(), routing.size());
    return Seen::running;
  }
  cached->copy(it->second.body);
  return Seen::answered;
}

std::optional<std::string> ReplyCache::finish(uint64_t client, uint64_t request_id,
                                              const zmq::message_t& body) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  auto cit = s.clients.find(client);
  if (cit == s.clients.end()) return std::nullopt;  // forgotten: the client is gone
  auto it = cit->second.entries.find(request_id);
  if (it == cit->second.entries.end() || it->second.done) return std::nullopt;
  it->second.done = true;
  it->second.body.copy(const_cast<zmq::message_t&>(body));
  if (it->second.reroute.empty()) return std::nullopt;
  return std::move(it->second.reroute);
}

void ReplyCache::forget(uint64_t client) {
  Shard& s = shard(client);
  MutexLock lock(s.mu);
  auto it = s.clients.find(client);
  if (it == s.clients.end()) return;
  it->second.via = -1;  // attached nowhere now
  auto& entries = it->second.entries;
  for (auto e = entries.begin(); e != entries.end();)
    e = e->second.done ? std::next(e) : entries.erase(e);
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
    bool stale = now - it->second.last > max_age_;
    for (const auto& [rid, e] : it->second.entries) stale = stale && e.done;  // none running
    it = stale ? s.clients.erase(it) : std::next(it);
  }
}

void ReplyCache::evict(PerClient& c, Clock::time_point now) {
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
    c.entries.erase(it);
  }
}

}  // namespace patro::detail
