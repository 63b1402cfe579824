// The worker's job queue on its write-ahead log (no sockets): pushes answered once on disk, jobs
// and leases back after a reopen, acknowledged jobs gone, a push_many with an oversized job
// refused whole, and a damaged log refused.
#include <doctest/doctest.h>

#include <thread>

#include "../support/process.hpp"
#include "job_queue.hpp"
#include "worker_replies.hpp"

using namespace std::chrono_literals;
using patro::Value;
using patro::ValueArray;
using patro::test::read_file;
using patro::test::Replies;
using patro::test::TempDir;
using patro::test::write_file;
using patro::worker::JobQueue;

TEST_CASE("pushed jobs, leases and acks come back after a reopen") {
  TempDir dir;
  const std::string path = dir.file("queue-jobs.wal");
  auto replies = std::make_shared<Replies>();
  int64_t id_taken = 0, delivery = 0;
  {
    JobQueue q("jobs", 600000ms, path);
    for (int i = 0; i < 10; ++i) q.push("job" + std::to_string(i), Value(), replies->make(i));
    for (int i = 0; i < 10; ++i) CHECK(replies->wait(i) == i + 1);  // the job's id
    q.take(0, replies->make(100, 7));
    Value got = replies->wait(100);
    CHECK(got[1] == "job0");
    q.take(0, replies->make(101, 7));
    got = replies->wait(101);
    q.ack(got[0].as<int64_t>(), got[2].as<int64_t>(), replies->make(102, 7));
    CHECK(replies->wait(102) == true);
    q.take(0, replies->make(103, 7));
    got = replies->wait(103);
    id_taken = got[0].as<int64_t>();
    delivery = got[2].as<int64_t>();
    // A push after the take is answered after its record too (the take's record before it).
    q.push("job10", Value(), replies->make(104));
    CHECK(replies->wait(104) == 11);
    CHECK(q.size() == 8);
  }
  JobQueue q("jobs", 600000ms, path);
  CHECK(q.size() == 8);    // job3..job10
  CHECK(q.leased() == 2);  // job0 and job2 still leased, with no connection now
  CHECK(q.peek() == "job3");
  // The lease's delivery number survives: its holder can still acknowledge it.
  q.ack(id_taken, delivery, replies->make(200));
  CHECK(replies->wait(200) == true);
  CHECK(q.leased() == 1);
}

TEST_CASE("push_many with one job over the record limit is refused whole") {
  TempDir dir;
  const std::string path = dir.file("queue-big.wal");
  patro::worker::WalOptions options;
  options.max_record_bytes = 500;
  auto replies = std::make_shared<Replies>();
  {
    JobQueue q("big", 600000ms, path, options);
    ValueArray jobs{"a", std::string(1000, 'b'), "c"};
    CHECK_THROWS_AS(q.push_many(jobs, Value(), replies->make(1)), patro::Error);
    CHECK(q.size() == 0);
    CHECK_THROWS_AS(q.push(std::string(1000, 'b'), Value(), replies->make(2)), patro::Error);
    q.push_many(ValueArray{"a", "c"}, Value(), replies->make(3));
    CHECK(replies->wait(3).size() == 2);
  }
  JobQueue q("big", 600000ms, path, options);
  CHECK(q.size() == 2);
}

TEST_CASE("a damaged queue log stops the open; a torn tail loses only the unfinished write") {
  TempDir dir;
  const std::string path = dir.file("queue-jobs.wal");
  auto replies = std::make_shared<Replies>();
  {
    JobQueue q("jobs", 600000ms, path);
    for (int i = 0; i < 20; ++i) q.push(i, Value(), replies->make(i));
    (void)replies->wait(19);
  }
  const std::string good = read_file(path);
  std::string bad = good;
  bad[good.size() / 3] ^= 0x20;
  write_file(path, bad);
  CHECK_THROWS_AS((JobQueue{"jobs", 600000ms, path}), patro::Error);
  CHECK(read_file(path) == bad);
  write_file(path, good.substr(0, good.size() - 4));  // the last push torn
  JobQueue q("jobs", 600000ms, path);
  CHECK(q.size() == 19);
}

