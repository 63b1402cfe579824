// The classes registered with patro::Class, and the served node of each registered object.
//
// This is the one process-wide registry in Patro. STYLE.md prefers components that main() wires
// together, but DESIGN's API, patro::Class<T>("Name") with no registry argument, registers a class
// for the whole process, as Perl's packages are; so the registry is a function-local static, keyed
// by std::type_index, guarded by its own mutex. Class entries are immutable snapshots replaced on
// each change (copy on write), so a lookup never holds the lock while a method runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <typeindex>
#include <unordered_map>

#include "mutex.hpp"
#include "node.hpp"
#include "patro/object.hpp"

namespace patro::detail {

class ClassRegistry {
 public:
  /// The process-wide registry. Any thread may use it.
  static ClassRegistry& instance();

  void declare(std::type_index type, std::string name) PATRO_EXCLUDES(mu_);
  void change(std::type_index type, const std::function<void(ClassInfo&)>& change)
      PATRO_EXCLUDES(mu_);
  /// The class's entry, or null if it is not registered.
  std::shared_ptr<const ClassInfo> find(std::type_index type) const PATRO_EXCLUDES(mu_);
  /// Counts the changes made: an entry found at generation g is current while this is still g
  /// (what a served node's cached entry is checked against, instead of hashing its type's name).
  uint64_t generation() const noexcept { return generation_.load(std::memory_order_acquire); }
  /// Whether a class is the one registered as name or has it among its bases, through the
  /// bases' own (each name looked at once: a cycle of bases ends).
  bool derives(const ClassInfo& info, std::string_view name) const PATRO_EXCLUDES(mu_);

  /// The served node of an object, the same node every time for the same object, so that its
  /// id (and its lock) stay one. Throws Error(invalid_argument) if the class is not registered.
  std::shared_ptr<Node> node_for(std::shared_ptr<void> object, std::type_index type)
      PATRO_EXCLUDES(mu_);
  /// The node already serving object, or null.
  std::shared_ptr<Node> existing_node(const void* object) const PATRO_EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  std::atomic<uint64_t> generation_{1};  // bumped, after each change, under mu_
  std::unordered_map<std::type_index, std::shared_ptr<const ClassInfo>> classes_
      PATRO_GUARDED_BY(mu_);
  std::unordered_map<const void*, std::weak_ptr<Node>> nodes_ PATRO_GUARDED_BY(mu_);
  size_t sweep_at_ PATRO_GUARDED_BY(mu_) = 1024;
};

}  // namespace patro::detail
