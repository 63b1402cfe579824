#include "patro/containers.hpp"

#include <limits>

#include "node.hpp"

namespace patro {
namespace detail {

const char* Node::reftype() const {
  switch (kind) {
    case NodeKind::hash:
      return "HASH";
    case NodeKind::array:
      return "ARRAY";
    case NodeKind::scalar:
      return "SCALAR";
    case NodeKind::object:
      return "OBJECT";
    case NodeKind::code:
      return "CODE";
    case NodeKind::file:
    case NodeKind::dir:
      return "GLOB";
  }
  return "?";
}

Value reference_to(const std::shared_ptr<Node>& node) {
  return Value(Reference{node, {}, {}, {}, node->type_name(), node->reftype(), {}, false});
}

std::shared_ptr<Node> node_of(const Value& v) {
  const Reference* r = v.if_reference();
  return r ? r->node : nullptr;
}

Value stored_form(Value v) {
  if (const ValueArray* a = v.if_array()) {
    auto node = std::make_shared<ArrayNode>();
    MutexLock lock(node->mu);
    for (const Value& e : *a) node->items.push_back(stored_form(e));
    lock.unlock();
    return reference_to(node);
  }
  if (const ValueHash* h = v.if_hash()) {
    auto node = std::make_shared<HashNode>();
    MutexLock lock(node->mu);
    for (const auto& [k, e] : *h) node->items.emplace(k, stored_form(e));
    lock.unlock();
    return reference_to(node);
  }
  return v;
}

namespace {
struct Copier {
  bool copy_scalars;
  bool refuse_objects;
  size_t max_values;
  size_t values = 0;

