// The lock table alone, driven call by call: grants, stacks, unlock counts, FIFO waiters,
// wait/notify, steal, dropped monitors and timeouts (the timer runs on the caller's thread, so
// a timeout is the timer step returning, not a sleep).
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/interprocess/sync/named_mutex.hpp>
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include "lock_table.hpp"
#include "patro/error.hpp"

using patro::detail::Caller;
using patro::detail::DeferredReply;
using patro::detail::LockLimits;
using patro::detail::LockTable;
using patro::detail::SyncOutcome;

namespace {
constexpr int kTimeout = 1001, kNotHeld = 1002, kStealRefused = 1003, kStolen = 1004,
              kTooManyWaiters = 1005, kDeepRecursion = 1111;
constexpr uint64_t kObject = 42;
constexpr int64_t kBound = 60'000;

// A table with a name of its own (the segments are removed by the destructor).
std::string table_name(const char* what) {
  return std::string("lock-table-test-") + what + "-" + std::to_string(::getpid());
}
Caller caller(uint64_t monitor, uint64_t request_id = 1) {
  return Caller{monitor, request_id, "client-" + std::to_string(monitor)};
}
}  // namespace

TEST_CASE("a free lock is granted, stacks for its holder, and unlock counts levels") {
  LockTable t(table_name("stack"), false, LockLimits{});
  std::vector<DeferredReply> owed;
  auto g = t.lock(kObject, caller(1), std::nullopt, false, kBound, owed);
  REQUIRE(g);
  CHECK(g->ok);
  CHECK(g->count == 1);
  CHECK(g->token > 0);
  CHECK(t.state(kObject, 1) == 4);
  CHECK(t.state(kObject, 2) == 0);
  const uint64_t first_token = g->token;
  for (int depth = 2; depth <= 4; ++depth) {
    auto again = t.lock(kObject, caller(1), 0, false, kBound, owed);
    REQUIRE(again);
    CHECK(again->count == depth);
    CHECK(again->token == first_token);  // the same grant, deeper
  }
  CHECK(t.state(kObject, 1) == 7);  // LOCK at depth 4
  CHECK(t.info(kObject).depth == 4);
  auto u = t.unlock(kObject, 1, 2, owed);
  CHECK(u.ok);
  CHECK(u.count == 2);
  CHECK(t.state(kObject, 1) == 5);
  u = t.unlock(kObject, 1, 10, owed);  // more than held: what was held
  CHECK(u.count == 2);
  CHECK(t.state(kObject, 1) == 0);
  u = t.unlock(kObject, 1, 1, owed);
  CHECK_FALSE(u.ok);
  CHECK(u.error == kNotHeld);
  CHECK(t.unlock(7, 1, 1, owed).error == kNotHeld);  // never locked
  CHECK(owed.empty());
  // A new grant has a newer token.
  g = t.lock(kObject, caller(1), 0, false, kBound, owed);
  REQUIRE(g);
  CHECK(g->token > first_token);
  CHECK(t.unlock(kObject, 1, -1, owed).count == 1);
}

TEST_CASE("depth is limited") {
  LockLimits limits;
  limits.max_depth = 3;
  LockTable t(table_name("depth"), false, limits);
  std::vector<DeferredReply> owed;
  for (int i = 0; i < 3; ++i) REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  auto deep = t.lock(kObject, caller(1), 0, false, kBound, owed);
  REQUIRE(deep);
  CHECK_FALSE(deep->ok);
  CHECK(deep->error == kDeepRecursion);
  CHECK(t.unlock(kObject, 1, -1, owed).count == 3);
}

TEST_CASE("a held lock: try-once fails, waiters park and are granted in FIFO order") {
  LockTable t(table_name("fifo"), false, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), std::nullopt, false, kBound, owed)->ok);
  auto once = t.lock(kObject, caller(2), 0, false, kBound, owed);
  REQUIRE(once);
  CHECK(once->error == kTimeout);
  for (uint64_t m = 2; m <= 5; ++m)
    CHECK_FALSE(t.lock(kObject, caller(m, 100 + m), std::nullopt, false, kBound, owed));
  CHECK(t.info(kObject).lock_waiters == 4);
  CHECK(owed.empty());
  uint64_t last_token = t.token(kObject);
  uint64_t holder = 1;
  for (uint64_t m = 2; m <= 5; ++m) {
    REQUIRE(t.unlock(kObject, holder, 1, owed).ok);
    REQUIRE(owed.size() == 1);  // the releaser owes the next waiter its grant
    CHECK(owed[0].routing == "client-" + std::to_string(m));
    CHECK(owed[0].request_id == 100 + m);
    CHECK(owed[0].outcome.ok);
    CHECK(owed[0].outcome.token > last_token);
    last_token = owed[0].outcome.token;
    CHECK(t.state(kObject, m) == 4);
    owed.clear();
    holder = m;
  }
  CHECK(t.unlock(kObject, holder, 1, owed).ok);
  CHECK(owed.empty());
  CHECK(t.info(kObject).holder == 0);
}

