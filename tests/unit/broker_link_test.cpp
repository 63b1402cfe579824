// The client's broker link on its own, with a fake clock and no broker: how long a broker may be
// silent (one broker, several, before and after its first heartbeat), the heartbeats it says are
// due, what a broker instance means (first, same, restarted; a move starts over), and the servers
// it remembers for the LOCATEs after a move. The lanes' links to their brokers keep the same
// Heartbeats, tested here too.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

#include "broker_link.hpp"

using namespace patro;
using namespace std::chrono_literals;
using detail::BrokerLink;
using detail::Heartbeats;
using detail::LinkTiming;
using Clock = BrokerLink::Clock;

namespace {

const Clock::time_point t0 = Clock::time_point{} + 1h;

ClientOptions options_with(std::chrono::milliseconds interval, int liveness) {
  ClientOptions o;
  o.heartbeat.interval = interval;
  o.heartbeat.liveness = liveness;
  return o;
}

// A link to brokers nobody listens at (a connect is asynchronous: nothing is ever sent).
struct Link {
  explicit Link(std::vector<std::string> brokers, ClientOptions o = options_with(1000ms, 3))
      : options(o), timing(options.heartbeat), link(ctx, brokers, options, curve, 42, timing) {}
  zmq::context_t ctx{1};
  ClientOptions options;
  CurveOptions curve;
  LinkTiming timing;
  BrokerLink link;
};

const std::vector<std::string> kOne = {"tcp://127.0.0.1:1"};
const std::vector<std::string> kTwo = {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"};

}  // namespace

TEST_CASE("silence allowed: the whole window, or 1.75 intervals with several brokers beating") {
  using detail::silence_allowed;
  CHECK(silence_allowed(false, true, 3000ms, 1000ms) == 3000ms);
  CHECK(silence_allowed(false, false, 3000ms, 1000ms) == 3000ms);
  CHECK(silence_allowed(true, true, 3000ms, 1000ms) == 1750ms);
  // Not heard since the move: the whole window, or a slow connect moves on and on.
  CHECK(silence_allowed(true, false, 3000ms, 1000ms) == 3000ms);
  // A window shorter than 1.75 intervals stays the limit.
  CHECK(silence_allowed(true, true, 1500ms, 1000ms) == 1500ms);
}

TEST_CASE("heartbeats: a beat each interval, silence past the window, a new window after it") {
  Heartbeats h;
  h.start(t0, 100ms);
  CHECK_FALSE(h.beat_due(t0 + 99ms, 100ms));
  CHECK(h.beat_due(t0 + 100ms, 100ms));
  CHECK_FALSE(h.beat_due(t0 + 150ms, 100ms));  // the next is due at 200 ms
  CHECK(h.next_beat() == t0 + 200ms);
  h.beat_within(t0 + 150ms, 20ms);  // a faster interval learnt: at most 20 ms from now
  CHECK(h.next_beat() == t0 + 170ms);
  h.beat_within(t0 + 150ms, 500ms);  // a slower one does not put it off
  CHECK(h.next_beat() == t0 + 170ms);

  CHECK_FALSE(h.overdue(t0 + 300ms, 300ms));
  CHECK(h.overdue(t0 + 301ms, 300ms));
  CHECK(h.went_silent(t0 + 301ms));        // newly: worth a log line
  CHECK_FALSE(h.went_silent(t0 + 700ms));  // still silent: not again
  CHECK(h.silent());
  CHECK_FALSE(h.overdue(t0 + 900ms, 300ms));  // a window of its own from 700 ms
  CHECK(h.heard(t0 + 950ms));                 // it had gone silent
  CHECK_FALSE(h.silent());
  CHECK_FALSE(h.heard(t0 + 960ms));
  h.wait_again(t0 + 2000ms);  // a new window, not silent
  CHECK_FALSE(h.silent());
  CHECK_FALSE(h.overdue(t0 + 2300ms, 300ms));
}

TEST_CASE("one broker: silent past its whole window, each wait after that a window of its own") {
  Link l(kOne);
  REQUIRE_FALSE(l.link.several());
  l.link.move(0, 1, t0);  // attached at t0 (a move opens the socket without a handshake)
  CHECK(l.link.endpoint() == kOne[0]);
  CHECK_FALSE(l.link.overdue(t0 + 3000ms));
  const auto text = l.link.overdue(t0 + 3001ms);
  REQUIRE(text);
  CHECK(text->find("tcp://127.0.0.1:1") != std::string::npos);
  CHECK(text->find("3000 ms") != std::string::npos);
  CHECK_FALSE(l.link.overdue(t0 + 3002ms));  // its own window again
  CHECK(l.link.went_silent(t0 + 3002ms));
  CHECK_FALSE(l.link.went_silent(t0 + 3003ms));
}

TEST_CASE("several brokers: the whole window until the broker is heard, then 1.75 intervals") {
  Link l(kTwo);
  REQUIRE(l.link.several());
  l.link.move(0, 1, t0);
  CHECK(l.link.instance() == 0);
  CHECK_FALSE(l.link.overdue(t0 + 2000ms));  // not beating yet: the whole 3000 ms
  CHECK(l.link.move_due() == t0 + 3001ms);
  CHECK(l.link.instance(77) == BrokerLink::Instance::first);
  CHECK(l.link.move_due() == t0 + 1751ms);
  const auto text = l.link.overdue(t0 + 2000ms);
  REQUIRE(text);
  CHECK(text->find("1750 ms") != std::string::npos);
}

TEST_CASE("a broker's instance: the first one names it, a new one is a restart, 0 says nothing") {
  Link l(kTwo);
  l.link.move(0, 1, t0);
  CHECK(l.link.instance(0) == BrokerLink::Instance::same);
  CHECK(l.link.instance(5) == BrokerLink::Instance::first);
  CHECK(l.link.instance(5) == BrokerLink::Instance::same);
  CHECK(l.link.instance(6) == BrokerLink::Instance::restarted);
  CHECK(l.link.instance() == 6);
  // A move to the next broker: its first heartbeat names it without counting as a restart.
  const std::string from = l.link.move(std::nullopt, 2, t0 + 1s);
  CHECK(from == kTwo[0]);
  CHECK(l.link.endpoint() == kTwo[1]);
  CHECK(l.link.instance() == 0);
  CHECK(l.link.instance(9) == BrokerLink::Instance::first);
  // And round the list.
  CHECK(l.link.move(std::nullopt, 3, t0 + 2s) == kTwo[1]);
  CHECK(l.link.endpoint() == kTwo[0]);
  CHECK(l.link.watch_handle() != nullptr);  // several brokers: a drop watch on each socket
  CHECK_FALSE(l.link.dropped());            // never connected: nothing dropped
}

TEST_CASE("the heartbeats it sends: at once after a move, then each interval") {
  Link l(kOne, options_with(200ms, 3));
  l.link.move(0, 1, t0);
  CHECK(l.link.next_beat() == t0);
  l.link.beat(t0);
  CHECK(l.link.next_beat() == t0 + 200ms);
  l.link.beat(t0 + 100ms);  // not due: nothing changes
  CHECK(l.link.next_beat() == t0 + 200ms);
  l.link.beat(t0 + 250ms);
  CHECK(l.link.next_beat() == t0 + 450ms);
}

TEST_CASE("the servers it has seen us ask for, for the LOCATEs after a move or a restart") {
  Link l(kOne);
  l.link.note_server(0);  // a control request: no server
  l.link.note_server(7);
  l.link.note_server(7);
  l.link.note_server(8);
  l.link.note_server(7);
  CHECK(l.link.servers_seen().size() == 2);
  l.link.forget_server(7);  // it went away (SERVER_DOWN)
  CHECK(l.link.servers_seen().count(7) == 0);
  l.link.note_server(7);  // the one noted last was forgotten too: noted again
  CHECK(l.link.servers_seen().count(7) == 1);
}
