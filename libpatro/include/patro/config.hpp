// patro::Config: how a client reaches served objects (broker endpoints and object references).
// patronize() returns one; it travels as one line of text (to_string, to_file) and is read back
// with Config::parse or by get_proxies.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "patro/curve.hpp"
#include "patro/export.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

namespace detail {
/// What a Config returned by patronize() holds of its server (the server implements it), so that
/// the config, below the server in the library's layers, can stop and wait for it.
class ServingHandle {
 public:
  virtual ~ServingHandle() = default;
  virtual bool running() const noexcept = 0;
  virtual void stop() = 0;
  virtual void wait() = 0;
  virtual std::string server_endpoint() const = 0;
};
}  // namespace detail

/// One served object named in a config.
struct ObjectEntry {
  ObjectId id;
  std::string type_name;  // Perl's ref
  std::string reftype;    // Perl's reftype
};

class Config {
 public:
  Config() = default;
  Config(std::vector<std::string> brokers, std::vector<ObjectEntry> objects);

  /// Parses config text (one line of JSON); throws Error(bad_config) saying what is wrong.
  static Config parse(std::string_view text);
  /// Reads a config file; throws Error(bad_config).
  static Config from_file(const std::string& path);

  /// One line of JSON, without a trailing newline.
  std::string to_string() const;
  /// Writes to_string() and a newline to path; throws Error(invalid_argument) on failure. A
  /// config that carries a client key pair is a secret: the file is then written mode 0600.
  void to_file(const std::string& path) const;

  /// Client endpoints of the brokers, in fail-over order.
  const std::vector<std::string>& brokers() const noexcept { return brokers_; }
  const std::vector<ObjectEntry>& objects() const noexcept { return objects_; }

  /// The broker's CURVE public key (Z85), which get_proxies uses when its options give none;
  /// empty: plaintext. patronize() sets it from ServerOptions::curve.
  const std::string& broker_key() const noexcept { return broker_key_; }
  void set_broker_key(std::string key) { broker_key_ = std::move(key); }
  /// A client key pair the config carries, where the operator put one in (the config is then a
  /// secret); empty otherwise.
  const CurveKeyPair& client_key() const noexcept { return client_key_; }
  void set_client_key(CurveKeyPair keys) { client_key_ = std::move(keys); }
  /// How clients of this config send requests ("auto", "direct" or "broker"; see
  /// ClientOptions::route, which wins when it is not automatic); empty: auto.
  const std::string& route() const noexcept { return route_; }
  void set_route(std::string route) { route_ = std::move(route); }

  /// For a config returned by patronize(): whether its server is running. The server runs while
  /// a copy of this Config lives, until stop() or until it shuts itself down.
  bool serving() const;
  /// Stops the server (if this config has one) and waits for its threads; idempotent.
  void stop() const;
  /// Blocks until the server stops.
  void wait() const;

  /// The server endpoint (broker back end) that other servers register with, when this config
  /// came from patronize() with an embedded broker; empty otherwise.
  std::string server_endpoint() const;

  // Used by patronize().
  void attach_server(std::shared_ptr<detail::ServingHandle> server) { server_ = std::move(server); }

 private:
  std::vector<std::string> brokers_;
  std::vector<ObjectEntry> objects_;
  std::string broker_key_;
  CurveKeyPair client_key_;
  std::string route_;
  std::shared_ptr<detail::ServingHandle> server_;
};

}  // namespace patro
PATRO_PUBLIC_END
