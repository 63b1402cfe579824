// patro::Value: null, bool, int64, double, string, bytes, array, hash, or a reference to a
// served object. Arrays and hashes held in a Value are copies (value semantics); served
// containers (patro::Hash, patro::Array, patro::Scalar) are references.
#pragma once

#include <concepts>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <variant>
#include <vector>

#include "patro/error.hpp"
#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

namespace detail {
class PATRO_PRIVATE Node;
class PATRO_PRIVATE Connection;
}  // namespace detail

class Value;
class Hash;
class Array;
class Scalar;
class Proxy;

/// Raw bytes, distinct from text.
struct Bytes {
  std::string data;
  bool operator==(const Bytes&) const = default;
};

/// One step of a path below an object: a hash key or an array index.
using PathElem = std::variant<std::string, int64_t>;
using Path = std::vector<PathElem>;

/// A served object's id: the owning server's id and the object's own id (128 bits in all).
struct ObjectId {
  uint64_t server = 0;
  uint64_t object = 0;
  bool operator==(const ObjectId&) const = default;
  /// 32 lower-case hex digits.
  std::string to_hex() const;
  /// Parses 32 hex digits; throws Error(bad_config) otherwise.
  static ObjectId from_hex(std::string_view hex);
};

/// A reference to an object: on the server, the object itself; on a client, its id, the
/// connection it came through and (for references made from proxies) a path below it.
struct Reference {
  std::shared_ptr<detail::Node> node;        // server side
  std::shared_ptr<detail::Connection> conn;  // client side
  ObjectId id;
  Path path;
  std::string type_name;  // Perl's ref(): HASH, ARRAY, SCALAR, CODE, GLOB or a class name
  std::string reftype;    // Perl's reftype(): the basic type
  /// Client side: this reference's claim on its server's object, shared by every copy of the
  /// reference and the proxies made from it; when the last one goes the server is told
  /// (ServerOptions::reference_lease). Not part of what the reference is (==).
  std::shared_ptr<const void> hold;
  /// Client side: a local container to serve for the server to call back rather than copy
  /// (patro::callback). Not part of what the reference is (==).
  bool callback = false;
  bool operator==(const Reference& o) const;
};

using ValueArray = std::vector<Value>;
using ValueHash = std::map<std::string, Value, std::less<>>;

/// The type of what a Value holds.
enum class Type { null, boolean, integer, number, string, bytes, array, hash, reference };
const char* type_name(Type t) noexcept;

namespace detail {
template <class T>
struct ValueAs;  // conversions for Value::as<T>()
/// A reference to a served object of a class registered with patro::Class (patro/object.hpp);
/// throws Error(invalid_argument) if its class is not registered.
Value object_reference(std::shared_ptr<void> object, const std::type_info& type);
}  // namespace detail

class Value {
 public:
  Value() noexcept = default;
  Value(std::nullptr_t) noexcept {}
  Value(bool b) noexcept : v_(b) {}
  template <std::integral I>
  requires(!std::same_as<I, bool> && !std::same_as<I, char>) Value(I i)
  noexcept : v_(static_cast<int64_t>(i)) {}
  Value(double d) noexcept : v_(d) {}
  Value(float f) noexcept : v_(static_cast<double>(f)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) noexcept : v_(std::move(s)) {}
  Value(std::string_view s) : v_(std::string(s)) {}
  Value(Bytes b) noexcept : v_(std::move(b)) {}
  Value(ValueArray a) : v_(std::make_shared<ValueArray>(std::move(a))) {}
  Value(ValueHash h) : v_(std::make_shared<ValueHash>(std::move(h))) {}
  Value(Reference r) : v_(std::make_shared<const Reference>(std::move(r))) {}
  Value(const Hash& h);    // a reference to the served hash
  Value(const Array& a);   // a reference to the served array
  Value(const Scalar& s);  // a reference to the served scalar
  Value(const Proxy& p);   // a reference to what the proxy names
  /// A reference to a served object of a class registered with patro::Class (patro/object.hpp).
  template <class T>
  requires(!std::is_void_v<T>) Value(std::shared_ptr<T> object)
      : Value(detail::object_reference(
            std::const_pointer_cast<std::remove_const_t<T>>(std::move(object)), typeid(T))) {}

  /// A copied array, e.g. Value::array({1, "two", 3.0}).
  static Value array(std::initializer_list<Value> items) { return Value(ValueArray(items)); }
  /// A copied hash, e.g. Value::hash({{"a", 1}}).
  static Value hash(std::initializer_list<std::pair<const std::string, Value>> items) {
    return Value(ValueHash(items));
  }

  /// A list result (what patro::List converts to): a served method or callable that returns one
  /// gives its items in list context and its last item in scalar context. Otherwise an array.
  static Value list(ValueArray items) {
    Value v(std::move(items));
    v.list_ = true;
    return v;
  }
  bool is_list() const noexcept { return list_; }