TEST_CASE("wait releases every level, notify moves waiters, and they reacquire to their depth") {
  LockTable t(table_name("wait"), false, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), std::nullopt, false, kBound, owed)->ok);
  REQUIRE(t.lock(kObject, caller(1), std::nullopt, false, kBound, owed)->ok);  // depth 2
  CHECK(t.wait(kObject, caller(2), std::nullopt, kBound, owed)->error == kNotHeld);
  CHECK_FALSE(t.wait(kObject, caller(1, 7), std::nullopt, kBound, owed));  // parked in WAIT
  CHECK(t.state(kObject, 1) == 1);
  CHECK(t.info(kObject).holder == 0);
  CHECK(t.info(kObject).wait_waiters == 1);
  // Another monitor locks it, notifies: monitor 1 is NOTIFY, and gets the lock at unlock.
  REQUIRE(t.lock(kObject, caller(2), 0, false, kBound, owed)->ok);
  CHECK(t.notify(kObject, 1, 1).error == kNotHeld);
  auto n = t.notify(kObject, 2, 1);
  CHECK(n.ok);
  CHECK(n.count == 1);
  CHECK(t.state(kObject, 1) == 2);
  CHECK(t.notify(kObject, 2, -1).count == 0);  // nobody left in WAIT
  REQUIRE(t.unlock(kObject, 2, 1, owed).ok);
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].request_id == 7);
  CHECK(owed[0].outcome.ok);
  CHECK(t.state(kObject, 1) == 5);  // depth 2 again
  CHECK(t.unlock(kObject, 1, -1, owed).count == 2);
  // wait with a zero timeout releases and returns at once.
  REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  auto w0 = t.wait(kObject, caller(1), 0, kBound, owed);
  REQUIRE(w0);
  CHECK(w0->error == kTimeout);
  CHECK(t.info(kObject).holder == 0);
}

TEST_CASE("notify(count) wakes that many, in the order they waited") {
  LockTable t(table_name("notify"), false, LockLimits{});
  std::vector<DeferredReply> owed;
  for (uint64_t m = 1; m <= 3; ++m) {
    REQUIRE(t.lock(kObject, caller(m), 0, false, kBound, owed)->ok);
    REQUIRE_FALSE(t.wait(kObject, caller(m, m), std::nullopt, kBound, owed));
  }
  CHECK(t.info(kObject).wait_waiters == 3);
  REQUIRE(t.lock(kObject, caller(9), 0, false, kBound, owed)->ok);
  CHECK(t.notify(kObject, 9, 2).count == 2);
  CHECK(t.state(kObject, 1) == 2);
  CHECK(t.state(kObject, 2) == 2);
  CHECK(t.state(kObject, 3) == 1);
  REQUIRE(t.unlock(kObject, 9, 1, owed).ok);
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].routing == "client-1");
  owed.clear();
  REQUIRE(t.unlock(kObject, 1, 1, owed).ok);
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].routing == "client-2");
  owed.clear();
  t.drop_monitor(3, owed);  // the last waiter's client is gone: it leaves the queue
  CHECK(t.info(kObject).wait_waiters == 0);
  CHECK(t.unlock(kObject, 2, 1, owed).ok);
}

