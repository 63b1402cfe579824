// The worker's job queue on its write-ahead log (no sockets): pushes answered once on disk, jobs
// and leases back after a reopen, acknowledged jobs gone, a push_many with an oversized job
// refused whole, and a damaged log refused.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "../support/process.hpp"
#include "job_queue.hpp"
#include "worker_replies.hpp"

using namespace std::chrono_literals;
using patro::Value;
using patro::ValueArray;
using patro::test::Replies;
using patro::test::TempDir;
using patro::worker::JobQueue;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}
}  // namespace

TEST_CASE("pushed jobs, leases and acks come back after a reopen") {
  TempDir dir;
  const std::string path = dir.file("queue-jobs.wal");
  auto replies = std::make_shared<Replies>();
  int64_t id_taken = 0, delivery = 0;
  {
    JobQueue q("jobs", 600000ms, path);
    for (int i = 0; i < 10; ++i) q.push("job" + std::to_string(i), replies->make(i));
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
    q.push("job10", replies->make(104));
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
    CHECK_THROWS_AS(q.push_many(jobs, replies->make(1)), patro::Error);
    CHECK(q.size() == 0);
    CHECK_THROWS_AS(q.push(std::string(1000, 'b'), replies->make(2)), patro::Error);
    q.push_many(ValueArray{"a", "c"}, replies->make(3));
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
    for (int i = 0; i < 20; ++i) q.push(i, replies->make(i));
    (void)replies->wait(19);
  }
  const std::string good = slurp(path);
  std::string bad = good;
  bad[good.size() / 3] ^= 0x20;
  spit(path, bad);
  CHECK_THROWS_AS((JobQueue{"jobs", 600000ms, path}), patro::Error);
  CHECK(slurp(path) == bad);
  spit(path, good.substr(0, good.size() - 4));  // the last push torn
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
  for (const char* j : {"a", "b", "c"}) q.push(j, replies->make(0));
  CHECK(jobs_of(take_n(q, *replies, 1, 3)) == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(wait_ready(q, 3));  // every lease ran out
  CHECK(jobs_of(take_n(q, *replies, 2, 3)) == std::vector<std::string>{"a", "b", "c"});
  // Taken by a connection that goes: back in the same order, ahead of a later push.
  q.push("d", replies->make(3));
  q.client_gone(7);
  CHECK(jobs_of(take_n(q, *replies, 4, 4)) == std::vector<std::string>{"a", "b", "c", "d"});
}
