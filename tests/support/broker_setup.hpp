// What tests against a real patro-broker set up beside it: CURVE key files and the broker
// options that use them, and bounded waits until a name resolves.
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include <patro/patro.hpp>

#include "process.hpp"

namespace patro::test {

/// A CURVE key pair written to dir/NAME.key, and its public half to dir/NAME.key.pub.
struct Keys {
  std::string path;
  patro::CurveKeyPair pair;
  Keys(const TempDir& dir, const std::string& name) : path(dir.file(name + ".key")) {
    pair = patro::curve_keypair();
    patro::write_key_file(path, pair);
  }
  std::string pub() const { return path + ".pub"; }
};

/// A broker with CURVE (its key) and allow lists (files of Z85 public keys, one a line).
inline BrokerOptions curve_broker(const Keys& key, const std::string& allowed_clients,
                                  const std::string& allowed_servers) {
  BrokerOptions o;
  o.extra = {"--curve-key",   key.path,          "--allow-clients",
             allowed_clients, "--allow-servers", allowed_servers};
  return o;
}

/// Waits (bounded: 400 tries 25 ms apart) until the name resolves at front for a client with
/// these options; the proxy. Errors other than not_found are thrown at once.
inline patro::Proxy wait_for_name(const std::string& front, const std::string& name,
                                  const patro::ClientOptions& o) {
  for (int i = 0; i < 400; ++i) {
    try {
      return patro::get_proxy(front, name, o);
    } catch (const patro::Error& e) {
      if (e.code() != patro::Errc::not_found) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  throw std::runtime_error("the name " + name + " never resolved");
}

/// Waits until the name resolves at front, every error waited out: for a process that binds its
/// own broker (patro-worker --front), which may not answer yet. Bounded: `tries` tries 25 ms
/// apart, each connecting for at most 1 s. The proxy, or nullopt if the name never resolved.
inline std::optional<patro::Proxy> resolve_when_up(const std::string& front,
                                                   const std::string& name,
                                                   patro::ClientOptions o = {}, int tries = 200) {
  o.connect_timeout =
      std::min<std::chrono::milliseconds>(o.connect_timeout, std::chrono::seconds(1));
  for (int i = 0; i < tries; ++i) {
    try {
      return patro::get_proxy(front, name, o);
    } catch (const patro::Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  return std::nullopt;
}

}  // namespace patro::test