TEST_CASE("steal: refused unless allowed; the victim is STOLEN once") {
  {
    LockTable t(table_name("nosteal"), false, LockLimits{});
    std::vector<DeferredReply> owed;
    REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
    auto s = t.lock(kObject, caller(2), std::nullopt, true, kBound, owed);
    REQUIRE(s);
    CHECK(s->error == kStealRefused);
    CHECK(t.state(kObject, 1) == 4);
  }
  LockTable t(table_name("steal"), true, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  const uint64_t before = t.token(kObject);
  auto s = t.lock(kObject, caller(2), std::nullopt, true, kBound, owed);
  REQUIRE(s);
  CHECK(s->ok);
  CHECK(s->token > before);
  CHECK(t.state(kObject, 2) == 4);
  CHECK(t.state(kObject, 1) == 3);
  REQUIRE(t.info(kObject).stolen.size() == 1);
  auto u = t.unlock(kObject, 1, 1, owed);  // Perl's "0 but true", once
  CHECK(u.ok);
  CHECK(u.count == 0);
  CHECK(u.error == kStolen);
  CHECK(t.state(kObject, 1) == 0);
  CHECK(t.unlock(kObject, 1, 1, owed).error == kNotHeld);
  CHECK(t.unlock(kObject, 2, 1, owed).ok);
}

TEST_CASE("a dead holder's lock goes to the next waiter") {
  LockTable t(table_name("drop"), false, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  REQUIRE_FALSE(t.lock(kObject, caller(2, 5), std::nullopt, false, kBound, owed));
  t.drop_monitor(1, owed);
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].request_id == 5);
  CHECK(t.state(kObject, 2) == 4);
  owed.clear();
  CHECK(t.unlock(kObject, 2, 1, owed).ok);
}

TEST_CASE("the waiter limit refuses more parked requests") {
  LockLimits limits;
  limits.max_waiters = 2;
  LockTable t(table_name("limit"), false, limits);
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  CHECK_FALSE(t.lock(kObject, caller(2), std::nullopt, false, kBound, owed));
  CHECK_FALSE(t.lock(kObject, caller(3), std::nullopt, false, kBound, owed));
  auto over = t.lock(kObject, caller(4), std::nullopt, false, kBound, owed);
  REQUIRE(over);
  CHECK(over->error == kTooManyWaiters);
  t.drop_monitor(2, owed);
  t.drop_monitor(3, owed);
  CHECK(t.info(kObject).lock_waiters == 0);
  CHECK(t.unlock(kObject, 1, 1, owed).ok);
}

TEST_CASE("timeouts: the timer answers an expired waiter; a timed steal takes the lock") {
  LockTable t(table_name("timer"), true, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  CHECK_FALSE(t.lock(kObject, caller(2, 11), 20, false, kBound, owed));
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(t.timer_step(owed));  // returns once the 20 ms deadline passed
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(19));
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].request_id == 11);
  CHECK_FALSE(owed[0].outcome.ok);
  CHECK(owed[0].outcome.error == kTimeout);
  CHECK(t.info(kObject).lock_waiters == 0);
  owed.clear();
  // The bound caps a waiter with no timeout of its own.
  CHECK_FALSE(t.lock(kObject, caller(3, 12), std::nullopt, false, 20, owed));
  REQUIRE(t.timer_step(owed));
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].outcome.error == kTimeout);
  owed.clear();
  // A steal with a timeout steals when it expires.
  CHECK_FALSE(t.lock(kObject, caller(4, 13), 20, true, kBound, owed));
  REQUIRE(t.timer_step(owed));
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].outcome.ok);
  CHECK(t.state(kObject, 4) == 4);
  CHECK(t.state(kObject, 1) == 3);
  owed.clear();
  t.stop_timer();
  CHECK_FALSE(t.timer_step(owed));
}

TEST_CASE("a tool sees the table in /dev/shm while it exists, and not after") {
  const std::string name = table_name("inspect");
  {
    LockTable t(name, false, LockLimits{});
    std::vector<DeferredReply> owed;
    REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
    const auto seen = LockTable::inspect(name);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].object == kObject);
    CHECK(seen[0].holder == 1);
  }
  CHECK_THROWS(LockTable::inspect(name));
}

// --- Segments that survive their users ---

