// The client's direct path, its decisions on their own (no sockets, the clock passed in): for each
// server a connection talks to, the state of its direct route and where its requests go now.
//
// A route is locating (a LOCATE asked the broker where the server takes requests directly), then
// probing (a socket to one of its lanes is open and a heartbeat goes on it), then live (the server
// answered there). Any failure, or silence past the broker's window while probing or live, makes
// it dead; a dead route is tried again after a backoff (the heartbeat interval, doubled by each
// failure up to kMaxBackoff, and forgotten once a route comes up). A locating route whose answer
// did not come within the window asks again. A live route becomes active, so that requests go by
// it, once nothing sent to its server through the broker is still in flight: a request sent
// directly must not overtake one still on its way through the broker.
//
// route=auto: requests go through the broker until the route is active, and again after it failed.
// route=direct: they are held until the route is live (then they go, in their order), and refused
// while it is dead; a dead route with requests held is tried again when its backoff ends.
//
// The table decides; its holder acts (sends the LOCATEs and the heartbeats, opens and closes the
// sockets, resends or fails the requests). Not locked itself: its holder guards it (the connection,
// under its io loop's turn).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "patro/options.hpp"
#include "socket.hpp"

namespace patro::detail {

struct Slot;  // connection.hpp: a request in flight

/// A request (or anything else) on its way out, with its slot (null: none).
struct Outgoing {
  Multipart frames;
  std::shared_ptr<Slot> slot;
  bool cancel = false;  // a CANCEL of slot's request: it goes the way that request went
  // Log forwarding changed (Connection::forward_logs): its level (none: off) and selections, put
  // in force by the holder of the socket, in order with the requests around it.
  bool log_change = false;
  std::optional<LogLevel> log_level{};
  std::string log_selections{};
};

class PATRO_PRIVATE DirectRoutes {
 public:
  using Clock = std::chrono::steady_clock;
  enum class State { locating, probing, live, dead };
  static constexpr std::chrono::milliseconds kMaxBackoff{30'000};

  /// One server's direct route.
  struct Entry {
    State state = State::locating;
    bool active = false;  // requests to the server go by it now
    Clock::time_point since, last_heard, next_heartbeat, retry_at;
    std::chrono::milliseconds backoff{0};
    std::deque<Outgoing> held;  // route=direct: waiting for the route
    // Probing with no connection made: when to connect again, and the wait after that.
    Clock::time_point reconnect_at;
    std::chrono::milliseconds reconnect_after{0};
  };

  /// route: the connection's (route=broker never asks the table).
  explicit DirectRoutes(Route route) : direct_only_(route == Route::direct) {}

  /// Where a request goes: through the broker, by the direct route, held for it (route=direct,
  /// see hold()), or refused (route=direct, and the route is dead).
  enum class Way { broker, direct, hold, refuse };
  struct Choice {
    Way way = Way::broker;
    bool locate = false;  // first send a LOCATE for the server (before the request)
  };
  /// Where a request to server goes at now (a server not seen before starts locating, and so
  /// does a dead route whose backoff ended). window: the broker's. brokered(): whether a request
  /// to server sent through the broker is still in flight (asked only of a live, inactive route).
  Choice choose(uint64_t server, Clock::time_point now, std::chrono::milliseconds window,
                const std::function<bool()>& brokered);
  /// Keeps a request until server's route is live (after choose() said Way::hold).
  void hold(uint64_t server, Outgoing o);

  /// Whether server's route waits for a LOCATE answer.
  bool locating(uint64_t server) const;
  /// The lane endpoint, of those a LOCATE answered, that this client uses: one per server,
  /// chosen by client id (its requests there then run in the order it sent them); an empty one
  /// passes the choice to the next. Empty if none.
  static std::string pick_endpoint(const std::vector<std::string>& endpoints, uint64_t client_id);
  /// A socket to server's lane was opened at now: the route probes it at once.
  void probing(uint64_t server, Clock::time_point now);
  /// server's heartbeat could not be sent (its socket has no connection): a probe goes again
  /// soon, as the connection may still be being made. True if the route was live.
  bool beat_unsent(uint64_t server, Clock::time_point now);
  /// Whether server's probing route, whose probe still finds no connection, should connect again
  /// now: a CURVE handshake the server refused (it had not yet heard the broker vouch for our key)
  /// is not tried again by libzmq, so the connection is made anew kFirstReconnect after the probe
  /// began, then after twice as long each time, until the route is up or its window ends.
  bool reconnect_due(uint64_t server, Clock::time_point now);
  static constexpr std::chrono::milliseconds kFirstReconnect{100};

  /// What a message on a direct socket did.
  struct Heard {
    bool known = false;          // the server has a route (otherwise drop the message)
    bool up = false;             // it made the route live
    std::deque<Outgoing> ready;  // route=direct: the held requests, to send now, in order
  };
  /// A message came from server's direct socket at now.
  Heard heard(uint64_t server, Clock::time_point now);

  /// What is due at now.
  struct Tending {
    std::vector<uint64_t> locate;     // send a LOCATE for each
    std::vector<uint64_t> heartbeat;  // send a heartbeat on each one's direct socket
    std::vector<std::pair<uint64_t, std::string>> failed;  // silent: fail() each, with why
  };
  /// The routes' timers: LOCATEs to ask again, heartbeats to send, silence past window, dead
  /// routes with held requests to try again. interval: the heartbeat interval. Nothing before
  /// next_check().
  Tending tend(Clock::time_point now, std::chrono::milliseconds window,
               std::chrono::milliseconds interval);
  /// When tend() has something to do next (max: nothing).
  Clock::time_point next_check() const noexcept { return next_check_; }

  /// What fail() did.
  struct Failure {
    bool known = false;         // the server had a route
    bool was_active = false;    // requests went by it
    std::deque<Outgoing> held;  // route=direct: the requests held for it, to fail
  };
  /// Server's route failed at now: dead, tried again after its backoff (interval the first time,
  /// then doubling, at most kMaxBackoff). Its socket is to be closed.
  Failure fail(uint64_t server, Clock::time_point now, std::chrono::milliseconds interval);

  /// The server went away: its route is forgotten, unless requests are held for it. Whether it
  /// was (its socket is to be closed).
  bool forget(uint64_t server);
  /// A new broker (a restart): the servers whose route is not dead, to LOCATE again there.
  std::vector<uint64_t> not_dead() const;
  /// Another broker (a move): the servers whose route is locating, each asking again from now.
  std::vector<uint64_t> locate_again(Clock::time_point now);

  const Entry* find(uint64_t server) const;
  bool empty() const noexcept { return routes_.empty(); }
  void clear() { routes_.clear(); }

 private:
  const bool direct_only_;
  std::unordered_map<uint64_t, Entry> routes_;
  Clock::time_point next_check_ = Clock::time_point::max();
};

}  // namespace patro::detail
