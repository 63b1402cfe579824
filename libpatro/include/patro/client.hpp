// Using served objects: patro::get_proxies, patro::get_proxy and patro::Proxy.
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "patro/config.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"

namespace patro {

/// A proxy to a served object, or to an element below it. It looks and feels like the object:
/// p["def"][1]["ghi"] names an element (no round trip until it is used: the whole chain travels as
/// one request), p.get() reads it, p["k"] = v writes it.
///
/// Assignment: assigning a Value (or anything convertible) writes through the proxy. Assigning a
/// Proxy to a temporary element proxy (p["k"] = other) stores the object the other proxy names;
/// assigning a Proxy to a named Proxy variable rebinds the variable, as with any C++ handle.
///
/// All proxies obtained through one get_proxies() call share one connection (one lock monitor).
/// A connection may be used from several threads; calls on it are serialized.
class Proxy {
 public:
  /// A proxy for a reference that a call returned (a nested container, an object). Throws
  /// Error(type_mismatch) if v is not a reference to a remote object.
  Proxy(const Value& v);
  Proxy(std::shared_ptr<detail::Connection> conn, ObjectId id, Path path = {});

  Proxy(const Proxy&) = default;
  Proxy(Proxy&&) noexcept = default;
  Proxy& operator=(const Proxy&) & = default;
  Proxy& operator=(Proxy&&) & noexcept = default;
  ~Proxy() = default;

  /// Stores the object other names into the element this proxy names.
  void operator=(const Proxy& other) &&;
  void operator=(Proxy&& other) &&;
  /// Writes v into the element this proxy names.
  Proxy& operator=(const Value& v) &;
  void operator=(const Value& v) &&;

  /// The element at a key or an index (negative counts from the end). No round trip.
  template <std::integral I>
  Proxy operator[](I index) const {
    return child(PathElem(static_cast<int64_t>(index)));
  }
  Proxy operator[](std::string_view key) const { return child(PathElem(std::string(key))); }
  Proxy operator[](const char* key) const { return child(PathElem(std::string(key))); }
  Proxy operator[](const std::string& key) const { return child(PathElem(key)); }

  /// Reads the element. A nested container comes back as a reference (convert it to a Proxy);
  /// a missing key gives null. With no path: a scalar's value, or a container's own reference.
  Value get() const;
  template <class T>
  T as() const {
    return get().as<T>();
  }
  void set(const Value& v) const;
  /// Deletes a hash key or an array element and returns what it held.
  Value erase() const;
  bool exists() const;
  /// Elements of the hash or array.
  size_t size() const;
  /// Hash keys (sorted), or array indices.
  std::vector<Value> keys() const;
  std::vector<Value> values() const;

  template <class... Args>
  size_t push(Args&&... items) const {
    return list_op_size(detail_op::push, {Value(std::forward<Args>(items))...});
  }
  template <class... Args>
  size_t unshift(Args&&... items) const {
    return list_op_size(detail_op::unshift, {Value(std::forward<Args>(items))...});
  }
  Value pop() const;
  Value shift() const;
  /// Perl's splice: removes length elements from offset (negative offset counts from the end;
  /// no length: to the end; negative length leaves that many at the end), inserts replacement,
  /// returns the removed elements.
  std::vector<Value> splice(int64_t offset) const;
  std::vector<Value> splice(int64_t offset, int64_t length,
                            const std::vector<Value>& replacement = {}) const;
  void clear() const;
  /// Sets the array's size (Perl's $#a = n - 1).
  void resize(int64_t size) const;
  /// Adds delta to the number held, atomically on the server, and returns the new value.
  Value add(const Value& delta) const;

  /// A proxy that sends a fencing token (SyncResult::token) with every call: the server refuses a
  /// mutating call through it with Errc::fenced once a newer lock grant exists for the object.
  Proxy fenced(uint64_t token) const;
  uint64_t fence() const noexcept { return fence_; }

  const ObjectId& id() const noexcept { return id_; }
  const Path& path() const noexcept { return path_; }
  const std::shared_ptr<detail::Connection>& connection() const noexcept { return conn_; }

  // Internal: operation codes used by the templates above.
  enum class detail_op { push, unshift };

 private:
  Proxy child(PathElem e) const;
  size_t list_op_size(detail_op op, std::vector<Value> items) const;

  std::shared_ptr<detail::Connection> conn_;
  ObjectId id_;
  Path path_;
  uint64_t fence_ = 0;
};

/// Connects to the broker named in the config and returns proxies to its objects in the order
/// they were served. config may be a Config, config text, or the name of a config file.
std::vector<Proxy> get_proxies(const Config& config, const ClientOptions& options = {});
std::vector<Proxy> get_proxies(std::string_view config_text_or_file,
                               const ClientOptions& options = {});
std::vector<Proxy> get_proxies(const char* config_text_or_file, const ClientOptions& options = {});

/// A proxy to the object registered under name at the broker whose client endpoint is given
/// ("tcp://host:port"). Throws Error(not_found) if the name is unknown.
Proxy get_proxy(const std::string& broker_endpoint, const std::string& name,
                const ClientOptions& options = {});

/// Perl's ref(): the class name or basic type (HASH, ARRAY, SCALAR…) of what the proxy names;
/// empty if it names a plain value.
std::string ref(const Proxy& p);
/// Perl's reftype(): the basic type of what the proxy names; empty if it names a plain value.
std::string reftype(const Proxy& p);

}  // namespace patro
