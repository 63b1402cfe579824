#include "class_registry.hpp"

#include <algorithm>
#include <array>
#include <set>

#include "object_node.hpp"

namespace patro::detail {

ClassRegistry& ClassRegistry::instance() {
  static ClassRegistry registry;
  return registry;
}

void ClassRegistry::declare(std::type_index type, std::string name) {
  change(type, [&](ClassInfo& c) { c.name = std::move(name); });
}

void ClassRegistry::change(std::type_index type, const std::function<void(ClassInfo&)>& change) {
  MutexLock lock(mu_);
  auto it = classes_.find(type);
  auto fresh = it == classes_.end() ? std::make_shared<ClassInfo>()
                                    : std::make_shared<ClassInfo>(*it->second);
  change(*fresh);
  classes_.insert_or_assign(type, std::move(fresh));
  generation_.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<const ClassInfo> ClassRegistry::find(std::type_index type) const {
  MutexLock lock(mu_);
  auto it = classes_.find(type);
  return it == classes_.end() ? nullptr : it->second;
}

bool ClassRegistry::derives(const ClassInfo& info, std::string_view name) const {
  if (info.name == name) return true;
  std::vector<std::string> todo(info.bases.begin(), info.bases.end());
  std::set<std::string, std::less<>> seen{info.name};
  MutexLock lock(mu_);
  while (!todo.empty()) {
    std::string next = std::move(todo.back());
    todo.pop_back();
    if (next == name) return true;
    if (!seen.insert(next).second) continue;
    for (const auto& [type, c] : classes_)
      if (c->name == next) todo.insert(todo.end(), c->bases.begin(), c->bases.end());
  }
  return false;
}

std::shared_ptr<Node> ClassRegistry::node_for(std::shared_ptr<void> object, std::type_index type) {
  if (!object) throw Error(Errc::invalid_argument, "cannot serve a null object pointer");
  MutexLock lock(mu_);
  auto cls = classes_.find(type);
  if (cls == classes_.end())
    throw Error(Errc::invalid_argument, std::string("cannot serve an object of class ") +
                                            type.name() +
                                            ": register it first with patro::Class<T>(\"Name\")");
  const void* key = object.get();
  auto it = nodes_.find(key);
  if (it != nodes_.end()) {
    if (auto node = it->second.lock()) {
      if (node_cast<ObjectNode>(*node).type == type) return node;
    }
  }
  auto node = std::make_shared<ObjectNode>(std::move(object), type);
  nodes_.insert_or_assign(key, node);
  if (nodes_.size() >= sweep_at_) {  // forget the nodes of objects that are gone
    std::erase_if(nodes_, [](const auto& kv) { return kv.second.expired(); });
    sweep_at_ = std::max<size_t>(1024, nodes_.size() * 2);
  }
  return node;
}

std::shared_ptr<Node> ClassRegistry::existing_node(const void* object) const {
  MutexLock lock(mu_);
  auto it = nodes_.find(object);
  return it == nodes_.end() ? nullptr : it->second.lock();
}

void run_locked(const void* object, const std::function<void()>& f) {
  auto node = ClassRegistry::instance().existing_node(object);
  if (!node) return f();
  MutexLock lock(node->mu);
  f();
}

void register_class(const std::type_info& type, std::string name) {
  if (name.empty()) throw Error(Errc::invalid_argument, "a served class needs a name");
  ClassRegistry::instance().declare(type, std::move(name));
}

void change_class(const std::type_info& type, const std::function<void(ClassInfo&)>& change) {
  ClassRegistry::instance().change(type, change);
}

bool known_operator(std::string_view symbol) noexcept {
  static constexpr std::array<std::string_view, 27> kOps = {
      "+", "-",  "*", "/",  "%",   "**",  "+=", "-=",   "*=", "/=",   "%=", "**=", "==", "!=",
      "<", "<=", ">", ">=", "<=>", "neg", "!",  "\"\"", "0+", "bool", "eq", "ne",  "cmp"};
  return std::find(kOps.begin(), kOps.end(), symbol) != kOps.end();
}

Value object_reference(std::shared_ptr<void> object, const std::type_info& type) {
  return reference_to(ClassRegistry::instance().node_for(std::move(object), type));
}

}  // namespace patro::detail
