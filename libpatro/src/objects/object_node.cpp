#include "object_node.hpp"

#include "class_registry.hpp"
#include "served_ops.hpp"

namespace patro::detail {

std::shared_ptr<const ClassInfo> ObjectNode::registered() const {
  const ClassRegistry& registry = ClassRegistry::instance();
  // Read before the lookup: an entry found after it is at least as new, so the pair never
  // claims a generation newer than its entry.
  const uint64_t generation = registry.generation();
  {
    MutexLock lock(info_mu_);
    if (info_generation_ == generation) return info_;
  }
  auto c = registry.find(type);
  MutexLock lock(info_mu_);
  info_ = c;
  info_generation_ = generation;
  return c;
}

std::shared_ptr<const ClassInfo> ObjectNode::info() const {
  auto c = registered();
  if (!c) throw Error(Errc::internal, "a served object's class is not registered");
  return c;
}

std::string ObjectNode::type_name() const {
  auto c = registered();
  return c ? c->name : std::string("OBJECT");
}

namespace {
const ClassInfo::Property& property_of(const ClassInfo& c, const PathElem& e) {
  const auto* name = std::get_if<std::string>(&e);
  if (!name)
    throw Error(Errc::type_mismatch, "cannot use index " + std::to_string(std::get<int64_t>(e)) +
                                         " on a " + c.name + " object; use a property name");
  auto it = c.properties.find(*name);
  if (it == c.properties.end())
    throw Error(Errc::not_found, "class " + c.name + " has no property '" + *name + "'");
  return it->second;
}
}  // namespace

Value object_property(ObjectNode& n, const PathElem& e) {
  auto c = n.info();
  const auto& prop = property_of(*c, e);
  try {
    return prop.get(n.object.get());
  } catch (...) {
    throw_served_exception(c->name + "::" + std::get<std::string>(e));
  }
}

void set_object_property(ObjectNode& n, const PathElem& e, const Value& v) {
  auto c = n.info();
  const auto& prop = property_of(*c, e);
  if (!prop.set)
    throw Error(Errc::unsupported, "property '" + std::get<std::string>(e) + "' of class " +
                                       c->name + " is read-only");
  try {
    prop.set(n.object.get(), v);
  } catch (const Error& err) {
    if (err.code() != Errc::type_mismatch) throw;
    throw Error(Errc::type_mismatch, c->name + "::" + std::get<std::string>(e) +
                                         ": cannot set it to " + type_name(v.type()) + " " +
                                         v.to_string().substr(0, 40) + " (" + err.what() + ")");
  } catch (...) {
    throw_served_exception(c->name + "::" + std::get<std::string>(e));
  }
}

std::shared_ptr<void> object_pointer(const Value& v, const std::type_info& type) {
  auto node = node_of(v);
  if (!node || node->kind != NodeKind::object) return nullptr;
  auto& obj = node_cast<ObjectNode>(*node);
  if (obj.type != std::type_index(type)) return nullptr;
  return obj.object;
}

Value node_value(const std::shared_ptr<Node>& node) {
  return reference_to(node);
}

}  // namespace patro::detail