  Type type() const noexcept { return static_cast<Type>(v_.index()); }
  bool is_null() const noexcept { return type() == Type::null; }
  bool is_reference() const noexcept { return type() == Type::reference; }
  /// Elements of an array or hash, bytes of a string; 0 for null; 1 for other scalars.
  size_t size() const noexcept;

  /// Converts, or throws Error(type_mismatch) naming both types. Supported: bool, integral types
  /// (range-checked), double, std::string, Bytes, ValueArray, ValueHash, Reference, and the served
  /// containers Hash, Array, Scalar (for references to local objects).
  template <class T>
  T as() const {
    return detail::ValueAs<T>::get(*this);
  }

  /// Element of a copied array (negative counts from the end) or hash; null when missing.
  template <std::integral I>
  const Value& operator[](I index) const {
    return at_index(static_cast<int64_t>(index));
  }
  const Value& operator[](std::string_view key) const { return at_key(key); }
  const Value& operator[](const char* key) const { return at_key(key); }

  /// Appends to a copied array (a null becomes an empty array first).
  void push_back(Value v);
  /// Sets a key of a copied hash (a null becomes an empty hash first).
  void set(std::string key, Value v);

  /// JSON-like text: null, true, 42, 1.5, "text", [1,2], {"k":"v"}, HASH(0123…) for references.
  std::string to_string() const;

  friend bool operator==(const Value& a, const Value& b) noexcept;
  template <class T>
  requires(!std::same_as<std::remove_cvref_t<T>, Value> &&
           std::constructible_from<Value, T>) friend bool
  operator==(const Value& a, const T& b) {
    return a == Value(b);
  }

  // Raw access for the library and for code that switches on type().
  const std::string* if_string() const noexcept { return std::get_if<std::string>(&v_); }
  const Bytes* if_bytes() const noexcept { return std::get_if<Bytes>(&v_); }
  const ValueArray* if_array() const noexcept;
  const ValueHash* if_hash() const noexcept;
  const Reference* if_reference() const noexcept;
  const int64_t* if_int() const noexcept { return std::get_if<int64_t>(&v_); }
  const double* if_double() const noexcept { return std::get_if<double>(&v_); }
  const bool* if_bool() const noexcept { return std::get_if<bool>(&v_); }

  /// Throws Error(type_mismatch): "cannot convert <type> to <wanted>".
  [[noreturn]] void throw_mismatch(const char* wanted) const;

 private:
  const Value& at_index(int64_t index) const;
  const Value& at_key(std::string_view key) const;

  // Copied arrays and hashes are shared until written (copy on write), so Values copy cheaply.
  std::variant<std::monostate, bool, int64_t, double, std::string, Bytes,
               std::shared_ptr<ValueArray>, std::shared_ptr<ValueHash>,
               std::shared_ptr<const Reference>>
      v_;
  bool list_ = false;  // made by Value::list (patro::List); equality ignores it
};

// Declared here as well as a friend, so that the definition in the library is exported.
bool operator==(const Value& a, const Value& b) noexcept;

/// Perl's truth: null, false, 0, 0.0, "" and "0" are false; everything else is true.
bool truthy(const Value& v) noexcept;

namespace detail {
int64_t value_as_int64(const Value& v);  // throws type_mismatch
[[noreturn]] void throw_out_of_range(const Value& v, const char* wanted);

// Defined in the class: clang 14 rejects an out-of-line member of a constrained partial
// specialization.
template <std::integral I>
struct ValueAs<I> {
  static I get(const Value& v) {
    const int64_t i = value_as_int64(v);
    if constexpr (std::is_signed_v<I>) {
      if (i < static_cast<int64_t>(std::numeric_limits<I>::min()) ||
          i > static_cast<int64_t>(std::numeric_limits<I>::max()))
        throw_out_of_range(v, "a narrower integer");
    } else {
      if (i < 0 || static_cast<uint64_t>(i) > std::numeric_limits<I>::max())
        throw_out_of_range(v, "an unsigned integer");
    }
    return static_cast<I>(i);
  }
};
template <>
struct ValueAs<bool> {
  static bool get(const Value& v);
};
template <>
struct ValueAs<double> {
  static double get(const Value& v);
};
template <>
struct ValueAs<std::string> {
  static std::string get(const Value& v);
};
template <>
struct ValueAs<Bytes> {
  static Bytes get(const Value& v);
};
template <>
struct ValueAs<ValueArray> {
  static ValueArray get(const Value& v);
};
template <>
struct ValueAs<ValueHash> {
  static ValueHash get(const Value& v);
};
template <>
struct ValueAs<Reference> {
  static Reference get(const Value& v);
};
template <>
struct ValueAs<Value> {
  static Value get(const Value& v) { return v; }
};

}  // namespace detail

/// A value as bytes (FlatBuffers, verified when read back), to store it: in a file, a log, a
/// database. References cannot be stored (Error(invalid_argument)).
std::string encode(const Value& v);
/// The value encode() wrote; Error(bad_message) if the bytes are not one (they are verified,
/// within default Limits).
Value decode(std::string_view bytes);

}  // namespace patro
PATRO_PUBLIC_END
