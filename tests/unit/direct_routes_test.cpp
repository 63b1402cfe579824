// The client's direct-path decisions on their own (no sockets, a fake clock): a route goes
// locating -> probing -> live, becomes active only once nothing brokered is in flight, dies when it
// is silent past the window, and is tried again after a backoff that doubles up to its cap and
// starts over once a route comes up; route=auto falls back to the broker, route=direct holds the
// requests until the route is live and refuses them while it is dead.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "direct_routes.hpp"

using namespace patro;
using namespace std::chrono_literals;
using detail::DirectRoutes;
using detail::Outgoing;
using Clock = DirectRoutes::Clock;
using State = DirectRoutes::State;
using Way = DirectRoutes::Way;

namespace {

constexpr uint64_t kServer = 0x5e7;
constexpr auto kWindow = 3000ms;
constexpr auto kInterval = 1000ms;
const Clock::time_point t0 = Clock::time_point{} + 1h;

// A brokered() that says "nothing in flight through the broker" and counts the questions.
struct Brokered {
  bool in_flight = false;
  int asked = 0;
  std::function<bool()> fn() {
    return [this] {
      ++asked;
      return in_flight;
    };
  }
};

State state(const DirectRoutes& routes, uint64_t server = kServer) {
  const auto* e = routes.find(server);
  REQUIRE(e != nullptr);
  return e->state;
}

// A request as the connection holds it: told apart by its one frame.
Outgoing request(const std::string& text) {
  Outgoing o;
  o.frames.emplace_back(text.data(), text.size());
  return o;
}
std::string text_of(const Outgoing& o) {
  return o.frames.at(0).to_string();
}

// Brings kServer's route up: located at now, a socket opened, its probe answered.
void bring_up(DirectRoutes& routes, Clock::time_point now) {
  Brokered none;
  routes.choose(kServer, now, kWindow, none.fn());
  REQUIRE(routes.locating(kServer));
  routes.probing(kServer, now);
  REQUIRE(routes.heard(kServer, now).up);
}

}  // namespace

TEST_CASE("a route goes locating, probing, live, and is used once nothing brokered is in flight") {
  DirectRoutes routes(Route::automatic);
  Brokered brokered;
  CHECK(routes.empty());
  CHECK(routes.next_check() == Clock::time_point::max());

  // The first request to a server asks where it is, and goes through the broker meanwhile.
  auto c = routes.choose(kServer, t0, kWindow, brokered.fn());
  CHECK(c.locate);
  CHECK(c.way == Way::broker);
  CHECK(state(routes) == State::locating);
  CHECK(routes.locating(kServer));
  CHECK(routes.next_check() == t0 + kWindow);  // the LOCATE answer is awaited that long
  c = routes.choose(kServer, t0 + 1ms, kWindow, brokered.fn());
  CHECK(!c.locate);  // asked once
  CHECK(c.way == Way::broker);
  CHECK(brokered.asked == 0);

  // The answer came and a socket is open: the probe (a heartbeat) goes at once.
  routes.probing(kServer, t0 + 10ms);
  CHECK(state(routes) == State::probing);
  CHECK(!routes.locating(kServer));
  CHECK(routes.next_check() == t0 + 10ms);
  auto due = routes.tend(t0 + 10ms, kWindow, kInterval);
  CHECK(due.heartbeat == std::vector<uint64_t>{kServer});
  CHECK(due.locate.empty());
  CHECK(due.failed.empty());
  CHECK(routes.next_check() == t0 + 10ms + kInterval);
  CHECK(routes.choose(kServer, t0 + 11ms, kWindow, brokered.fn()).way == Way::broker);

  // Its answer makes the route live; requests go by it once none through the broker is in flight.
  auto heard = routes.heard(kServer, t0 + 20ms);
  CHECK(heard.known);
  CHECK(heard.up);
  CHECK(heard.ready.empty());
  CHECK(state(routes) == State::live);
  CHECK(!routes.heard(kServer, t0 + 21ms).up);  // up once
  brokered.in_flight = true;
  CHECK(routes.choose(kServer, t0 + 30ms, kWindow, brokered.fn()).way == Way::broker);
  CHECK(brokered.asked == 1);
  CHECK(!routes.find(kServer)->active);
  brokered.in_flight = false;
  CHECK(routes.choose(kServer, t0 + 40ms, kWindow, brokered.fn()).way == Way::direct);
  CHECK(routes.find(kServer)->active);
  CHECK(brokered.asked == 2);
  // Active: no more questions.
  CHECK(routes.choose(kServer, t0 + 50ms, kWindow, brokered.fn()).way == Way::direct);
  CHECK(brokered.asked == 2);

  // A message from a server the table does not know is dropped.
  CHECK(!routes.heard(kServer + 1, t0).known);
}

