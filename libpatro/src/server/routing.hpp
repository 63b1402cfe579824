// Where a reply goes: the routing a lane keeps for a request it took. A request that came through
// the first broker keeps that broker's routing id for the client as it is (the fast path: the
// reply reuses the request's frames). One that came through another broker (ServerOptions::brokers)
// carries a marker and the broker's index before it, and one that came straight to a lane's ROUTER
// (the direct path) a marker, the lane and the client's id at that ROUTER. Routing ids start with a
// zero byte (ZeroMQ's generated ones) or 'p' (ours, base/socket.hpp); a peer that chose one that
// starts as a marker does (0xff) has its routing marked as if through another broker, so that no
// client's id is ever read as a marked routing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace patro::detail {

namespace routing_marker {
inline constexpr char kDirect[2] = {'\xff', 'D'};
inline constexpr char kBroker[2] = {'\xff', 'B'};
}  // namespace routing_marker

/// marker, a 16-bit index, id.
inline std::string marked_routing(const char (&marker)[2], unsigned index, std::string_view id) {
  std::string r(marker, 2);
  r.push_back(static_cast<char>((index >> 8) & 0xff));
  r.push_back(static_cast<char>(index & 0xff));
  r.append(id);
  return r;
}

/// The index after marker, if the routing carries it.
inline std::optional<unsigned> marked_index(const char (&marker)[2],
                                            std::string_view routing) noexcept {
  if (routing.size() < 4 || routing[0] != marker[0] || routing[1] != marker[1]) return std::nullopt;
  return (static_cast<unsigned>(static_cast<uint8_t>(routing[2])) << 8) |
         static_cast<uint8_t>(routing[3]);
}

/// The routing of a request that came to lane `lane`'s direct ROUTER from the peer `id`.
inline std::string direct_routing(unsigned lane, std::string_view id) {
  return marked_routing(routing_marker::kDirect, lane, id);
}
/// The lane of a direct routing; nullopt for a routing through a broker.
inline std::optional<unsigned> direct_lane(std::string_view routing) noexcept {
  return marked_index(routing_marker::kDirect, routing);
}

/// Whether a request through broker `broker` from the client with routing id `id` needs a marked
/// routing: through any broker but the first, or with an id that could be read as marked.
inline bool needs_marking(unsigned broker, std::string_view id) noexcept {
  return broker != 0 || (!id.empty() && id[0] == routing_marker::kBroker[0]);
}
/// The routing of a request that came through broker `broker` (its index in the server's list)
/// from the client with routing id `id` there. The first broker's is the id as it is (unless
/// needs_marking()).
inline std::string broker_routing(unsigned broker, std::string_view id) {
  return needs_marking(broker, id) ? marked_routing(routing_marker::kBroker, broker, id)
                                   : std::string(id);
}
/// Which broker a routing goes through; nullopt for a direct routing.
inline std::optional<unsigned> routing_broker(std::string_view routing) noexcept {
  if (direct_lane(routing)) return std::nullopt;
  return marked_index(routing_marker::kBroker, routing).value_or(0);
}
/// The client's routing id at its broker (the routing without a broker marker).
inline std::string_view broker_peer(std::string_view routing) noexcept {
  return marked_index(routing_marker::kBroker, routing) ? routing.substr(4) : routing;
}

}  // namespace patro::detail
