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
//
// A client's callback host serves its objects the same way, counted per pass instead of per
// reply: each reference to one that the client writes into a request is a pass, counted under the
// table's pass key (a random number that stands where a client id would, known only to the
// receivers of passes), and a receiver lets go of it with Release [count, pass key]. The object
// goes once every pass is released (and the lease ran out), however the passes and releases
// interleave.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <unordered_map>
#include <unordered_set>

#include "mutex.hpp"
#include "node.hpp"

namespace patro::detail {

class ObjectTable {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ObjectTable(uint64_t server_id,
                       std::chrono::milliseconds lease = std::chrono::seconds(30));

  uint64_t server_id() const noexcept { return server_id_; }
  /// The id of a pinned node (a served root, or an object a lock names), giving it one if it has
  /// none; pins it if it was exported.
  ObjectId pin(const std::shared_ptr<Node>& node) PATRO_EXCLUDES(mu_);
  /// The same, under a chosen object id (a served object of a server with a fixed id); throws
  /// Error(internal) if the id is taken.
  ObjectId pin(const std::shared_ptr<Node>& node, uint64_t object) PATRO_EXCLUDES(mu_);
  /// The id of node as a reply sends a reference to it to `client`, giving it one if it has none;
  /// counts the reference. Client 0 (a raw peer, which never releases) pins it.
  /// granted: the client's key is limited to some names (rights per key), so a pinned object sent
  /// to it is remembered too (held_by), until the client is gone.
  ObjectId export_to(const std::shared_ptr<Node>& node, uint64_t client, bool granted = false)
      PATRO_EXCLUDES(mu_);
  /// `client` dropped `count` of the references to object it was sent (more than it holds: what
  /// it holds). An unknown object or client is ignored: a release may come late or twice.
  void release(uint64_t object, uint64_t client, uint64_t count) PATRO_EXCLUDES(mu_);

  // Callback objects (a client's callback host): served unpinned, counted per pass.
  /// The id of node, giving it one if it has none, neither pinned nor counted: it lives until a
  /// pass of it was counted and every pass released. An idle one is kept from collection until
  /// then.
  ObjectId serve(const std::shared_ptr<Node>& node) PATRO_EXCLUDES(mu_);
  /// Counts one pass of object (a reference to it written into a request) and returns the key
  /// its receiver releases it with; 0 (nothing counted) for an object that is pinned or unknown.
  uint64_t count_pass(uint64_t object) PATRO_EXCLUDES(mu_);
  /// A receiver of `count` passes of object let go of them; a key other than this table's is
  /// ignored, as release does with an unknown client.
  void release_pass(uint64_t object, uint64_t key, uint64_t count) PATRO_EXCLUDES(mu_);
  /// `client` is gone: every reference it held is dropped.
  void drop_client(uint64_t client) PATRO_EXCLUDES(mu_);
  /// Frees the exported objects nobody has held for the lease; returns how many.
  size_t collect(Clock::time_point now) PATRO_EXCLUDES(mu_);

  /// Whether `client` holds a reference to object that a reply sent it (and it has not released),
  /// or was sent a pinned one with `granted`.
  bool held_by(uint64_t client, uint64_t object) const PATRO_EXCLUDES(mu_);
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
  const uint64_t pass_key_;  // by_client_'s key for passes
  mutable Mutex mu_;
  std::unordered_map<uint64_t, Entry> by_id_ PATRO_GUARDED_BY(mu_);
  std::unordered_map<const Node*, uint64_t> by_node_ PATRO_GUARDED_BY(mu_);
  // Per client: the references it holds, by object.
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, uint64_t>> by_client_
      PATRO_GUARDED_BY(mu_);
  // Per client: the pinned objects sent to it with `granted` (export_to).
  std::unordered_map<uint64_t, std::unordered_set<uint64_t>> granted_ PATRO_GUARDED_BY(mu_);
  // Objects whose last reference went, oldest first (an entry held again since is skipped).
  std::deque<std::pair<uint64_t, Clock::time_point>> idle_ PATRO_GUARDED_BY(mu_);
};

}  // namespace patro::detail
