// The worker's key-value hash and counter on their write-ahead logs (no sockets): a change is
// answered once it is on disk, a reopen gives the state back, a damaged log stops the open and
// is left as it is, an oversized value is refused with nothing changed.
#include <doctest/doctest.h>

#include "../support/process.hpp"
#include "kv_store.hpp"
#include "worker_replies.hpp"

using patro::Value;
using patro::test::read_file;
using patro::test::Replies;
using patro::test::TempDir;
using patro::test::write_file;
using patro::worker::Counter;
using patro::worker::KvStore;

TEST_CASE("hash: sets and erases answered once on disk come back after a reopen") {
  TempDir dir;
  const std::string path = dir.file("hash-kv.wal");
  auto replies = std::make_shared<Replies>();
  {
    KvStore kv(path);
    for (int i = 0; i < 102; ++i) kv.set("k" + std::to_string(i), i, replies->make(i));
    kv.erase("k5", replies->make(1000));
    kv.set("k7", "seven", replies->make(1001));
    for (int i = 0; i < 102; ++i) CHECK(replies->wait(i).is_null());
    CHECK(replies->wait(1000) == 5);  // erase answers the old value
    (void)replies->wait(1001);
    CHECK(kv.size() == 101);
  }
  KvStore again(path);
  CHECK(again.size() == 101);
  CHECK_FALSE(again.exists("k5"));
  CHECK(again.get("k7") == "seven");
  CHECK(again.get("k101") == 101);
}

TEST_CASE("hash: one flipped byte in the middle stops the open and leaves the file as it is") {
  TempDir dir;
  const std::string path = dir.file("hash-kv.wal");
  auto replies = std::make_shared<Replies>();
  {
    KvStore kv(path);
    for (int i = 0; i < 102; ++i) kv.set("k" + std::to_string(i), i, replies->make(i));
    (void)replies->wait(101);
  }
  std::string bad = read_file(path);
  bad[bad.size() / 2] ^= 0x08;
  write_file(path, bad);
  try {
    KvStore kv(path);
    FAIL("a damaged log was opened");
  } catch (const patro::Error& e) {
    CHECK(std::string(e.what()).find(path + " at offset ") != std::string::npos);
  }
  CHECK(read_file(path) == bad);  // not truncated, not compacted
  // --repair: the keys before the damage, and the original kept.
  patro::worker::WalOptions repair;
  repair.repair = true;
  KvStore kv(path, repair);
  CHECK(kv.size() > 0);
  CHECK(kv.size() < 102);
  for (int64_t i = 0; i < kv.size(); ++i) CHECK(kv.get("k" + std::to_string(i)) == i);
}

TEST_CASE("hash: a value over the record limit is refused and nothing changes") {
  TempDir dir;
  const std::string path = dir.file("hash-big.wal");
  patro::worker::WalOptions options;
  options.max_record_bytes = 1000;
  auto replies = std::make_shared<Replies>();
  {
    KvStore kv(path, options);
    kv.set("small", "x", replies->make(1));
    (void)replies->wait(1);
    CHECK_THROWS_AS(kv.set("big", std::string(2000, 'y'), replies->make(2)), patro::Error);
    CHECK_FALSE(kv.exists("big"));
    CHECK(kv.size() == 1);
  }
  KvStore again(path, options);
  CHECK(again.size() == 1);
}

TEST_CASE("counter: adds, sets and a cas survive a reopen; each answered after its record") {
  TempDir dir;
  const std::string path = dir.file("counter-n.wal");
  auto replies = std::make_shared<Replies>();
  {
    Counter n(path);
    for (int i = 0; i < 32; ++i) n.add(1, replies->make(i));
    CHECK(replies->wait(31) == 32);
    n.cas(32, 40, replies->make(100));
    CHECK(replies->wait(100) == true);
    n.cas(32, 50, replies->make(101));
    CHECK(replies->wait(101) == false);
  }
  Counter again(path);
  CHECK(again.get() == 40);
}

TEST_CASE("counter: 8 bytes of garbage at the head stop the open; the value is not reset") {
  TempDir dir;
  const std::string path = dir.file("counter-n.wal");
  auto replies = std::make_shared<Replies>();
  {
    Counter n(path);
    for (int i = 0; i < 32; ++i) n.add(1, replies->make(i));
    (void)replies->wait(31);
  }
  const std::string good = read_file(path);
  write_file(path, "12345678" + good);
  CHECK_THROWS_AS(Counter{path}, patro::Error);
  CHECK(read_file(path) == "12345678" + good);
  write_file(path, good);
  CHECK(Counter(path).get() == 32);
}

TEST_CASE("in memory (no log): answered at once") {
  auto replies = std::make_shared<Replies>();
  KvStore kv("");
  kv.set("a", 1, replies->make(1));
  CHECK(replies->answered(1));
  CHECK(kv.get("a") == 1);
}
