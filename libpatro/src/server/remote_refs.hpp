// References a server is sent to objects it does not serve (a client's callback objects, another
// server's objects) are made callable: each gets a client connection of the server's own, opened on
// first need. A connection is the client family's, which this family cannot include: the peer
// family, above both, installs the factory that opens it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mutex.hpp"
#include "patro/curve.hpp"
#include "patro/value.hpp"

namespace patro::detail {

class RemoteRefs {
 public:
  /// A reference to object id of another server, bound to the connection the maker holds. pass:
  /// the key of a callback reference's pass (wire Ref.pass; 0: none), released with it when the
  /// reference's last copy goes.
  using Maker = std::function<Value(const ObjectId& id, const std::string& type_name,
                                    const std::string& reftype, uint64_t pass)>;
  /// Opens a client connection to these brokers (their client endpoints) with these keys.
  using Factory = Maker (*)(const std::vector<std::string>& brokers, const CurveOptions& curve);
  static void set_factory(Factory factory) noexcept;

  /// brokers: where the server's brokers take clients, asked for on first need.
  RemoteRefs(std::function<std::vector<std::string>()> brokers, CurveOptions curve)
      : brokers_(std::move(brokers)), curve_(std::move(curve)) {}

  /// A reference to id that the server's code can make a proxy of and call. Where no connection
  /// can be had (no factory, no broker answers), a plain reference, which the server can still
  /// store and send to its clients; the failure is logged once.
  Value make(const ObjectId& id, const std::string& type_name, const std::string& reftype,
             uint64_t pass = 0) PATRO_EXCLUDES(mu_);
  /// Lets go of the connection (the server stops); references made keep it while they live.
  void close() PATRO_EXCLUDES(mu_);

 private:
  const std::function<std::vector<std::string>()> brokers_;
  const CurveOptions curve_;
  Mutex mu_;
  Maker maker_ PATRO_GUARDED_BY(mu_);
  bool failed_ PATRO_GUARDED_BY(mu_) = false;
  bool closed_ PATRO_GUARDED_BY(mu_) = false;
};

}  // namespace patro::detail
