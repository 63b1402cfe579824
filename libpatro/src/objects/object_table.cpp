#include "object_table.hpp"

#include <algorithm>
#include <vector>

#include "ids.hpp"
#include "patro/error.hpp"

namespace patro::detail {

ObjectTable::ObjectTable(uint64_t server_id, std::chrono::milliseconds lease)
    : server_id_(server_id), lease_(lease), pass_key_(random_id()) {}

ObjectId ObjectTable::add(const std::shared_ptr<Node>& node, uint64_t object, bool pinned) {
  auto it = by_node_.find(node.get());
  if (it != by_node_.end()) {
    Entry& e = by_id_.at(it->second);
    e.pinned = e.pinned || pinned;
    // Sent again while idle: its place in the collection queue no longer stands for it (collect
    // skips an entry whose idle_since changed), so it outlives the lease until a reference to it
    // is counted and released again.
    e.idle_since = Clock::time_point{};
    return ObjectId{server_id_, it->second};
  }
  if (object == 0) {
    object = random_id();
    while (by_id_.count(object)) object = random_id();
  }
  if (!by_id_.emplace(object, Entry{node, pinned, 0, Clock::time_point{}}).second)
    throw Error(Errc::internal, "object id taken");
  by_node_.emplace(node.get(), object);
  return ObjectId{server_id_, object};
}

ObjectId ObjectTable::pin(const std::shared_ptr<Node>& node) {
  MutexLock lock(mu_);
  return add(node, 0, true);
}

ObjectId ObjectTable::pin(const std::shared_ptr<Node>& node, uint64_t object) {
  MutexLock lock(mu_);
  return add(node, object, true);
}

ObjectId ObjectTable::export_to(const std::shared_ptr<Node>& node, uint64_t client, bool granted) {
  MutexLock lock(mu_);
  const ObjectId id = add(node, 0, client == 0);
  Entry& e = by_id_.at(id.object);
  if (!e.pinned) {
    ++e.held;
    ++by_client_[client][id.object];
  } else if (granted && client != 0) {
    granted_[client].insert(id.object);
  }
  return id;
}

ObjectId ObjectTable::serve(const std::shared_ptr<Node>& node) {
  MutexLock lock(mu_);
  return add(node, 0, false);
}

uint64_t ObjectTable::count_pass(uint64_t object) {
  MutexLock lock(mu_);
  auto e = by_id_.find(object);
  if (e == by_id_.end() || e->second.pinned) return 0;
  ++e->second.held;
  ++by_client_[pass_key_][object];
  return pass_key_;
}

void ObjectTable::release_pass(uint64_t object, uint64_t key, uint64_t count) {
  if (key == pass_key_) release(object, pass_key_, count);
}

void ObjectTable::drop(uint64_t object, Entry& e, uint64_t count, Clock::time_point now) {
  e.held -= std::min(e.held, count);
  if (e.held == 0 && !e.pinned) {
    e.idle_since = now;
    idle_.emplace_back(object, now);
  }
}

void ObjectTable::release(uint64_t object, uint64_t client, uint64_t count) {
  const auto now = Clock::now();
  MutexLock lock(mu_);
  auto c = by_client_.find(client);
  if (c == by_client_.end()) return;
  auto held = c->second.find(object);
  if (held == c->second.end()) return;
  const uint64_t n = std::min(held->second, count);
  held->second -= n;
  if (held->second == 0) c->second.erase(held);
  if (c->second.empty()) by_client_.erase(c);
  if (auto e = by_id_.find(object); e != by_id_.end()) drop(object, e->second, n, now);
}

void ObjectTable::drop_client(uint64_t client) {
  const auto now = Clock::now();
  MutexLock lock(mu_);
  granted_.erase(client);
  auto c = by_client_.find(client);
  if (c == by_client_.end()) return;
  for (const auto& [object, n] : c->second)
    if (auto e = by_id_.find(object); e != by_id_.end()) drop(object, e->second, n, now);
  by_client_.erase(c);
}

size_t ObjectTable::collect(Clock::time_point now) {
  std::vector<std::shared_ptr<Node>> freed;  // destroyed after the lock is let go
  {
    MutexLock lock(mu_);
    while (!idle_.empty() && idle_.front().second + lease_ <= now) {
      const auto [object, since] = idle_.front();
      idle_.pop_front();
      auto e = by_id_.find(object);
      // Held again, pinned, or idle again since (a later entry of the queue stands for it).
      if (e == by_id_.end() || e->second.pinned || e->second.held != 0 ||
          e->second.idle_since != since)
        continue;
      by_node_.erase(e->second.node.get());
      freed.push_back(std::move(e->second.node));
      by_id_.erase(e);
    }
  }
  return freed.size();
}

std::shared_ptr<Node> ObjectTable::find(const ObjectId& id) const {
  if (id.server != server_id_) return nullptr;
  MutexLock lock(mu_);
  auto it = by_id_.find(id.object);
  return it == by_id_.end() ? nullptr : it->second.node;
}

bool ObjectTable::held_by(uint64_t client, uint64_t object) const {
  MutexLock lock(mu_);
  auto it = by_client_.find(client);
  if (it != by_client_.end() && it->second.count(object) != 0) return true;
  auto g = granted_.find(client);
  return g != granted_.end() && g->second.count(object) != 0;
}

size_t ObjectTable::size() const {
  MutexLock lock(mu_);
  return by_id_.size();
}

}  // namespace patro::detail