TEST_CASE("a live route sends heartbeats and is dead after silence past the window") {
  DirectRoutes routes(Route::automatic);
  bring_up(routes, t0);
  (void)routes.tend(t0, kWindow, kInterval);  // the probe's heartbeat
  // Heard at t0: heartbeats every interval, silence checked at last_heard + window.
  auto due = routes.tend(t0 + kInterval, kWindow, kInterval);
  CHECK(due.heartbeat == std::vector<uint64_t>{kServer});
  CHECK(routes.next_check() == t0 + 2 * kInterval);
  due = routes.tend(t0 + 2 * kInterval, kWindow, kInterval);
  CHECK(due.heartbeat == std::vector<uint64_t>{kServer});
  CHECK(routes.next_check() == t0 + kWindow);           // the next beat, and the silence check
  due = routes.tend(t0 + kWindow, kWindow, kInterval);  // not past the window yet
  CHECK(due.failed.empty());
  CHECK(state(routes) == State::live);
  due = routes.tend(t0 + kWindow + 1ms, kWindow, kInterval);
  REQUIRE(due.failed.size() == 1);
  CHECK(due.failed[0].first == kServer);
  CHECK(due.failed[0].second == "its direct connection went silent");
  // The table says so; the connection then fails the route.
  auto failure = routes.fail(kServer, t0 + kWindow + 1ms, kInterval);
  CHECK(failure.known);
  CHECK(state(routes) == State::dead);
  CHECK(!routes.find(kServer)->active);

  // Anything heard keeps a route alive.
  DirectRoutes heard_from(Route::automatic);
  bring_up(heard_from, t0);
  CHECK(heard_from.heard(kServer, t0 + 2500ms).known);
  CHECK(heard_from.tend(t0 + kWindow + 1ms, kWindow, kInterval).failed.empty());
  CHECK(heard_from.tend(t0 + 2500ms + kWindow + 1ms, kWindow, kInterval).failed.size() == 1);
}

TEST_CASE(
    "a probe that is never answered fails the route, and a lost LOCATE answer is asked again") {
  DirectRoutes routes(Route::automatic);
  Brokered brokered;
  CHECK(routes.choose(kServer, t0, kWindow, brokered.fn()).locate);
  // No LOCATE answer within the window (a broker restart lost it): ask again, once per window.
  CHECK(routes.tend(t0 + kWindow, kWindow, kInterval).locate.empty());
  CHECK(routes.tend(t0 + kWindow + 1ms, kWindow, kInterval).locate ==
        std::vector<uint64_t>{kServer});
  CHECK(routes.next_check() == t0 + 2 * kWindow + 1ms);
  CHECK(routes.tend(t0 + kWindow + 2ms, kWindow, kInterval).locate.empty());

  routes.probing(kServer, t0 + 4s);
  auto due = routes.tend(t0 + 4s + kWindow + 1ms, kWindow, kInterval);
  REQUIRE(due.failed.size() == 1);
  CHECK(due.failed[0].second == "no answer on its direct endpoint");
}

TEST_CASE("the backoff starts at the heartbeat interval, doubles up to its cap, and is reset") {
  DirectRoutes routes(Route::automatic);
  Brokered brokered;
  auto now = t0;
  CHECK(routes.choose(kServer, now, kWindow, brokered.fn()).locate);
  std::vector<std::chrono::milliseconds> backoffs;
  for (int i = 0; i < 8; ++i) {
    // The try fails (no direct endpoint, say): dead until its backoff ends.
    auto failure = routes.fail(kServer, now, kInterval);
    REQUIRE(failure.known);
    const auto* e = routes.find(kServer);
    backoffs.push_back(e->backoff);
    CHECK(e->retry_at == now + e->backoff);
    CHECK(routes.next_check() <= e->retry_at);
    // route=auto: the broker meanwhile, and no new try before the backoff ends.
    auto c = routes.choose(kServer, e->retry_at - 1ms, kWindow, brokered.fn());
    CHECK(c.way == Way::broker);
    CHECK(!c.locate);
    CHECK(state(routes) == State::dead);
    now = e->retry_at;
    c = routes.choose(kServer, now, kWindow, brokered.fn());  // the next request tries again
    CHECK(c.locate);
    CHECK(c.way == Way::broker);
    CHECK(state(routes) == State::locating);
  }
  CHECK(backoffs == std::vector<std::chrono::milliseconds>{1s, 2s, 4s, 8s, 16s, 30s, 30s, 30s});
  CHECK(DirectRoutes::kMaxBackoff == 30s);

  // A route that comes up forgets its failures: the next one backs off from the start.
  routes.probing(kServer, now);
  CHECK(routes.heard(kServer, now).up);
  CHECK(routes.find(kServer)->backoff == 0ms);
  (void)routes.fail(kServer, now + 1s, kInterval);
  CHECK(routes.find(kServer)->backoff == kInterval);

  // Failing a server without a route changes nothing.
  CHECK(!routes.fail(kServer + 1, now, kInterval).known);
  CHECK(routes.find(kServer + 1) == nullptr);
}

