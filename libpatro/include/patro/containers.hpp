// Served containers: patro::Hash, patro::Array, patro::Scalar. They have reference semantics, like
// Perl references: copies share the data, and a container stored in another is a reference to it.
// The serving program keeps its handles and sees every change clients make, and clients see its
// changes. Every operation is atomic with respect to every other on the same container; any
// thread may call them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "patro/export.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// A served hash (Perl's %hash reference). Keys are strings.
class Hash {
 public:
  Hash();
  Hash(std::initializer_list<std::pair<const std::string, Value>> items);

  /// The value at key, or null when missing (as Perl gives undef).
  Value get(std::string_view key) const;
  void set(std::string key, Value v) const;
  /// Removes key and returns what it held (null when missing).
  Value erase(std::string_view key) const;
  bool exists(std::string_view key) const;
  size_t size() const;
  /// Keys in sorted order.
  std::vector<std::string> keys() const;
  void clear() const;
  /// Adds delta to the number at key (missing counts as 0) and returns the new value, atomically.
  Value add(std::string key, Value delta) const;

  const std::shared_ptr<detail::Node>& node() const noexcept { return node_; }
  explicit Hash(std::shared_ptr<detail::Node> node);  // node must be a hash node

 private:
  std::shared_ptr<detail::Node> node_;
};

/// A served array (Perl's @array reference). Negative indices count from the end.
class Array {
 public:
  Array();
  Array(std::initializer_list<Value> items);

  /// The element at index, or null when out of range.
  Value get(int64_t index) const;
  /// Sets the element; a positive index past the end extends the array with nulls.
  void set(int64_t index, Value v) const;
  void push(Value v) const;
  Value pop() const;
  Value shift() const;
  void unshift(Value v) const;
  size_t size() const;
  void clear() const;
  /// A copy of the elements (nested containers stay references).
  ValueArray items() const;

  const std::shared_ptr<detail::Node>& node() const noexcept { return node_; }
  explicit Array(std::shared_ptr<detail::Node> node);  // node must be an array node

 private:
  std::shared_ptr<detail::Node> node_;
};

/// A served scalar (Perl's \$scalar reference).
class Scalar {
 public:
  Scalar();
  Scalar(Value v);

  Value get() const;
  void set(Value v) const;
  /// Adds delta to the number held (null counts as 0) and returns the new value, atomically.
  Value add(Value delta) const;

  const std::shared_ptr<detail::Node>& node() const noexcept { return node_; }
  explicit Scalar(std::shared_ptr<detail::Node> node);  // node must be a scalar node

 private:
  std::shared_ptr<detail::Node> node_;
};

namespace detail {
template <>
struct ValueAs<Hash> {
  static Hash get(const Value& v);
};
template <>
struct ValueAs<Array> {
  static Array get(const Value& v);
};
template <>
struct ValueAs<Scalar> {
  static Scalar get(const Value& v);
};
}  // namespace detail

}  // namespace patro
PATRO_PUBLIC_END
