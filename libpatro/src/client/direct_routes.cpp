#include "direct_routes.hpp"

#include <algorithm>

namespace patro::detail {

DirectRoutes::Choice DirectRoutes::choose(uint64_t server, Clock::time_point now,
                                          std::chrono::milliseconds window,
                                          const std::function<bool()>& brokered) {
  Choice c;
  auto [it, fresh] = routes_.try_emplace(server);
  Entry& r = it->second;
  if (fresh || (r.state == State::dead && now >= r.retry_at)) {
    // Ask the broker where the server takes requests (and tell it we talk to that server).
    r.state = State::locating;
    r.since = now;
    next_check_ = std::min(next_check_, now + window);
    c.locate = true;
  }
  if (r.active) {
    c.way = Way::direct;
    return c;
  }
  if (r.state == State::live && !brokered()) {
    r.active = true;
    c.way = Way::direct;
    return c;
  }
  if (!direct_only_) return c;
  // route=direct, and the last try failed: no waiting for the next one.
  c.way = r.state == State::dead ? Way::refuse : Way::hold;
  return c;
}

void DirectRoutes::hold(uint64_t server, Outgoing o) {
  routes_[server].held.push_back(std::move(o));
}

bool DirectRoutes::locating(uint64_t server) const {
  auto it = routes_.find(server);
  return it != routes_.end() && it->second.state == State::locating;
}

std::string DirectRoutes::pick_endpoint(const std::vector<std::string>& endpoints,
                                        uint64_t client_id) {
  std::string endpoint;
  for (size_t i = 0; i < endpoints.size() && endpoint.empty(); ++i)
    endpoint = endpoints[(client_id + i) % endpoints.size()];
  return endpoint;
}

void DirectRoutes::probing(uint64_t server, Clock::time_point now) {
  auto it = routes_.find(server);
  if (it == routes_.end()) return;
  Entry& r = it->second;
  r.state = State::probing;
  r.since = r.last_heard = now;
  r.next_heartbeat = now;  // the probe goes at once
  r.reconnect_after = kFirstReconnect;
  r.reconnect_at = now + kFirstReconnect;
  next_check_ = now;
}

bool DirectRoutes::reconnect_due(uint64_t server, Clock::time_point now) {
  auto it = routes_.find(server);
  if (it == routes_.end() || it->second.state != State::probing) return false;
  Entry& r = it->second;
  if (now < r.reconnect_at) return false;
  r.reconnect_after *= 2;
  r.reconnect_at = now + r.reconnect_after;
  return true;
}

bool DirectRoutes::beat_unsent(uint64_t server, Clock::time_point now) {
  auto it = routes_.find(server);
  if (it == routes_.end()) return false;
  Entry& r = it->second;
  if (r.state == State::live) return true;
  if (r.state != State::probing) return false;
  r.next_heartbeat = now + std::chrono::milliseconds(2);
  next_check_ = std::min(next_check_, r.next_heartbeat);
  return false;
}

DirectRoutes::Heard DirectRoutes::heard(uint64_t server, Clock::time_point now) {
  Heard h;
  auto it = routes_.find(server);
  if (it == routes_.end()) return h;
  h.known = true;
  Entry& r = it->second;
  r.last_heard = now;
  if (r.state != State::probing) return h;
  r.state = State::live;
  r.backoff = std::chrono::milliseconds(0);
  h.up = true;
  if (direct_only_) {
    // Nothing went through the broker: the held requests go now, in their order.
    r.active = true;
    h.ready.swap(r.held);
  }
  return h;
}

DirectRoutes::Tending DirectRoutes::tend(Clock::time_point now, std::chrono::milliseconds window,
                                         std::chrono::milliseconds interval) {
  Tending t;
  if (now < next_check_) return t;
  auto next = Clock::time_point::max();
  for (auto& [server, r] : routes_) {
    switch (r.state) {
      case State::locating:
        if (now - r.since > window) {  // the answer was lost (a broker restart): ask again
          r.since = now;
          t.locate.push_back(server);
        }
        next = std::min(next, r.since + window);
        break;
      case State::probing:
      case State::live:
        if (now - r.last_heard > window) {
          t.failed.emplace_back(server, r.state == State::probing
                                            ? "no answer on its direct endpoint"
                                            : "its direct connection went silent");
          break;
        }
        if (now >= r.next_heartbeat) {
          t.heartbeat.push_back(server);
          r.next_heartbeat = now + interval;
        }
        next = std::min({next, r.next_heartbeat, r.last_heard + window});
        break;
      case State::dead:
        if (!direct_only_ || r.held.empty()) break;
        if (now >= r.retry_at) {
          r.state = State::locating;
          r.since = now;
          t.locate.push_back(server);
          next = std::min(next, now + window);
        }
        next = std::min(next, r.retry_at);
        break;
    }
  }
  next_check_ = next;
  return t;
}

DirectRoutes::Failure DirectRoutes::fail(uint64_t server, Clock::time_point now,
                                         std::chrono::milliseconds interval) {
  Failure f;
  auto it = routes_.find(server);
  if (it == routes_.end()) return f;
  Entry& r = it->second;
  f.known = true;
  f.was_active = r.active;
  r.active = false;
  r.state = State::dead;
  r.backoff = r.backoff.count() == 0 ? interval : std::min(r.backoff * 2, kMaxBackoff);
  r.retry_at = now + r.backoff;
  next_check_ = std::min(next_check_, r.retry_at);
  if (direct_only_) f.held.swap(r.held);
  return f;
}

bool DirectRoutes::forget(uint64_t server) {
  auto it = routes_.find(server);
  if (it == routes_.end() || !it->second.held.empty()) return false;
  routes_.erase(it);
  return true;
}

std::vector<uint64_t> DirectRoutes::not_dead() const {
  std::vector<uint64_t> servers;
  for (const auto& [server, r] : routes_)
    if (r.state != State::dead) servers.push_back(server);
  return servers;
}

std::vector<uint64_t> DirectRoutes::locate_again(Clock::time_point now) {
  std::vector<uint64_t> servers;
  for (auto& [server, r] : routes_) {
    if (r.state != State::locating) continue;
    servers.push_back(server);
    r.since = now;
  }
  return servers;
}

const DirectRoutes::Entry* DirectRoutes::find(uint64_t server) const {
  auto it = routes_.find(server);
  return it == routes_.end() ? nullptr : &it->second;
}

}  // namespace patro::detail