TEST_CASE("route=auto: a failed route sends its server's requests through the broker again") {
  DirectRoutes routes(Route::automatic);
  Brokered brokered;
  bring_up(routes, t0);
  REQUIRE(routes.choose(kServer, t0, kWindow, brokered.fn()).way == Way::direct);
  auto failure = routes.fail(kServer, t0 + 1s, kInterval);
  CHECK(failure.was_active);  // requests in flight on it go through the broker
  CHECK(failure.held.empty());
  auto c = routes.choose(kServer, t0 + 1s, kWindow, brokered.fn());
  CHECK(c.way == Way::broker);
  CHECK(!c.locate);
  // A dead route without held requests waits for the next request to be tried again.
  (void)routes.tend(t0 + 10s, kWindow, kInterval);
  CHECK(state(routes) == State::dead);
  CHECK(routes.choose(kServer, t0 + 10s, kWindow, brokered.fn()).locate);
  // A failure before the route was used was not active.
  CHECK(!routes.fail(kServer, t0 + 11s, kInterval).was_active);
}

TEST_CASE("route=direct: requests are held until the route is live, and refused while it is dead") {
  DirectRoutes routes(Route::direct);
  Brokered brokered;
  auto c = routes.choose(kServer, t0, kWindow, brokered.fn());
  CHECK(c.locate);
  CHECK(c.way == Way::hold);
  routes.hold(kServer, request("first"));
  CHECK(routes.choose(kServer, t0, kWindow, brokered.fn()).way == Way::hold);
  routes.hold(kServer, request("second"));
  routes.probing(kServer, t0 + 1ms);
  CHECK(routes.choose(kServer, t0 + 1ms, kWindow, brokered.fn()).way == Way::hold);
  routes.hold(kServer, request("third"));
  CHECK(routes.find(kServer)->held.size() == 3);

  // A server that goes away while requests wait for its route keeps the route.
  CHECK(!routes.forget(kServer));

  // Up: the held requests go now, in their order, and the route is active at once (nothing
  // went through the broker).
  auto heard = routes.heard(kServer, t0 + 2ms);
  CHECK(heard.up);
  REQUIRE(heard.ready.size() == 3);
  CHECK(text_of(heard.ready[0]) == "first");
  CHECK(text_of(heard.ready[1]) == "second");
  CHECK(text_of(heard.ready[2]) == "third");
  CHECK(routes.find(kServer)->held.empty());
  CHECK(routes.find(kServer)->active);
  CHECK(routes.choose(kServer, t0 + 3ms, kWindow, brokered.fn()).way == Way::direct);
  CHECK(brokered.asked == 0);

  // Dead: refused until the backoff ends; then the next request tries again, held meanwhile.
  auto failure = routes.fail(kServer, t0 + 1s, kInterval);
  CHECK(failure.was_active);
  CHECK(failure.held.empty());
  c = routes.choose(kServer, t0 + 1s, kWindow, brokered.fn());
  CHECK(c.way == Way::refuse);
  CHECK(!c.locate);
  c = routes.choose(kServer, t0 + 1s + kInterval, kWindow, brokered.fn());
  CHECK(c.locate);
  CHECK(c.way == Way::hold);
  routes.hold(kServer, request("fourth"));

  // A failure hands the held requests back, to be failed.
  failure = routes.fail(kServer, t0 + 3s, kInterval);
  REQUIRE(failure.held.size() == 1);
  CHECK(text_of(failure.held[0]) == "fourth");
  CHECK(routes.find(kServer)->held.empty());
  CHECK(routes.find(kServer)->backoff == 2 * kInterval);
}