namespace {
// Takes n jobs (take_many, no wait) and answers their jobs in the order given.
ValueArray take_n(JobQueue& q, Replies& replies, uint64_t request, int64_t n) {
  q.take_many(n, 0, replies.make(request, 7));
  const Value got = replies.wait(request);
  return *got.if_array();
}
std::vector<std::string> jobs_of(const ValueArray& taken) {
  std::vector<std::string> out;
  for (const Value& t : taken) out.push_back(t[1].as<std::string>());
  return out;
}
// Polls (bounded) until the queue has n ready jobs.
bool wait_ready(JobQueue& q, int64_t n) {
  for (int i = 0; i < 500; ++i) {
    if (q.size() == n) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}
}  // namespace

TEST_CASE("jobs delivered again come back in push order, oldest first") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("order", 200ms, "");
  for (const char* j : {"a", "b", "c"}) q.push(j, Value(), replies->make(0));
  CHECK(jobs_of(take_n(q, *replies, 1, 3)) == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(wait_ready(q, 3));  // every lease ran out
  CHECK(jobs_of(take_n(q, *replies, 2, 3)) == std::vector<std::string>{"a", "b", "c"});
  // Taken by a connection that goes: back in the same order, ahead of a later push.
  q.push("d", Value(), replies->make(3));
  q.client_gone(7);
  CHECK(jobs_of(take_n(q, *replies, 4, 4)) == std::vector<std::string>{"a", "b", "c", "d"});
}

namespace {
Value opts(std::initializer_list<std::pair<const std::string, Value>> items) {
  return Value::hash(items);
}
// The answers of touch, bury and kick (deferred until on disk), each under a request id of its own.
uint64_t next_request = 100000;
bool touch(JobQueue& q, Replies& r, int64_t id, int64_t delivery) {
  const uint64_t req = next_request++;
  q.touch(id, delivery, r.make(req));
  return r.wait(req) == true;
}
bool bury(JobQueue& q, Replies& r, int64_t id, int64_t delivery) {
  const uint64_t req = next_request++;
  q.bury(id, delivery, r.make(req));
  return r.wait(req) == true;
}
int64_t kick(JobQueue& q, Replies& r, int64_t n) {
  const uint64_t req = next_request++;
  q.kick(n, r.make(req));
  return r.wait(req).as<int64_t>();
}
int64_t stat(JobQueue& q, const char* key) {
  return q.stats()[key].as<int64_t>();
}
// Polls (bounded) until stats()[key] is n.
bool wait_stat(JobQueue& q, const char* key, int64_t n) {
  for (int i = 0; i < 500; ++i) {
    if (stat(q, key) == n) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}
}  // namespace

TEST_CASE("priorities: lower first, push order within one, also when delivered again") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("prio", 200ms, "");
  q.push("low1", opts({{"priority", 10}}), replies->make(0));
  q.push("high1", opts({{"priority", -5}}), replies->make(0));
  q.push("mid", Value(), replies->make(0));
  q.push_many(ValueArray{"high2", "high3"}, opts({{"priority", -5}}), replies->make(0));
  q.push("low2", opts({{"priority", 10}}), replies->make(0));
  CHECK(q.peek() == "high1");
  const std::vector<std::string> order{"high1", "high2", "high3", "mid", "low1", "low2"};
  CHECK(jobs_of(take_n(q, *replies, 1, 6)) == order);
  REQUIRE(wait_ready(q, 6));
  CHECK(jobs_of(take_n(q, *replies, 2, 6)) == order);
}

TEST_CASE("a delayed job is ready only after its delay; a waiting take gets it then") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("later", 600000ms, "");
  q.push("later", opts({{"delay_ms", 500}}), replies->make(0));
  q.push("now", Value(), replies->make(0));
  CHECK(stat(q, "delayed") == 1);
  CHECK(jobs_of(take_n(q, *replies, 1, 5)) == std::vector<std::string>{"now"});
  q.take(5000, replies->make(2, 7));  // waits, answered when the delay ends
  CHECK(replies->wait(2)[1] == "later");
  CHECK(stat(q, "delayed") == 0);
  CHECK(stat(q, "leased") == 2);
}

