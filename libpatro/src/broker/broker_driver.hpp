// A socket-free entry to a Broker's handlers, for tests (the broker fuzz target): a message is
// handled exactly as run() handles one it reads from a port, and the timers run as run() runs
// them, at a time the caller gives. What the handlers send still goes to the broker's own
// sockets, where a routing id no peer holds is dropped (counted in BrokerStats::dropped).
#pragma once

#include <chrono>

#include "patro/broker.hpp"
#include "socket.hpp"

namespace patro::detail {

struct BrokerDriver {
  /// Handles f ([routing id][header]...) as read from the back port (servers) if back, else the
  /// front (clients), stamped now. Throws what the handler throws (run() logs it and goes on).
  static void deliver(Broker& b, bool back, Multipart& f,
                      std::chrono::steady_clock::time_point now);
  /// Runs what is due at now: heartbeats to every peer, then the expiry of silent ones.
  static void tick(Broker& b, std::chrono::steady_clock::time_point now);
};

}  // namespace patro::detail