TEST_CASE("a server that went away is forgotten; a new or another broker is told again") {
  DirectRoutes routes(Route::automatic);
  Brokered brokered;
  constexpr uint64_t kLocating = 1, kLive = 2, kDead = 3;
  routes.choose(kLocating, t0, kWindow, brokered.fn());
  routes.choose(kLive, t0, kWindow, brokered.fn());
  routes.probing(kLive, t0);
  REQUIRE(routes.heard(kLive, t0).up);
  routes.choose(kDead, t0, kWindow, brokered.fn());
  (void)routes.fail(kDead, t0, kInterval);

  // A restarted broker: a LOCATE for each server whose route is not dead.
  auto servers = routes.not_dead();
  std::sort(servers.begin(), servers.end());
  CHECK(servers == std::vector<uint64_t>{kLocating, kLive});
  // Another broker: the routes still locating ask it, each waiting a full window from now.
  CHECK(routes.locate_again(t0 + 2s) == std::vector<uint64_t>{kLocating});
  CHECK(routes.find(kLocating)->since == t0 + 2s);
  CHECK(routes.tend(t0 + 2s + kWindow, kWindow, kInterval).locate.empty());

  // A server that went away: located again on the next request.
  CHECK(routes.forget(kLive));
  CHECK(routes.find(kLive) == nullptr);
  CHECK(!routes.forget(kLive));
  CHECK(routes.choose(kLive, t0 + 3s, kWindow, brokered.fn()).locate);
  routes.clear();
  CHECK(routes.empty());
}

TEST_CASE("each client uses one lane of a server, chosen by its id") {
  const std::vector<std::string> lanes{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2",
                                       "tcp://127.0.0.1:3"};
  CHECK(DirectRoutes::pick_endpoint(lanes, 0) == lanes[0]);
  CHECK(DirectRoutes::pick_endpoint(lanes, 4) == lanes[1]);
  CHECK(DirectRoutes::pick_endpoint(lanes, 5) == lanes[2]);
  // A lane without an endpoint passes the choice on; none at all: no direct path.
  CHECK(DirectRoutes::pick_endpoint({"", "tcp://127.0.0.1:2", ""}, 0) == "tcp://127.0.0.1:2");
  CHECK(DirectRoutes::pick_endpoint({"", "tcp://127.0.0.1:2", ""}, 2) == "tcp://127.0.0.1:2");
  CHECK(DirectRoutes::pick_endpoint({"", ""}, 7).empty());
  CHECK(DirectRoutes::pick_endpoint({}, 7).empty());
}

TEST_CASE("a probe that could not leave goes again soon; a live route's unsent beat says so") {
  DirectRoutes routes(Route::automatic);
  Brokered none;
  routes.choose(kServer, t0, kWindow, none.fn());
  routes.probing(kServer, t0);
  CHECK(routes.tend(t0, kWindow, kInterval).heartbeat == std::vector<uint64_t>{kServer});
  // The connection is not made yet: the probe is sent again in 2 ms, not after a whole interval.
  CHECK(!routes.beat_unsent(kServer, t0));
  CHECK(routes.next_check() == t0 + 2ms);
  CHECK(routes.tend(t0 + 2ms, kWindow, kInterval).heartbeat == std::vector<uint64_t>{kServer});
  REQUIRE(routes.heard(kServer, t0 + 3ms).up);
  // Live: an unsent heartbeat is the connection gone, for the connection to judge.
  CHECK(routes.beat_unsent(kServer, t0 + 4ms));
  CHECK(!routes.beat_unsent(kServer + 1, t0 + 4ms));  // unknown
}

TEST_CASE("a probe that finds no connection connects again after 100 ms, then 200, 400, ...") {
  // A CURVE handshake the server refused (the broker's vouch had not reached it yet) is not tried
  // again by libzmq: the route makes the connection anew.
  DirectRoutes routes(Route::direct);
  Brokered none;
  routes.choose(kServer, t0, kWindow, none.fn());
  CHECK_FALSE(routes.reconnect_due(kServer, t0 + 1s));  // locating: no socket yet
  routes.probing(kServer, t0);
  CHECK_FALSE(routes.reconnect_due(kServer, t0 + 99ms));
  CHECK(routes.reconnect_due(kServer, t0 + 100ms));
  CHECK_FALSE(routes.reconnect_due(kServer, t0 + 299ms));
  CHECK(routes.reconnect_due(kServer, t0 + 300ms));
  CHECK_FALSE(routes.reconnect_due(kServer, t0 + 699ms));
  CHECK(routes.reconnect_due(kServer, t0 + 700ms));
  REQUIRE(routes.heard(kServer, t0 + 710ms).up);
  CHECK_FALSE(routes.reconnect_due(kServer, t0 + 10s));  // live: never
  CHECK_FALSE(routes.reconnect_due(kServer + 1, t0));    // unknown
}