namespace {
std::string shm_file(const std::string& name, const char* suffix = "") {
  return "/dev/shm/patro-" + name + "-locks" + suffix;
}
bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// A child process that takes the table's mutex (as a reader, or raw like a tool that knows no
// protocol), says so on a pipe, and waits to be killed. Returns its pid once it holds the mutex.
pid_t holder_child(const std::string& name, bool as_reader) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    const auto hold = [&] {
      (void)!::write(fds[1], "h", 1);
      for (;;) ::pause();
    };
    try {
      if (as_reader) {
        LockTable::visit(name, hold);
      } else {
        boost::interprocess::named_mutex m(boost::interprocess::open_only,
                                           ("patro-" + name + "-locks-mutex").c_str());
        m.lock();
        hold();
      }
    } catch (...) {
    }
    ::_exit(1);
  }
  ::close(fds[1]);
  char c = 0;
  pollfd pfd{fds[0], POLLIN, 0};
  const bool held = ::poll(&pfd, 1, 10'000) == 1 && ::read(fds[0], &c, 1) == 1 && c == 'h';
  ::close(fds[0]);
  if (!held) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  REQUIRE(held);
  return pid;
}

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
}

std::optional<SyncOutcome> lock_in_thread(LockTable& t, uint64_t monitor) {
  // The lock op runs on a thread of its own so that a wedge fails the test instead of hanging
  // it: the future is waited for a bounded time.
  auto f = std::async(std::launch::async, [&t, monitor] {
    std::vector<DeferredReply> owed;
    return t.lock(kObject, caller(monitor), 0, false, kBound, owed);
  });
  if (f.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    FAIL("the lock operation is still blocked after 20 s");
    std::abort();  // a thread blocked on the mutex cannot be joined
  }
  return f.get();
}
}  // namespace

TEST_CASE("segments are 0600, and all of them, the guard included, go with the table") {
  const std::string name = table_name("files");
  {
    LockTable t(name, false, LockLimits{});
    for (const char* suffix : {"", "-cond", "-guard"}) {
      struct stat st {};
      REQUIRE(::stat(shm_file(name, suffix).c_str(), &st) == 0);
      CHECK((st.st_mode & 0777) == 0600);
      CHECK(st.st_uid == ::geteuid());
    }
    struct stat st {};
    REQUIRE(::stat(("/dev/shm/sem.patro-" + name + "-locks-mutex").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
  }
  for (const char* suffix : {"", "-cond", "-guard"}) CHECK_FALSE(exists(shm_file(name, suffix)));
  CHECK_FALSE(exists("/dev/shm/sem.patro-" + name + "-locks-mutex"));
}

TEST_CASE("a second table of a live server's name is refused and leaves the first alone") {
  const std::string name = table_name("twice");
  LockTable first(name, false, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(first.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  try {
    LockTable second(name, false, LockLimits{});
    FAIL("a second table of a live name was created");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::name_taken);
    CHECK(std::string(e.what()).find("pid " + std::to_string(::getpid())) != std::string::npos);
  }
  CHECK_FALSE(LockTable::remove(name));  // nor does the sweep of dead servers remove them
  CHECK(first.state(kObject, 1) == 4);   // still held: its segments are the same
  const auto seen = LockTable::inspect(name);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].holder == 1);
}

TEST_CASE("a dead server's segments are replaced by the next server of its name") {
  const std::string name = table_name("dead");
  // A dead server's leftovers: segments of its own, and its guard with nobody holding it.
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    {
      LockTable t(name, false, LockLimits{});
      std::vector<DeferredReply> owed;
      (void)t.lock(kObject, caller(9), 0, false, kBound, owed);
      ::_exit(0);  // no destructor: the segments stay
    }
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(exists(shm_file(name, "-guard")));
  LockTable t(name, false, LockLimits{});
  CHECK(t.state(kObject, 9) == 0);  // fresh
  CHECK(LockTable::inspect(name).empty());
}

TEST_CASE("a reader that dies holding the mutex does not wedge the table") {
  const std::string name = table_name("reader");
  LockTable t(name, false, LockLimits{});
  const pid_t pid = holder_child(name, true);
  kill_and_reap(pid);
  auto g = lock_in_thread(t, 1);
  REQUIRE(g);
  CHECK(g->ok);
  CHECK(LockTable::inspect(name).size() == 1);  // and readers go on too
}

TEST_CASE("a process that took the mutex without marking it and died is presumed dead") {
  const std::string name = table_name("raw");
  LockTable t(name, false, LockLimits{});
  const pid_t pid = holder_child(name, false);
  kill_and_reap(pid);
  auto g = lock_in_thread(t, 1);
  REQUIRE(g);
  CHECK(g->ok);
}

TEST_CASE("a live reader is waited for, not released") {
  const std::string name = table_name("live-reader");
  LockTable t(name, false, LockLimits{});
  const pid_t pid = holder_child(name, true);
  // The server gives up on nothing: with the reader alive, the lock op is still blocked after
  // twice the time a dead one's recovery takes.
  auto f = std::async(std::launch::async, [&t] {
    std::vector<DeferredReply> owed;
    return t.lock(kObject, caller(1), 0, false, kBound, owed);
  });
  CHECK(f.wait_for(std::chrono::seconds(3)) == std::future_status::timeout);
  kill_and_reap(pid);
  REQUIRE(f.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  CHECK(f.get()->ok);
}

TEST_CASE("garbage in a segment is a clear error for readers and lock operations") {
  const std::string name = table_name("garbage");
  LockTable t(name, false, LockLimits{});
  std::vector<DeferredReply> owed;
  REQUIRE(t.lock(kObject, caller(1), 0, false, kBound, owed)->ok);
  const std::string path = shm_file(name);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  std::string junk(static_cast<size_t>(st.st_size), '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (char& c : junk) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  const int fd = ::open(path.c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  SUBCASE("over the header") {
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), 0) == static_cast<ssize_t>(junk.size()));
    try {
      (void)LockTable::inspect(name);
      FAIL("garbage was read as locks");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::bad_message);
      CHECK(std::string(e.what()).find("no magic") != std::string::npos);
    }
    try {
      (void)t.lock(kObject, caller(2), 0, false, kBound, owed);
      FAIL("a lock operation followed garbage");
    } catch (const patro::Error& e) {
      CHECK(std::string(e.what()).find("overwritten") != std::string::npos);
    }
    t.drop_monitor(1, owed);  // logs, never throws
  }
  ::close(fd);
}