  Value copy(const Value& v, unsigned depth) {
    if (++values > max_values)
      throw Error(Errc::message_too_large,
                  "the copy holds more than " + std::to_string(max_values) + " values");
    if (depth > kMaxCopyDepth)
      throw Error(Errc::invalid_argument, "cannot copy a structure nested deeper than " +
                                              std::to_string(kMaxCopyDepth) +
                                              " levels (or one that contains itself)");
    if (const ValueArray* a = v.if_array()) {
      ValueArray out;
      out.reserve(a->size());
      for (const Value& e : *a) out.push_back(copy(e, depth + 1));
      return Value(std::move(out));
    }
    if (const ValueHash* h = v.if_hash()) {
      ValueHash out;
      for (const auto& [k, e] : *h) out.emplace_hint(out.end(), k, copy(e, depth + 1));
      return Value(std::move(out));
    }
    const Reference* r = v.if_reference();
    if (r == nullptr || !r->node) return v;
    // Each node's items are copied under its own mutex, then copied deeper without it: no two
    // node mutexes are ever held together.
    switch (r->node->kind) {
      case NodeKind::array: {
        auto& n = node_cast<ArrayNode>(*r->node);
        MutexLock lock(n.mu);
        ValueArray items(n.items.begin(), n.items.end());
        lock.unlock();
        return copy(Value(std::move(items)), depth);
      }
      case NodeKind::hash: {
        auto& n = node_cast<HashNode>(*r->node);
        MutexLock lock(n.mu);
        ValueHash items = n.items;
        lock.unlock();
        return copy(Value(std::move(items)), depth);
      }
      case NodeKind::scalar: {
        if (!copy_scalars) return v;
        auto& n = node_cast<ScalarNode>(*r->node);
        MutexLock lock(n.mu);
        Value inner = n.value;
        lock.unlock();
        auto fresh = std::make_shared<ScalarNode>();
        Value copied = copy(inner, depth + 1);
        MutexLock fresh_lock(fresh->mu);
        fresh->value = std::move(copied);
        fresh_lock.unlock();
        return reference_to(fresh);
      }
      default:
        if (refuse_objects)
          throw Error(Errc::invalid_argument,
                      "cannot send a local object (" + r->node->type_name() +
                          ") to a server: only arrays, hashes and scalars are copied; serve it "
                          "with patronize() and pass its proxy");
        return v;
    }
  }
};
}  // namespace

Value deep_copy(const Value& v, bool copy_scalars, bool refuse_objects, size_t max_values) {
  Copier c{copy_scalars, refuse_objects, max_values};
  return c.copy(v, 0);
}

std::optional<size_t> array_index(int64_t index, size_t size) {
  if (index < 0) index += static_cast<int64_t>(size);
  if (index < 0) return std::nullopt;
  return static_cast<size_t>(index);
}

Value array_get(const ArrayNode& a, int64_t index) {
  auto i = array_index(index, a.items.size());
  if (!i || *i >= a.items.size()) return Value();
  return a.items[*i];
}

void array_set(ArrayNode& a, int64_t index, Value v, const Limits& limits) {
  auto i = array_index(index, a.items.size());
  if (!i)
    throw Error(Errc::index_out_of_range,
                "modification of non-creatable array value attempted, subscript " +
                    std::to_string(index) + " of an array of " + std::to_string(a.items.size()));
  if (*i >= a.items.size()) {
    if (static_cast<int64_t>(*i) >= limits.max_array_extend)
      throw Error(Errc::index_out_of_range,
                  "index " + std::to_string(index) + " is past the server's limit of " +
                      std::to_string(limits.max_array_extend) + " elements");
    a.items.resize(*i + 1);
  }
  a.items[*i] = stored_form(std::move(v));
}

Value array_erase(ArrayNode& a, int64_t index) {
  auto i = array_index(index, a.items.size());
  if (!i || *i >= a.items.size()) return Value();
  Value old = std::move(a.items[*i]);
  a.items[*i] = Value();
  if (*i + 1 == a.items.size())
    while (!a.items.empty() && a.items.back().is_null()) a.items.pop_back();
  return old;
}

ValueArray array_splice(ArrayNode& a, int64_t offset, std::optional<int64_t> length,
                        ValueArray replacement) {
  const int64_t size = static_cast<int64_t>(a.items.size());
  if (offset < 0) offset += size;
  if (offset < 0)
    throw Error(Errc::index_out_of_range, "splice offset " + std::to_string(offset - size) +
                                              " is before the start of an array of " +
                                              std::to_string(size));
  if (offset > size) offset = size;  // Perl warns "splice() offset past end of array"
  int64_t len;
  if (!length) {
    len = size - offset;
  } else if (*length < 0) {
    len = std::max<int64_t>(size - offset + *length, 0);
  } else {
    len = std::min<int64_t>(*length, size - offset);
  }
  auto first = a.items.begin() + offset;
  ValueArray removed(std::make_move_iterator(first), std::make_move_iterator(first + len));
  first = a.items.erase(first, first + len);
  for (auto& v : replacement) v = stored_form(std::move(v));
  a.items.insert(first, std::make_move_iterator(replacement.begin()),
                 std::make_move_iterator(replacement.end()));
  return removed;
}

void array_resize(ArrayNode& a, int64_t size, const Limits& limits) {
  if (size < 0) size = 0;
  if (size > limits.max_array_extend)
    throw Error(Errc::index_out_of_range, "size " + std::to_string(size) +
                                              " is past the server's limit of " +
                                              std::to_string(limits.max_array_extend));
  a.items.resize(static_cast<size_t>(size));
}

Value numeric_add(const Value& current, const Value& delta) {
  const Value& cur = current;
  if (!cur.is_null() && cur.type() != Type::integer && cur.type() != Type::number)
    cur.throw_mismatch("a number to add to");
  if (delta.type() != Type::integer && delta.type() != Type::number)
    delta.throw_mismatch("a number to add");
  if ((cur.is_null() || cur.type() == Type::integer) && delta.type() == Type::integer) {
    const int64_t a = cur.is_null() ? 0 : *cur.if_int();
    int64_t r;
    if (!__builtin_add_overflow(a, *delta.if_int(), &r)) return Value(r);
    return Value(static_cast<double>(a) + static_cast<double>(*delta.if_int()));
  }
  const double a = cur.is_null() ? 0.0 : cur.as<double>();
  return Value(a + delta.as<double>());
}

template <class N>
N& node_as(const std::shared_ptr<Node>& node, NodeKind kind, const char* what) {
  if (!node || node->kind != kind)
    throw Error(Errc::type_mismatch, std::string("not a reference to a served ") + what);
  return static_cast<N&>(*node);
}

}  // namespace detail

using detail::ArrayNode;
using detail::HashNode;
using detail::MutexLock;
using detail::NodeKind;
using detail::ScalarNode;

// --- Hash ---

Hash::Hash() : node_(std::make_shared<HashNode>()) {}
Hash::Hash(std::initializer_list<std::pair<const std::string, Value>> items) : Hash() {
  auto& n = node_cast<HashNode>(*node_);
  MutexLock lock(n.mu);
  for (const auto& [k, v] : items) n.items[k] = detail::stored_form(v);
}
Hash::Hash(std::shared_ptr<detail::Node> node) : node_(std::move(node)) {
  detail::node_as<HashNode>(node_, NodeKind::hash, "hash");
}

#define PATRO_HASH_LOCKED                \
  auto& n = node_cast<HashNode>(*node_); \
  MutexLock lock(n.mu)

Value Hash::get(std::string_view key) const {
  PATRO_HASH_LOCKED;
  auto it = n.items.find(key);
  return it == n.items.end() ? Value() : it->second;
}
void Hash::set(std::string key, Value v) const {
  Value stored = detail::stored_form(std::move(v));
  PATRO_HASH_LOCKED;
  n.items[std::move(key)] = std::move(stored);
}
Value Hash::erase(std::string_view key) const {
  PATRO_HASH_LOCKED;
  auto it = n.items.find(key);
  if (it == n.items.end()) return Value();
  Value old = std::move(it->second);
  n.items.erase(it);
  return old;
}
bool Hash::exists(std::string_view key) const {
  PATRO_HASH_LOCKED;
  return n.items.find(key) != n.items.end();
}
size_t Hash::size() const {
  PATRO_HASH_LOCKED;
  return n.items.size();
}
std::vector<std::string> Hash::keys() const {
  PATRO_HASH_LOCKED;
  std::vector<std::string> out;
  out.reserve(n.items.size());
  for (const auto& kv : n.items) out.push_back(kv.first);
  return out;
}
void Hash::clear() const {
  PATRO_HASH_LOCKED;
  n.items.clear();
}
Value Hash::add(std::string key, Value delta) const {
  PATRO_HASH_LOCKED;
  Value& slot = n.items[std::move(key)];
  slot = detail::numeric_add(slot, delta);
  return slot;
}
#undef PATRO_HASH_LOCKED

// --- Array ---

Array::Array() : node_(std::make_shared<ArrayNode>()) {}
Array::Array(std::initializer_list<Value> items) : Array() {
  auto& n = node_cast<ArrayNode>(*node_);
  MutexLock lock(n.mu);
  for (const auto& v : items) n.items.push_back(detail::stored_form(v));
}
Array::Array(std::shared_ptr<detail::Node> node) : node_(std::move(node)) {
  detail::node_as<ArrayNode>(node_, NodeKind::array, "array");
}

#define PATRO_ARRAY_LOCKED                \
  auto& n = node_cast<ArrayNode>(*node_); \
  MutexLock lock(n.mu)

Value Array::get(int64_t index) const {
  PATRO_ARRAY_LOCKED;
  return detail::array_get(n, index);
}
void Array::set(int64_t index, Value v) const {
  PATRO_ARRAY_LOCKED;
  detail::array_set(n, index, std::move(v), Limits{});
}
void Array::push(Value v) const {
  Value stored = detail::stored_form(std::move(v));
  PATRO_ARRAY_LOCKED;
  n.items.push_back(std::move(stored));
}
Value Array::pop() const {
  PATRO_ARRAY_LOCKED;
  if (n.items.empty()) return Value();
  Value v = std::move(n.items.back());
  n.items.pop_back();
  return v;
}
Value Array::shift() const {
  PATRO_ARRAY_LOCKED;
  if (n.items.empty()) return Value();
  Value v = std::move(n.items.front());
  n.items.pop_front();
  return v;
}
void Array::unshift(Value v) const {
  Value stored = detail::stored_form(std::move(v));
  PATRO_ARRAY_LOCKED;
  n.items.push_front(std::move(stored));
}
size_t Array::size() const {
  PATRO_ARRAY_LOCKED;
  return n.items.size();
}
void Array::clear() const {
  PATRO_ARRAY_LOCKED;
  n.items.clear();
}
ValueArray Array::items() const {
  PATRO_ARRAY_LOCKED;
  return ValueArray(n.items.begin(), n.items.end());
}
#undef PATRO_ARRAY_LOCKED

// --- Scalar ---

Scalar::Scalar() : node_(std::make_shared<ScalarNode>()) {}
Scalar::Scalar(Value v) : Scalar() {
  set(std::move(v));
}
Scalar::Scalar(std::shared_ptr<detail::Node> node) : node_(std::move(node)) {
  detail::node_as<ScalarNode>(node_, NodeKind::scalar, "scalar");
}
Value Scalar::get() const {
  auto& n = node_cast<ScalarNode>(*node_);
  MutexLock lock(n.mu);
  return n.value;
}
void Scalar::set(Value v) const {
  Value stored = detail::stored_form(std::move(v));
  auto& n = node_cast<ScalarNode>(*node_);
  MutexLock lock(n.mu);
  n.value = std::move(stored);
}
Value Scalar::add(Value delta) const {
  auto& n = node_cast<ScalarNode>(*node_);
  MutexLock lock(n.mu);
  n.value = detail::numeric_add(n.value, delta);
  return n.value;
}

namespace detail {
Hash ValueAs<Hash>::get(const Value& v) {
  auto node = node_of(v);
  if (!node || node->kind != NodeKind::hash) v.throw_mismatch("a served Hash");
  return Hash(node);
}
Array ValueAs<Array>::get(const Value& v) {
  auto node = node_of(v);
  if (!node || node->kind != NodeKind::array) v.throw_mismatch("a served Array");
  return Array(node);
}
Scalar ValueAs<Scalar>::get(const Value& v) {
  auto node = node_of(v);
  if (!node || node->kind != NodeKind::scalar) v.throw_mismatch("a served Scalar");
  return Scalar(node);
}
}  // namespace detail

}  // namespace patro
