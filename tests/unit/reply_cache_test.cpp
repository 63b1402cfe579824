// The server's reply cache: a request id seen before is answered from it, a copy of one still
// running is routed to when it finishes, and the bounds hold.
#include <doctest/doctest.h>

#include <thread>

#include "reply_cache.hpp"

using namespace std::chrono_literals;
using patro::detail::ReplyCache;
using Seen = ReplyCache::Seen;

namespace {
zmq::message_t body(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}
}  // namespace

TEST_CASE("a request seen before is answered from the cache, not run again") {
  ReplyCache cache(patro::Limits{});
  zmq::message_t cached;
  CHECK(cache.begin(7, 1, "r1", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  CHECK_FALSE(cache.finish(7, 1, body("the reply of a long body, over thirty-three bytes")));
  CHECK(cache.begin(7, 1, "r2", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cached.to_string() == "the reply of a long body, over thirty-three bytes");
  CHECK(cache.hits() == 1);
  // Request ids are per client.
  CHECK(cache.begin(8, 1, "r3", ReplyCache::Clock::now(), &cached) == Seen::fresh);
}

TEST_CASE("a copy that arrives while the first runs is answered once, at its own route") {
  ReplyCache cache(patro::Limits{});
  zmq::message_t cached;
  CHECK(cache.begin(7, 5, "old", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  CHECK(cache.begin(7, 5, "new", ReplyCache::Clock::now(), &cached) == Seen::running);
  const auto reroute = cache.finish(7, 5, body("done"));
  REQUIRE(reroute);
  CHECK(*reroute == "new");
  CHECK_FALSE(cache.finish(7, 5, body("again")));  // finished once
  CHECK(cache.begin(7, 5, "third", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cached.to_string() == "done");
}

TEST_CASE(
    "the cache keeps at most reply_cache_entries finished replies per client, never one running") {
  patro::Limits limits;
  limits.reply_cache_entries = 3;
  ReplyCache cache(limits);
  zmq::message_t cached;
  CHECK(cache.begin(1, 100, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::fresh);  // stays running
  for (uint64_t id = 1; id <= 10; ++id) {
    CHECK(cache.begin(1, id, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
    (void)cache.finish(1, id, body("x"));
  }
  CHECK(cache.begin(1, 1, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::fresh);  // evicted: it would run again
  CHECK(cache.begin(1, 10, "r", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cache.begin(1, 100, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::running);  // still running: kept
}

TEST_CASE("replies older than reply_cache_age go; a gone client's stay until then") {
  patro::Limits limits;
  limits.reply_cache_age = 50ms;
  ReplyCache cache(limits);
  zmq::message_t cached;
  CHECK(cache.begin(1, 1, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  (void)cache.finish(1, 1, body("x"));
  std::this_thread::sleep_for(80ms);
  CHECK(cache.begin(1, 2, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::fresh);  // evicts the old one
  CHECK(cache.begin(1, 1, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  (void)cache.finish(1, 2, body("y"));
  // Gone (a broker that stalled may say so of a live client): a resent copy is still answered.
  cache.forget(1);
  CHECK(cache.begin(1, 2, "r", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cached.to_string() == "y");
  // A request a gone client left running (a lock wait dropped with it) is forgotten at once: a
  // copy runs afresh.
  CHECK(cache.begin(7, 1, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  cache.forget(7);
  CHECK(cache.begin(7, 1, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
}

TEST_CASE("a broker went away: its clients are unconfirmed until they are heard from again") {
  patro::Limits limits;
  ReplyCache cache(limits);
  zmq::message_t cached;
  const auto now = ReplyCache::Clock::now();
  // Clients 1 and 2 came through the first broker (plain routing), 3 through the second.
  CHECK(cache.begin(1, 1, "r1", now, &cached) == Seen::fresh);
  CHECK(cache.begin(2, 1, "r2", now, &cached) == Seen::fresh);
  CHECK(cache.begin(3, 1, patro::detail::broker_routing(1, "r3"), now, &cached) == Seen::fresh);
  CHECK(cache.mark_unconfirmed(0) == 2);
  // 1 is heard from again (a request); 2 is not; 3 was never the first broker's.
  CHECK(cache.begin(1, 2, "r1", now, &cached) == Seen::fresh);
  CHECK(cache.unconfirmed(0) == std::vector<uint64_t>{2});
  CHECK(cache.unconfirmed(0).empty());  // the marks are cleared
  // A client that attached through another broker (CLIENT_AT) is no longer the first broker's.
  CHECK(cache.mark_unconfirmed(1) == 1);
  cache.attach(3, 0, now);
  CHECK(cache.unconfirmed(1).empty());
  CHECK_FALSE(cache.gone_at(3, 1));  // the second broker's CLIENT_GONE no longer stands
  CHECK(cache.gone_at(3, 0));
  CHECK(cache.gone_at(99, 1));  // unknown: any broker's word stands
}