TEST_CASE("time-to-run: a job's own lease length; touch restarts it; take_leased overrides it") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("ttr", 600000ms, "");
  q.push("short", opts({{"ttr_ms", 1000}}), replies->make(0));
  q.push("long", Value(), replies->make(0));
  const ValueArray got = take_n(q, *replies, 1, 2);
  const int64_t id = got[0][0].as<int64_t>(), delivery = got[0][2].as<int64_t>();
  // Touched every 100 ms for 1.2 s: never past its 1 s time-to-run.
  for (int i = 0; i < 12; ++i) {
    std::this_thread::sleep_for(100ms);
    CHECK(touch(q, *replies, id, delivery));
  }
  CHECK(q.leased() == 2);
  CHECK_FALSE(touch(q, *replies, id, delivery + 100));
  CHECK_FALSE(touch(q, *replies, 999, 1));
  REQUIRE(wait_ready(q, 1));  // not touched: back after its time-to-run; "long" stays leased
  CHECK(q.peek() == "short");
  CHECK(q.leased() == 1);
  CHECK_FALSE(touch(q, *replies, id, delivery));  // that lease is over
}

TEST_CASE("bad push options are refused with a clear error, and nothing is queued") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("bad", 600000ms, "");
  for (const Value& o : {Value("fast"), opts({{"priority", "high"}}), opts({{"delay_ms", -1}}),
                         opts({{"ttr_ms", int64_t{1} << 40}}), opts({{"colour", 1}})}) {
    CHECK_THROWS_AS(q.push("x", o, replies->make(1)), patro::Error);
    CHECK_THROWS_AS(q.push_many(ValueArray{"x"}, o, replies->make(1)), patro::Error);
  }
  CHECK(stat(q, "pushed") == 0);
  CHECK(q.size() == 0);
  CHECK_THROWS_AS(q.kick(0, replies->make(9)), patro::Error);
  CHECK_THROWS_AS(q.buried(-1), patro::Error);
}

TEST_CASE("max deliveries: buried after the last one; buried, kick and stats") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("dead", 600000ms, "", {}, 2);
  q.push("bad", Value(), replies->make(0));
  q.push("good", Value(), replies->make(0));
  for (int round = 0; round < 2; ++round) {
    const ValueArray got = take_n(q, *replies, 10 + round, 1);
    REQUIRE(got.size() == 1);
    CHECK(got[0][1] == "bad");
    CHECK(q.nack(got[0][0].as<int64_t>(), got[0][2].as<int64_t>()));
  }
  CHECK(stat(q, "buried") == 1);  // delivered twice: buried, not delivered a third time
  CHECK(q.peek() == "good");
  const ValueArray b = *q.buried(10).if_array();
  REQUIRE(b.size() == 1);
  CHECK(b[0][1] == "bad");
  CHECK(stat(q, "buried") == 1);  // buried() only looks
  // bury by hand: only under the current delivery.
  const ValueArray good = take_n(q, *replies, 20, 1);
  CHECK_FALSE(bury(q, *replies, good[0][0].as<int64_t>(), good[0][2].as<int64_t>() + 1));
  CHECK(bury(q, *replies, good[0][0].as<int64_t>(), good[0][2].as<int64_t>()));
  CHECK(stat(q, "buried") == 2);
  CHECK(stat(q, "leased") == 0);
  CHECK(kick(q, *replies, 1) == 1);  // the oldest first
  CHECK(q.peek() == "bad");
  CHECK(kick(q, *replies, 10) == 1);
  CHECK(kick(q, *replies, 10) == 0);
  // Kicked: max deliveries tries again.
  const ValueArray again = take_n(q, *replies, 30, 2);
  CHECK(jobs_of(again) == std::vector<std::string>{"bad", "good"});
  q.ack(again[0][0].as<int64_t>(), again[0][2].as<int64_t>(), replies->make(31));
  CHECK(replies->wait(31) == true);
  const Value s = q.stats();
  CHECK(s["pushed"] == 2);
  CHECK(s["acknowledged"] == 1);
  CHECK(s["leased"] == 1);
  CHECK(s["ready"] == 0);
  CHECK(s["buried"] == 0);
}

