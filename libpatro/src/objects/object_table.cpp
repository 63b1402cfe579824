#include "object_table.hpp"

#include "ids.hpp"

namespace patro::detail {

ObjectId ObjectTable::add(const std::shared_ptr<Node>& node) {
  MutexLock lock(mu_);
  auto it = by_node_.find(node.get());
  if (it != by_node_.end()) return ObjectId{server_id_, it->second};
  uint64_t id = random_id();
  while (by_id_.count(id)) id = random_id();
  by_id_.emplace(id, node);
  by_node_.emplace(node.get(), id);
  return ObjectId{server_id_, id};
}

ObjectId ObjectTable::add(const std::shared_ptr<Node>& node, uint64_t object) {
  MutexLock lock(mu_);
  auto it = by_node_.find(node.get());
  if (it != by_node_.end()) return ObjectId{server_id_, it->second};
  if (!by_id_.emplace(object, node).second) throw Error(Errc::internal, "object id taken");
  by_node_.emplace(node.get(), object);
  return ObjectId{server_id_, object};
}

std::shared_ptr<Node> ObjectTable::find(const ObjectId& id) const {
  if (id.server != server_id_) return nullptr;
  MutexLock lock(mu_);
  auto it = by_id_.find(id.object);
  return it == by_id_.end() ? nullptr : it->second;
}

size_t ObjectTable::size() const {
  MutexLock lock(mu_);
  return by_id_.size();
}

}  // namespace patro::detail
