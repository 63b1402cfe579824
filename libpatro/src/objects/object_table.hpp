// The objects a server serves, by id. Top-level objects get ids when served; nested ones when
// a reply first returns a reference to them. Any thread may call it.
#pragma once

#include <memory>
#include <unordered_map>

#include "mutex.hpp"
#include "node.hpp"

namespace patro::detail {

class ObjectTable {
 public:
  explicit ObjectTable(uint64_t server_id) : server_id_(server_id) {}

  uint64_t server_id() const noexcept { return server_id_; }
  /// The id of node, giving it one if it has none.
  ObjectId add(const std::shared_ptr<Node>& node) PATRO_EXCLUDES(mu_);
  /// Adds node under a chosen object id (a served object of a server with a fixed id); throws
  /// Error(internal) if the id is taken.
  ObjectId add(const std::shared_ptr<Node>& node, uint64_t object) PATRO_EXCLUDES(mu_);
  /// The object with this id, or null.
  std::shared_ptr<Node> find(const ObjectId& id) const PATRO_EXCLUDES(mu_);
  size_t size() const PATRO_EXCLUDES(mu_);

 private:
  const uint64_t server_id_;
  mutable Mutex mu_;
  // TODO(cleanup): objects handed out as references stay alive for the server's life; a lease or
  // distributed reference count (as Java RMI's DGC) would let them go.
  std::unordered_map<uint64_t, std::shared_ptr<Node>> by_id_ PATRO_GUARDED_BY(mu_);
  std::unordered_map<const Node*, uint64_t> by_node_ PATRO_GUARDED_BY(mu_);
};

}  // namespace patro::detail