TEST_CASE("stats: the oldest ready job's age, whatever its priority, grows while it waits") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("age", 600000ms, "");
  CHECK(stat(q, "oldest_ready_ms") == 0);
  q.push("x", opts({{"priority", 5}}), replies->make(0));
  std::this_thread::sleep_for(50ms);
  q.push("y", opts({{"priority", -5}}), replies->make(0));  // first in line, not the oldest
  CHECK(stat(q, "oldest_ready_ms") >= 50);
}

TEST_CASE("priorities, delays, time-to-run, leases, buried jobs and totals survive a reopen") {
  TempDir dir;
  const std::string path = dir.file("queue-opts.wal");
  auto replies = std::make_shared<Replies>();
  int64_t touched_id = 0, touched_delivery = 0;
  auto pushed_later = std::chrono::steady_clock::now();
  {
    JobQueue q("opts", 600000ms, path, {}, 1);
    q.push("low", opts({{"priority", 5}}), replies->make(1));
    q.push("high", opts({{"priority", 1}}), replies->make(2));
    pushed_later = std::chrono::steady_clock::now();
    q.push("later", opts({{"delay_ms", 2000}, {"priority", 3}}), replies->make(3));
    q.push("dies", opts({{"priority", 0}}), replies->make(4));
    q.push("leased", opts({{"priority", -1}, {"ttr_ms", 200000}}), replies->make(5));
    for (int i = 1; i <= 5; ++i) (void)replies->wait(i);
    const ValueArray got = take_n(q, *replies, 10, 2);  // leased, dies
    CHECK(jobs_of(got) == std::vector<std::string>{"leased", "dies"});
    touched_id = got[0][0].as<int64_t>();
    touched_delivery = got[0][2].as<int64_t>();
    CHECK(touch(q, *replies, touched_id, touched_delivery));
    CHECK(q.nack(got[1][0].as<int64_t>(), got[1][2].as<int64_t>()));  // max 1: buried
    q.push("acked", opts({{"priority", -9}}), replies->make(11));
    (void)replies->wait(11);
    const ValueArray a = take_n(q, *replies, 12, 1);
    q.ack(a[0][0].as<int64_t>(), a[0][2].as<int64_t>(), replies->make(13));
    CHECK(replies->wait(13) == true);
  }
  for (int reopen = 0; reopen < 2; ++reopen) {  // the second from the first's compacted log
    JobQueue q("opts", 600000ms, path, {}, 1);
    const Value s = q.stats();
    CHECK(s["pushed"] == 6);
    CHECK(s["acknowledged"] == 1);
    CHECK(s["buried"] == 1);
    CHECK(s["leased"] == 1);
    CHECK(s["ready"].as<int64_t>() + s["delayed"].as<int64_t>() == 3);
    CHECK(q.peek() == "high");
    // Still delayed, unless this machine was slow enough for its 2 s to pass.
    if (std::chrono::steady_clock::now() - pushed_later < 1500ms) CHECK(s["delayed"] == 1);
    CHECK(jobs_of(*q.buried(5).if_array()) == std::vector<std::string>{"dies"});
    if (reopen == 0) continue;
    CHECK(touch(q, *replies, touched_id, touched_delivery));  // the lease and its length came back
    CHECK(wait_stat(q, "delayed", 0));
    CHECK(jobs_of(take_n(q, *replies, 20, 5)) == std::vector<std::string>{"high", "later", "low"});
  }
}

