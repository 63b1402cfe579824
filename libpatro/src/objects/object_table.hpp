// The objects a server serves, by id, and how long each lives. Top-level objects get ids when
// served and are pinned: never collected. Nested and returned ones get ids when a reply first
// sends a reference to them, and are exported: the table counts, per client, the references it
// sent, and a client's proxy tells it when the client's last copy of one is gone (wire op
// Release, batched and oneway). An exported object that no client holds a reference to any more
// is freed once it has stayed so for the lease (ServerOptions::reference_lease), so a reference
// in flight when the last one was released is still good. A client that is gone (its broker says
// so, or the server's own watch) drops every reference it held. What is freed is only the
// table's hold: an object still reachable from a served root lives on, and gets a new id if it
// is sent again. Any thread may call it.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <unordered_map>

#include "mutex.hpp"
#include "node.hpp"

namespace patro::detail {

class ObjectTable {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ObjectTable(uint64_t server_id,
                       std::chrono::milliseconds lease = std::chrono::seconds(30))
      : server_id_(server_id), lease_(lease) {}

  uint64_t server_id() const noexcept { return server_id_; }
  /// The id of a pinned node (a served root, or an object a lock names), giving it one if it has
  /// none; pins it if it was exported.
  ObjectId pin(const std::shared_ptr<Node>& node) PATRO_EXCLUDES(mu_);
  /// The same, under a chosen object id (a served object of a server with a fixed id); throws
  /// Error(internal) if the id is taken.
  ObjectId pin(const std::shared_ptr<Node>& node, uint64_t object) PATRO_EXCLUDES(mu_);
  /// The id of node as a reply sends a reference to it to `client`, giving it one if it has none;
  /// counts the reference. Client 0 (a raw peer, which never releases) pins it.
  ObjectId export_to(const std::shared_ptr<Node>& node, uint64_t client) PATRO_EXCLUDES(mu_);
  /// `client` dropped `count` of the references to object it was sent (more than it holds: what
  /// it holds). An unknown object or client is ignored: a release may come late or twice.
  void release(uint64_t object, uint64_t client, uint64_t count) PATRO_EXCLUDES(mu_);
  /// `client` is gone: every reference it held is dropped.
  void drop_client(uint64_t client) PATRO_EXCLUDES(mu_);
  /// Frees the exported objects nobody has held for the lease; returns how many.
  size_t collect(Clock::time_point now) PATRO_EXCLUDES(mu_);

  /// The object with this id, or null.
  std::shared_ptr<Node> find(const ObjectId& id) const PATRO_EXCLUDES(mu_);
  size_t size() const PATRO_EXCLUDES(mu_);

 private:
  struct Entry {
    std::shared_ptr<Node> node;
    bool pinned = false;
    uint64_t held = 0;  // references held by clients (the sum over by_client_)
    Clock::time_point idle_since;
  };
  ObjectId add(const std::shared_ptr<Node>& node, uint64_t object, bool pinned) PATRO_REQUIRES(mu_);
  /// The entry's references dropped by `count`; queues it for collection when none are left.
  void drop(uint64_t object, Entry& e, uint64_t count, Clock::time_point now) PATRO_REQUIRES(mu_);

  const uint64_t server_id_;
  const std::chrono::milliseconds lease_;
  mutable Mutex mu_;
  std::unordered_map<uint64_t, Entry> by_id_ PATRO_GUARDED_BY(mu_);
  std::unordered_map<const Node*, uint64_t> by_node_ PATRO_GUARDED_BY(mu_);
  // Per client: the references it holds, by object.
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, uint64_t>> by_client_
      PATRO_GUARDED_BY(mu_);
  // Objects whose last reference went, oldest first (an entry held again since is skipped).
  std::deque<std::pair<uint64_t, Clock::time_point>> idle_ PATRO_GUARDED_BY(mu_);
};

}  // namespace patro::detail
