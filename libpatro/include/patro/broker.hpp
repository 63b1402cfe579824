// patro::Broker: routes requests from clients to the servers that own the objects, by the object
// id frame, without decoding request bodies. patro-broker is a thin main over it; patronize()
// embeds one when no broker is configured.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "patro/error.hpp"
#include "patro/export.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// Counters a broker keeps.
struct BrokerStats {
  uint64_t routed = 0;    ///< requests forwarded to servers
  uint64_t replies = 0;   ///< replies forwarded to clients
  uint64_t dropped = 0;   ///< messages dropped (malformed and unanswerable, or peer gone)
  uint64_t rejected = 0;  ///< requests answered with an error by the broker
  uint64_t servers = 0;   ///< registered servers now
  uint64_t clients = 0;   ///< live clients now
  uint64_t retried = 0;   ///< requests clients sent again (their reply may have been lost)
  /// Summed over the servers registered now, as they report them (broker_info() only): repeated
  /// requests answered from a reply cache without running again, and requests not run because
  /// their deadline had passed when a lane took them.
  uint64_t dedup_hits = 0;
  uint64_t expired = 0;
  uint64_t refused = 0;  ///< CURVE handshakes refused (a key not on the allow list)
  /// Connections open now, both ports together (stats() only), and the most it keeps
  /// (BrokerOptions::max_connections, or what the descriptor limit gave).
  uint64_t connections = 0;
  uint64_t max_connections = 0;
  std::map<Errc, uint64_t> rejected_by_code;  ///< rejected, by error code (stats() only)
  /// Messages from peers the broker refused, by kind (stats() only; docs/SECURITY.md lists the
  /// kinds): a REGISTER for another process's server id, over its limits, a forged SERVER_ALIVE
  /// or REPLY, a message from a key no longer on its allow list, ...
  std::map<std::string, uint64_t> refused_by_kind;
  /// With BrokerOptions::track_latency (stats() only): requests routed and not yet answered, and
  /// the time from routing a request to routing its reply: per bucket (upper bounds in
  /// latency_bounds, seconds; the last count is above them all), their sum and count.
  uint64_t in_flight = 0;
  std::vector<uint64_t> latency_counts;
  double latency_sum = 0;
  uint64_t latency_count = 0;
  static const std::vector<double>& latency_bounds();
};

/// A name in a broker's registry.
struct BrokerName {
  std::string name;
  ObjectId id;
  std::string type_name;  ///< Perl's ref of the object
  std::string reftype;
};

/// A server registered at a broker.
struct BrokerServer {
  uint64_t id = 0;          ///< the server half of its objects' ids
  unsigned lanes = 0;       ///< lanes (worker threads) registered now
  unsigned clients = 0;     ///< live clients that have sent it requests
  uint64_t dedup_hits = 0;  ///< repeated requests it answered from its reply cache
  uint64_t expired = 0;     ///< requests it did not run: their deadline had passed
  uint64_t direct = 0;      ///< requests that reached it directly (no broker hop)
  uint64_t brokered = 0;    ///< requests the broker forwarded to it
  /// Requests it refused for their client key's rights (README "Security", rights per key).
  uint64_t not_authorized = 0;
};

/// What a broker knows: its registry (sorted by name), its servers (sorted by id), its counters.
struct BrokerInfo {
  std::vector<BrokerName> names;
  std::vector<BrokerServer> servers;
  BrokerStats stats;
};

/// Asks the broker whose client endpoint is given ("tcp://host:port") what it knows. Throws
/// Error(broker_unreachable) if it does not answer in time.
BrokerInfo broker_info(const std::string& endpoint, const ClientOptions& options = {});

namespace detail {
struct BrokerDriver;  // the tests' socket-free entry to the handlers (src/broker/broker_driver.hpp)
}

/// A broker. Binds in the constructor (throws Error on failure); run() serves until stop().
/// run() and stop() may be called from different threads; everything else from run()'s thread
/// or before it starts.
class Broker {
 public:
  explicit Broker(const BrokerOptions& options);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  /// The endpoints actually bound (with the port chosen for "*").
  std::string frontend_endpoint() const;
  std::string backend_endpoint() const;

  /// Serves until stop() is called.
  void run();
  /// Makes run() return soon; safe from any thread and from a signal handler's helper thread.
  void stop();
  /// A snapshot of the counters (safe from any thread).
  BrokerStats stats() const;
  /// Reads the allow-list files (BrokerOptions::allow_clients_file, allow_servers_file) again;
  /// safe from any thread. On an error (logged and thrown as Error) the lists in force stay.
  /// New handshakes see the new lists at once; the broker's loop then refuses every message
  /// from a live session whose key left its list, and drops the servers that key registered.
  void reload();
  /// The broker's CURVE public key (Z85); empty when it runs plaintext.
  std::string public_key() const;

 private:
  friend struct detail::BrokerDriver;
  struct PATRO_PRIVATE Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace patro
PATRO_PUBLIC_END