TEST_CASE("a log written before options (3-field push, 4-field lease) still replays") {
  TempDir dir;
  const std::string path = dir.file("queue-old.wal");
  const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  {
    patro::worker::Wal wal(path, [](std::string_view) {});
    for (const Value& r :
         {Value::array({"push", 1, "a"}), Value::array({"push", 2, "b"}),
          Value::array({"push", 3, "c"}), Value::array({"lease", 1, 7, wall + 600000}),
          Value::array({"lease", 2, 8, wall + 600000}), Value::array({"requeue", 2}),
          Value::array({"ack", 3})})
      wal.append(patro::encode(r));
  }
  auto replies = std::make_shared<Replies>();
  JobQueue q("old", 600000ms, path, {}, 2);
  CHECK(q.leased() == 1);
  CHECK(q.peek() == "b");
  CHECK(stat(q, "acknowledged") == 1);
  CHECK(touch(q, *replies, 1, 7));
  CHECK(q.nack(1, 7));  // its one delivery counted: one more to go before it is buried
  CHECK(stat(q, "buried") == 0);
  CHECK(jobs_of(take_n(q, *replies, 1, 5)) == std::vector<std::string>{"a", "b"});
}

TEST_CASE(
    "dedup: a second push with a key answers the first's id, also after an ack and a reopen") {
  TempDir dir;
  const std::string path = dir.file("queue-dedup.wal");
  auto replies = std::make_shared<Replies>();
  {
    JobQueue q("dedup", 600000ms, path);
    q.push("a", opts({{"dedup", "order-17"}, {"priority", 2}}), replies->make(1));
    CHECK(replies->wait(1) == 1);
    q.push("a again", opts({{"dedup", "order-17"}}), replies->make(2));
    CHECK(replies->wait(2) == 1);
    q.push("b", opts({{"dedup", "order-18"}}), replies->make(3));
    CHECK(replies->wait(3) == 2);
    CHECK(q.size() == 2);
    CHECK(stat(q, "pushed") == 2);
    CHECK_THROWS_AS(q.push_many(ValueArray{"x"}, opts({{"dedup", "k"}}), replies->make(4)),
                    patro::Error);
    CHECK_THROWS_AS(q.push("x", opts({{"dedup", 5}}), replies->make(4)), patro::Error);
    CHECK_THROWS_AS(q.push("x", opts({{"dedup", ""}}), replies->make(4)), patro::Error);
    const ValueArray got = take_n(q, *replies, 5, 1);  // "b" (priority 0)
    q.ack(got[0][0].as<int64_t>(), got[0][2].as<int64_t>(), replies->make(6));
    CHECK(replies->wait(6) == true);
    q.push("b again", opts({{"dedup", "order-18"}}), replies->make(7));
    CHECK(replies->wait(7) == 2);  // acknowledged, and still remembered
  }
  for (int reopen = 0; reopen < 2; ++reopen) {  // the second from the compacted log
    JobQueue q("dedup", 600000ms, path);
    q.push("a", opts({{"dedup", "order-17"}}), replies->make(10 + reopen));
    CHECK(replies->wait(10 + reopen) == 1);
    q.push("b", opts({{"dedup", "order-18"}}), replies->make(20 + reopen));
    CHECK(replies->wait(20 + reopen) == 2);
    CHECK(q.size() == 1);
  }
}

TEST_CASE("ack_take: acknowledges the delivery and answers the next job as take does") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("pairs", 600000ms, "");
  for (const char* j : {"a", "b"}) q.push(j, Value(), replies->make(0));
  q.take(0, replies->make(1, 7));
  Value got = replies->wait(1);
  CHECK(got[1] == "a");
  q.ack_take(got[0].as<int64_t>(), got[2].as<int64_t>(), 0, replies->make(2, 7));
  Value next = replies->wait(2);
  CHECK(next[1] == "b");
  CHECK(q.stats()["acknowledged"] == 1);
  CHECK(q.leased() == 1);
  // The same delivery again: refused (a was acknowledged), and the take still answers (null:
  // nothing is ready), with b's lease untouched.
  q.ack_take(got[0].as<int64_t>(), got[2].as<int64_t>(), 0, replies->make(3, 7));
  CHECK(replies->wait(3).is_null());
  CHECK(q.stats()["acknowledged"] == 1);
  CHECK(q.leased() == 1);
  // Nothing ready: it waits, as take does, for the next push.
  q.ack_take(next[0].as<int64_t>(), next[2].as<int64_t>(), 5000, replies->make(4, 7));
  CHECK(q.leased() == 0);
  CHECK_FALSE(replies->answered(4));
  q.push("c", Value(), replies->make(5));
  CHECK(replies->wait(4)[1] == "c");
  // A waiting ack_take that times out answers null.
  q.ack_take(0, 0, 50, replies->make(6, 7));
  CHECK(replies->wait(6).is_null());
}

