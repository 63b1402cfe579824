// A served object of a class registered with patro::Class: the object (type-erased), its type,
// and what the executor needs to read and write its properties. Its methods and operators run in
// served_ops.cpp with the node's mutex held.
#pragma once

#include <memory>
#include <typeindex>

#include "mutex.hpp"
#include "node.hpp"
#include "patro/object.hpp"

namespace patro::detail {

class ObjectNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::object;
  ObjectNode(std::shared_ptr<void> object, std::type_index type)
      : Node(NodeKind::object), object(std::move(object)), type(type) {}
  /// The registered class name.
  std::string type_name() const override;
  /// The class's registration (never null for a node made by the registry).
  std::shared_ptr<const ClassInfo> info() const;

  const std::shared_ptr<void> object;  // used only with mu held
  const std::type_index type;

 private:
  /// The registry's entry for type, or null: kept from the last lookup while the registry has
  /// not changed since (each call and each reference to the object reads it).
  std::shared_ptr<const ClassInfo> registered() const PATRO_EXCLUDES(info_mu_);

  mutable Mutex info_mu_;
  mutable uint64_t info_generation_ PATRO_GUARDED_BY(info_mu_) = 0;  // 0: not looked up
  mutable std::shared_ptr<const ClassInfo> info_ PATRO_GUARDED_BY(info_mu_);
};

/// A property of an object, for a path step (p["x"]).
Value object_property(ObjectNode& n, const PathElem& e) PATRO_REQUIRES(n.mu);
void set_object_property(ObjectNode& n, const PathElem& e, const Value& v) PATRO_REQUIRES(n.mu);

}  // namespace patro::detail
