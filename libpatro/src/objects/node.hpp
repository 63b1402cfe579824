// Served objects as the server holds them. Every node has its own mutex; an operation on a node
// holds it for the whole operation, so concurrent clients never corrupt a container or lose an
// update. Functions marked REQUIRES(n.mu) must be called with that mutex held.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "assert.hpp"
#include "mutex.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"
#include "wire.hpp"

namespace patro::detail {

// object, code, file and dir are served objects (object_node.hpp, code_node.hpp,
// filehandle_node.hpp); their operations are in served_ops.cpp.
enum class NodeKind { hash, array, scalar, object, code, file, dir };

class PATRO_PRIVATE Node {
 public:
  explicit Node(NodeKind kind) : kind(kind) {}
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  /// Perl's ref() of the object: a class name, or the basic type.
  virtual std::string type_name() const { return reftype(); }
  /// Perl's reftype(): HASH, ARRAY, SCALAR, ...
  const char* reftype() const;

  const NodeKind kind;
  mutable Mutex mu;
};

class HashNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::hash;
  HashNode() : Node(NodeKind::hash) {}
  ValueHash items PATRO_GUARDED_BY(mu);
};

class ArrayNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::array;
  ArrayNode() : Node(NodeKind::array) {}
  std::deque<Value> items PATRO_GUARDED_BY(mu);
};

class ScalarNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::scalar;
  ScalarNode() : Node(NodeKind::scalar) {}
  Value value PATRO_GUARDED_BY(mu);
};

/// The node as its kind's class: the caller has checked n.kind (a mismatch is our bug).
template <class T>
T& node_cast(Node& n) {
  PATRO_ASSERT(n.kind == T::node_kind, "downcast of a node to another kind");
  return static_cast<T&>(n);
}
template <class T>
const T& node_cast(const Node& n) {
  PATRO_ASSERT(n.kind == T::node_kind, "downcast of a node to another kind");
  return static_cast<const T&>(n);
}

/// What a value becomes when stored in a served container: copied arrays and hashes become served
/// containers (Perl's [...] and {...} make references); everything else is stored as it is.
Value stored_form(Value v);

/// A deep copy of v: references to hash and array nodes become copied ValueHash / ValueArray
/// (recursively, each node read under its own mutex); with copy_scalars, a scalar node becomes a
/// new scalar node holding a deep copy of its value. Other references (objects, code, file
/// handles, remote references) are kept as they are, or, with refuse_objects, refused with
/// Errc::invalid_argument (a client cannot serve a callback). Deeper than kMaxCopyDepth (or a
/// container that contains itself): Errc::invalid_argument. More than max_values values in all:
/// Errc::message_too_large.
Value deep_copy(const Value& v, bool copy_scalars, bool refuse_objects, size_t max_values);
// (kMaxCopyDepth is in wire.hpp: the client's copies of local values share it.)

/// A reference Value to a local node.
Value reference_to(const std::shared_ptr<Node>& node);
/// The local node a Value refers to, or null.
std::shared_ptr<Node> node_of(const Value& v);

// Array semantics shared by the local API and the remote operations (Perl's).
/// Normalizes a possibly negative index; nullopt when it is before the start.
std::optional<size_t> array_index(int64_t index, size_t size);
Value array_get(const ArrayNode& a, int64_t index) PATRO_REQUIRES(a.mu);
/// Extends with nulls past the end (up to limits.max_array_extend); an index before the start is
/// Errc::index_out_of_range, as Perl's "Modification of non-creatable array value attempted".
void array_set(ArrayNode& a, int64_t index, Value v, const Limits& limits) PATRO_REQUIRES(a.mu);
/// Perl's delete $a[i]: the element becomes null, and trailing nulls at the end are removed.
Value array_erase(ArrayNode& a, int64_t index) PATRO_REQUIRES(a.mu);
/// Perl's splice. length nullopt: to the end.
ValueArray array_splice(ArrayNode& a, int64_t offset, std::optional<int64_t> length,
                        ValueArray replacement) PATRO_REQUIRES(a.mu);
void array_resize(ArrayNode& a, int64_t size, const Limits& limits) PATRO_REQUIRES(a.mu);

/// current + delta for numbers (null counts as 0); Errc::type_mismatch otherwise.
Value numeric_add(const Value& current, const Value& delta);

}  // namespace patro::detail
