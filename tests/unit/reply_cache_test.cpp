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
// The pipelined requests finish() and cancel() release (none but in the pipelining tests).
thread_local std::vector<ReplyCache::Dependent> released;
ReplyCache::Dependent dependent(uint64_t on, uint64_t request_id) {
  ReplyCache::Dependent d;
  d.on = on;
  d.request_id = request_id;
  d.routing = "r" + std::to_string(request_id);
  return d;
}
}  // namespace

TEST_CASE("a request seen before is answered from the cache, not run again") {
  ReplyCache cache(patro::Limits{});
  zmq::message_t cached;
  CHECK(cache.begin(7, 1, "r1", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  CHECK_FALSE(
      cache.finish(7, 1, body("the reply of a long body, over thirty-three bytes"), released));
  CHECK(cache.begin(7, 1, "r2", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cached.to_string() == "the reply of a long body, over thirty-three bytes");
  CHECK(cache.hits() == 1);
  // Request ids are per client.
  CHECK(cache.begin(8, 1, "r3", ReplyCache::Clock::now(), &cached) == Seen::fresh);
}

TEST_CASE("a cancel before its request keeps it (and every copy) from running; later, a no-op") {
  ReplyCache cache(patro::Limits{});
  zmq::message_t cached;
  const auto now = ReplyCache::Clock::now();
  CHECK(cache.cancel(7, 3, now, released));
  CHECK_FALSE(cache.cancel(7, 3, now, released));  // once
  CHECK(cache.begin(7, 3, "r", now, &cached) == Seen::cancelled);
  CHECK(cache.begin(7, 3, "r", now, &cached) == Seen::cancelled);  // a resent copy
  CHECK_FALSE(cache.finish(7, 3, body("never"), released));
  CHECK(cache.begin(7, 3, "r", now, &cached) == Seen::cancelled);
  CHECK(cache.bytes() == 0);
  // Running or answered: left alone.
  CHECK(cache.begin(7, 4, "r", now, &cached) == Seen::fresh);
  CHECK_FALSE(cache.cancel(7, 4, now, released));
  (void)cache.finish(7, 4, body("ran"), released);
  CHECK_FALSE(cache.cancel(7, 4, now, released));
  CHECK(cache.begin(7, 4, "r", now, &cached) == Seen::answered);
  CHECK(cached.to_string() == "ran");
  // Per client.
  CHECK(cache.begin(8, 3, "r", now, &cached) == Seen::fresh);
}

TEST_CASE("a copy that arrives while the first runs is answered once, at its own route") {
  ReplyCache cache(patro::Limits{});
  zmq::message_t cached;
  CHECK(cache.begin(7, 5, "old", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  CHECK(cache.begin(7, 5, "new", ReplyCache::Clock::now(), &cached) == Seen::running);
  const auto reroute = cache.finish(7, 5, body("done"), released);
  REQUIRE(reroute);
  CHECK(*reroute == "new");
  CHECK_FALSE(cache.finish(7, 5, body("again"), released));  // finished once
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
    (void)cache.finish(1, id, body("x"), released);
  }
  CHECK(cache.begin(1, 1, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::fresh);  // evicted: it would run again
  CHECK(cache.begin(1, 10, "r", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cache.begin(1, 100, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::running);  // still running: kept
}

TEST_CASE("replies older than reply_cache_age go; a gone client's stay, its running ones do not") {
  patro::Limits limits;
  limits.reply_cache_age = 50ms;
  ReplyCache cache(limits);
  zmq::message_t cached;
  CHECK(cache.begin(1, 1, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  (void)cache.finish(1, 1, body("x"), released);
  std::this_thread::sleep_for(80ms);
  CHECK(cache.begin(1, 2, "r", ReplyCache::Clock::now(), &cached) ==
        Seen::fresh);  // evicts the old one
  CHECK(cache.begin(1, 1, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  (void)cache.finish(1, 2, body("y"), released);
  CHECK(cache.bytes() == 1);  // "y" ("x" went with its entry; request 1 runs again)
  // Gone (a broker may say so of a live client that moved brokers and back): its finished replies
  // stay, and a resent copy gets the reply, not a second run.
  cache.forget(1);
  CHECK(cache.bytes() == 1);
  CHECK(cache.begin(1, 2, "r", ReplyCache::Clock::now(), &cached) == Seen::answered);
  CHECK(cached.to_string() == "y");
  // Then they go with age, as any client's.
  std::this_thread::sleep_for(80ms);
  CHECK(cache.begin(1, 3, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh);
  CHECK(cache.bytes() == 0);
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

namespace {
std::string sized(size_t n, char c) {
  return std::string(n, c);
}
}  // namespace

TEST_CASE("the cache holds at most reply_cache_bytes of bodies; the oldest go first, as dropped") {
  patro::Limits limits;
  limits.reply_cache_bytes = 10'000;
  ReplyCache cache(limits);
  zmq::message_t cached;
  const auto now = ReplyCache::Clock::now();
  // Clients 1..4 (in different shards, most likely) finish 1,000-byte replies in turn: 40 of
  // them, four times the bound.
  for (uint64_t id = 1; id <= 10; ++id)
    for (uint64_t client = 1; client <= 4; ++client) {
      REQUIRE(cache.begin(client, id, "r", now, &cached) == Seen::fresh);
      (void)cache.finish(client, id, body(sized(1000, static_cast<char>('a' + client))), released);
      CHECK(cache.bytes() <= limits.reply_cache_bytes);
    }
  CHECK(cache.bytes() == 10'000);
  CHECK(cache.evicted() == 30);
  // The newest ten stay (ids 9 and 10 of every client, and id 8 of clients 3 and 4), answered.
  for (uint64_t client = 1; client <= 4; ++client) {
    CHECK(cache.begin(client, 10, "r", now, &cached) == Seen::answered);
    CHECK(cached.to_string() == sized(1000, static_cast<char>('a' + client)));
    CHECK(cache.begin(client, 9, "r", now, &cached) == Seen::answered);
    // The oldest were dropped: a resend is answered outcome_unknown, never run again.
    CHECK(cache.begin(client, 1, "r", now, &cached) == Seen::dropped);
    CHECK(cache.begin(client, 7, "r", now, &cached) == Seen::dropped);
  }
  CHECK(cache.begin(1, 8, "r", now, &cached) == Seen::dropped);
  CHECK(cache.begin(2, 8, "r", now, &cached) == Seen::dropped);
  CHECK(cache.begin(3, 8, "r", now, &cached) == Seen::answered);
  CHECK(cache.begin(4, 8, "r", now, &cached) == Seen::answered);
}

TEST_CASE("one client's big replies are bounded too; requests running are never dropped") {
  patro::Limits limits;
  limits.reply_cache_bytes = 4096;
  ReplyCache cache(limits);
  zmq::message_t cached;
  const auto now = ReplyCache::Clock::now();
  REQUIRE(cache.begin(9, 1000, "r", now, &cached) == Seen::fresh);  // stays running
  for (uint64_t id = 1; id <= 700; ++id) {
    REQUIRE(cache.begin(9, id, "r", now, &cached) == Seen::fresh);
    (void)cache.finish(9, id, body(sized(1024, 'z')), released);
  }
  CHECK(cache.bytes() == 4096);
  CHECK(cache.evicted() == 696);
  CHECK(cache.begin(9, 1000, "r", now, &cached) == Seen::running);
  CHECK(cache.begin(9, 700, "r", now, &cached) == Seen::answered);
  CHECK(cache.begin(9, 696, "r", now, &cached) == Seen::dropped);
  // A reply larger than the whole bound is sent, but not kept.
  REQUIRE(cache.begin(9, 2000, "r", now, &cached) == Seen::fresh);
  (void)cache.finish(9, 2000, body(sized(8192, 'q')), released);
  CHECK(cache.bytes() <= 4096);
  CHECK(cache.begin(9, 2000, "r", now, &cached) == Seen::dropped);
  // The client is gone: its replies stay within the bound, as any client's.
  cache.forget(9);
  CHECK(cache.bytes() <= 4096);
}

TEST_CASE("entries forgotten by count or age give their bytes back") {
  patro::Limits limits;
  limits.reply_cache_entries = 2;
  ReplyCache cache(limits);
  zmq::message_t cached;
  const auto now = ReplyCache::Clock::now();
  for (uint64_t id = 1; id <= 100; ++id) {
    REQUIRE(cache.begin(3, id, "r", now, &cached) == Seen::fresh);
    (void)cache.finish(3, id, body(sized(100, 'k')), released);
  }
  // The last two finished, and at most one more being replaced: never all 100.
  CHECK(cache.bytes() <= 300);
  CHECK(cache.evicted() == 0);
}

TEST_CASE("lanes finishing replies of many clients at once keep the byte bound") {
  patro::Limits limits;
  limits.reply_cache_bytes = 64 << 10;
  ReplyCache cache(limits);
  std::vector<std::thread> lanes;
  for (uint64_t t = 0; t < 4; ++t)
    lanes.emplace_back([&cache, t] {
      zmq::message_t cached;
      for (uint64_t i = 0; i < 2000; ++i) {
        const uint64_t client = 1 + t * 100 + i % 50;
        if (cache.begin(client, i, "r", ReplyCache::Clock::now(), &cached) == Seen::fresh)
          (void)cache.finish(client, i, body(sized(512, 'm')), released);
        if (i % 500 == 0) cache.forget(client);
      }
    });
  for (auto& l : lanes) l.join();
  CHECK(cache.bytes() <= limits.reply_cache_bytes);
  CHECK(cache.evicted() > 0);
}

TEST_CASE("a pipelined request waits for the request it was made on, and is released in order") {
  ReplyCache cache(patro::Limits{});
  zmq::message_t cached, reply;
  const auto now = ReplyCache::Clock::now();
  // Answered already: the reply at once.
  CHECK(cache.begin(7, 1, "r", now, &cached) == Seen::fresh);
  (void)cache.finish(7, 1, body("the first reply, a body over thirty-three bytes"), released);
  auto d = dependent(1, 2);
  CHECK(cache.await_result(7, d, &reply) == ReplyCache::Target::ready);
  CHECK(reply.to_string() == "the first reply, a body over thirty-three bytes");
  // Running (or not arrived): parked, released by its finish in arrival order.
  CHECK(cache.begin(7, 3, "r", now, &cached) == Seen::fresh);
  auto d4 = dependent(3, 4), d5 = dependent(3, 5), d6 = dependent(9, 6);
  CHECK(cache.await_result(7, d4, &reply) == ReplyCache::Target::waiting);
  CHECK(cache.await_result(7, d5, &reply) == ReplyCache::Target::waiting);
  CHECK(cache.await_result(7, d6, &reply) == ReplyCache::Target::waiting);  // 9: not here yet
  released.clear();
  (void)cache.finish(7, 3, body("three"), released);
  REQUIRE(released.size() == 2);
  CHECK(released[0].request_id == 4);
  CHECK(released[1].request_id == 5);
  CHECK(released[0].state == ReplyCache::Dependent::On::ready);
  CHECK(released[1].on_reply.to_string() == "three");
  released.clear();
  // Cancelled: released as cancelled; later ones learn it at once.
  CHECK(cache.cancel(7, 9, now, released));
  REQUIRE(released.size() == 1);
  CHECK(released[0].request_id == 6);
  CHECK(released[0].state == ReplyCache::Dependent::On::cancelled);
  released.clear();
  auto d7 = dependent(9, 7);
  CHECK(cache.await_result(7, d7, &reply) == ReplyCache::Target::cancelled);
  // A gone client's waiting requests go with it.
  auto d8 = dependent(20, 8);
  CHECK(cache.await_result(7, d8, &reply) == ReplyCache::Target::waiting);
  cache.forget(7);
  CHECK(cache.begin(7, 20, "r", now, &cached) == Seen::fresh);
  (void)cache.finish(7, 20, body("twenty"), released);
  CHECK(released.empty());
}

TEST_CASE("the pipelined requests waiting per client are bounded") {
  patro::Limits limits;
  limits.reply_cache_entries = 4;
  ReplyCache cache(limits);
  zmq::message_t reply;
  for (uint64_t i = 0; i < 4; ++i) {
    auto d = dependent(100, 200 + i);
    CHECK(cache.await_result(7, d, &reply) == ReplyCache::Target::waiting);
  }
  auto d = dependent(100, 300);
  CHECK(cache.await_result(7, d, &reply) == ReplyCache::Target::full);
  auto other = dependent(100, 300);
  CHECK(cache.await_result(8, other, &reply) == ReplyCache::Target::waiting);  // per client
}