TEST_CASE("garbage past the header: a reader's walk fails its checks or faults in its child") {
  // The owner is another process (a process reads its own table in place): a child that
  // creates the table, takes a lock, and waits to be killed.
  const std::string name = table_name("garbage-walk");
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const pid_t owner = ::fork();
  REQUIRE(owner >= 0);
  if (owner == 0) {
    ::close(fds[0]);
    try {
      LockTable t(name, false, LockLimits{});
      std::vector<DeferredReply> owed;
      (void)t.lock(kObject, caller(1), 0, false, kBound, owed);
      (void)!::write(fds[1], "h", 1);
      for (;;) ::pause();
    } catch (...) {
    }
    ::_exit(1);
  }
  ::close(fds[1]);
  char c = 0;
  pollfd pfd{fds[0], POLLIN, 0};
  const bool ready = ::poll(&pfd, 1, 10'000) == 1 && ::read(fds[0], &c, 1) == 1;
  ::close(fds[0]);
  if (ready) {
    REQUIRE(LockTable::inspect(name).size() == 1);
    const std::string path = shm_file(name);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    std::string junk(static_cast<size_t>(st.st_size) - 128, '\0');
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (char& ch : junk) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      ch = static_cast<char>(x);
    }
    const int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, junk.data(), junk.size(), 128) == static_cast<ssize_t>(junk.size()));
    ::close(fd);
    try {
      (void)LockTable::inspect(name);
      FAIL("garbage was read as locks");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::bad_message);
      CHECK(std::string(e.what()).find("is corrupt") != std::string::npos);
    }
  }
  kill_and_reap(owner);
  CHECK(LockTable::remove(name));  // a dead owner's: removed
  CHECK_FALSE(exists(shm_file(name, "-guard")));
  REQUIRE(ready);
}

TEST_CASE("a segment file of another user's is refused, naming the owner") {
  if (::geteuid() != 0) {
    MESSAGE("skipped: needs root to give a file to another user");
    return;
  }
  const std::string name = table_name("foreign");
  const std::string path = shm_file(name);
  const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::fchown(fd, 65534, 65534) == 0);
  ::close(fd);
  try {
    LockTable t(name, false, LockLimits{});
    FAIL("another user's segment was taken over");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::invalid_argument);
    CHECK(std::string(e.what()).find("uid 65534") != std::string::npos);
  }
  CHECK(exists(path));  // left alone
  try {
    (void)LockTable::inspect(name);
    FAIL("another user's segment was read");
  } catch (const patro::Error& e) {
    CHECK(std::string(e.what()).find("uid 65534") != std::string::npos);
  }
  ::unlink(path.c_str());
  ::unlink(shm_file(name, "-guard").c_str());
}