TEST_CASE("ack_take with a log: the ack is on disk once answered, the next job's lease too") {
  TempDir dir;
  const std::string path = dir.file("queue-ack-take.wal");
  auto replies = std::make_shared<Replies>();
  int64_t held = 0, delivery = 0;
  {
    JobQueue q("jobs", 600000ms, path);
    for (int i = 0; i < 3; ++i) q.push("job" + std::to_string(i), Value(), replies->make(i));
    for (int i = 0; i < 3; ++i) CHECK(replies->wait(i) == i + 1);
    q.take(0, replies->make(10, 7));
    Value got = replies->wait(10);
    q.ack_take(got[0].as<int64_t>(), got[2].as<int64_t>(), 0, replies->make(11, 7));
    got = replies->wait(11);
    CHECK(got[1] == "job1");
    // Nothing else ready after job2: the waiting form acks, then waits for a push.
    q.ack_take(got[0].as<int64_t>(), got[2].as<int64_t>(), 0, replies->make(12, 7));
    got = replies->wait(12);
    CHECK(got[1] == "job2");
    q.ack_take(got[0].as<int64_t>(), got[2].as<int64_t>(), 5000, replies->make(13, 7));
    q.push("job3", Value(), replies->make(14));
    got = replies->wait(13);
    CHECK(got[1] == "job3");
    held = got[0].as<int64_t>();
    delivery = got[2].as<int64_t>();
    CHECK(q.stats()["acknowledged"] == 3);
  }
  JobQueue q("jobs", 600000ms, path);
  CHECK(q.size() == 0);
  CHECK(q.leased() == 1);  // job3, leased by the last ack_take
  CHECK(q.stats()["acknowledged"] == 3);
  q.ack(held, delivery, replies->make(20));
  CHECK(replies->wait(20) == true);
}

TEST_CASE("take_flat and a flat ack_many: the same jobs and answers as the nested forms") {
  auto replies = std::make_shared<Replies>();
  JobQueue q("flat", 600000ms, "");
  q.push("low", opts({{"priority", 5}}), replies->make(0));
  for (const char* j : {"a", "b", "c"}) q.push(j, Value(), replies->make(0));
  q.take_flat(3, 0, replies->make(1, 7));
  const Value got = replies->wait(1);
  REQUIRE(got.size() == 9);  // [id, job, delivery] three times, by priority then push order
  CHECK(got[1] == "a");
  CHECK(got[4] == "b");
  CHECK(got[7] == "c");
  // Flat pairs; the second is a stale delivery (refused, as ack refuses it).
  const ValueArray pairs{got[0], got[2], got[3], got[5].as<int64_t>() + 1000, got[6], got[8]};
  q.ack_many(pairs, replies->make(2));
  CHECK(replies->wait(2) == Value::array({true, false, true}));
  CHECK(q.stats()["acknowledged"] == 2);
  CHECK(q.leased() == 1);
  // The nested form still answers the same way.
  q.ack_many(ValueArray{Value::array({got[3], got[5]})}, replies->make(3));
  CHECK(replies->wait(3) == Value::array({true}));
  // An odd flat list is refused whole, before anything is acknowledged.
  q.take_flat(10, 0, replies->make(4, 7));
  const Value last = replies->wait(4);
  REQUIRE(last.size() == 3);
  CHECK(last[1] == "low");
  CHECK_THROWS_AS(q.ack_many(ValueArray{last[0], last[2], last[0]}, replies->make(5)),
                  patro::Error);
  CHECK(q.leased() == 1);
  // Nothing ready: an empty list (take_many's answer too).
  q.take_flat(10, 0, replies->make(6, 7));
  CHECK(replies->wait(6).size() == 0);
}
