// The monitor locks of one server: Patro's state machine (NULL, WAIT, NOTIFY, STOLEN, LOCK with a
// stack depth) in Boost.Interprocess shared memory under /dev/shm, guarded by a named mutex and a
// named condition variable, so every thread of the server — and a tool in another process —
// sees one truth. A guard file beside them holds the kernel's locks that tell a live server or
// reader from a dead one: a second server of the same name is refused, and a reader that died
// holding the mutex has it released for it. A reader checks the segment before it follows a
// pointer in it.
//
// A lock request that cannot be granted is parked in the object's FIFO; no thread waits for it.
// Whoever releases the lock grants the next waiter and sends its reply. One timer thread sleeps
// on the named condition until the earliest waiter's deadline. Any thread may call any method.
#pragma once

#include "patro/options.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace patro::detail {

/// The result of a lock operation, as it travels (see patro::SyncResult).
struct SyncOutcome {
  bool ok = false;
  int64_t count = 0;
  int error = 0;
  uint64_t token = 0;
};

/// Who asked, so a parked request can be answered later.
struct Caller {
  uint64_t monitor = 0;  // the client id: one monitor per connection
  uint64_t request_id = 0;
  std::string routing;  // the client's routing id at the broker
};

/// A reply owed to a parked request (a grant, or a timeout).
struct DeferredReply {
  std::string routing;
  uint64_t request_id = 0;
  SyncOutcome outcome;
  uint64_t client_id = 0;  // the monitor: the server's reply cache keys on it
};

/// What a tool sees of one lock.
struct LockInfo {
  uint64_t object = 0;
  uint64_t holder = 0;
  uint32_t depth = 0;
  uint64_t token = 0;
  size_t lock_waiters = 0;  // waiting to acquire (including notified waits)
  size_t wait_waiters = 0;  // in WAIT, not yet notified
  std::vector<uint64_t> stolen;
};

/// The server's Limits that the lock table keeps (it sits below the server's options).
struct LockLimits {
  uint32_t max_depth = Limits{}.max_lock_depth;
  size_t max_waiters = Limits{}.max_lock_waiters;  // per server
  size_t segment_size = Limits{}.lock_segment_bytes;
};

class LockTable {
 public:
  /// Creates the segments for server `name` (mode 0600), first removing any left by a dead
  /// server of the same name. Throws Error(name_taken) if a live server has that name, and
  /// Error(invalid_argument), naming the owner, if one of them belongs to another user.
  LockTable(const std::string& name, bool steal_ok, const LockLimits& limits);
  /// Removes the segments.
  ~LockTable();
  LockTable(const LockTable&) = delete;
  LockTable& operator=(const LockTable&) = delete;

  const std::string& name() const noexcept { return name_; }

  // Each appends to `owed` the replies due to other, parked callers. nullopt: the caller is parked.
  /// timeout: none blocks until granted (but at most bound_ms); <= 0 tries once. steal with no
  /// timeout steals at once; with one, when it expires.
  std::optional<SyncOutcome> lock(uint64_t object, const Caller& c,
                                  std::optional<int64_t> timeout_ms, bool steal, int64_t bound_ms,
                                  std::vector<DeferredReply>& owed);
  SyncOutcome unlock(uint64_t object, uint64_t monitor, int64_t count,
                     std::vector<DeferredReply>& owed);
  std::optional<SyncOutcome> wait(uint64_t object, const Caller& c,
                                  std::optional<int64_t> timeout_ms, int64_t bound_ms,
                                  std::vector<DeferredReply>& owed);
  SyncOutcome notify(uint64_t object, uint64_t monitor, int64_t count);
  /// Patro's lock_state code: 0 NULL, 1 WAIT, 2 NOTIFY, 3 STOLEN, 4 + depth - 1 LOCK.
  int state(uint64_t object, uint64_t monitor);
  /// The lock of one object as a tool sees it (all zero if it was never locked).
  LockInfo info(uint64_t object);
  /// The newest token granted for object (0 if none).
  uint64_t token(uint64_t object);
  /// The client is gone: release its locks, drop its waits.
  void drop_monitor(uint64_t monitor, std::vector<DeferredReply>& owed);

  /// The timer: answers waiters whose deadline passed, else sleeps on the condition until the
  /// next deadline or a change. Returns false once stop_timer() was called.
  bool timer_step(std::vector<DeferredReply>& owed);
  void stop_timer();

  /// Every lock of server `name`, read from /dev/shm by any process of its user; throws
  /// Error(not_found) if there is none, Error(bad_message) saying what is wrong with a segment
  /// that fails its checks, Error(timeout) if the table stays busy for 2 s.
  static std::vector<LockInfo> inspect(const std::string& name);
  /// Runs while_held holding server `name`'s mutex as inspect() does, marked as a reader so that
  /// the server releases the mutex if this process dies meanwhile.
  static void visit(const std::string& name, const std::function<void()>& while_held);
  /// Names of servers with lock segments in /dev/shm.
  static std::vector<std::string> servers();
  /// Removes the segments of `name` (for servers whose process died); false, removing nothing,
  /// if a live server holds them or they are another user's.
  static bool remove(const std::string& name);
  /// Removes the segments of every table this process owns, for a process about to end without
  /// its destructors (the watchdog's exit); its mapped tables stay usable until then.
  static void remove_owned() noexcept;

  struct Shm;  // public only for the .cpp's helpers

 private:
  std::string name_;
  bool steal_ok_;
  LockLimits limits_;
  std::unique_ptr<Shm> shm_;
};

}  // namespace patro::detail
