// Advisory monitor locks on served objects, with Perl Patro's semantics: lock, unlock, wait,
// notify, lock_state, synchronize. A monitor is one client connection (one get_proxies call);
// every proxy obtained through it shares it.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>

#include "patro/client.hpp"
#include "patro/error.hpp"
#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// Codes in SyncResult::error: the lock codes of patro::Errc (one code space), under the names
/// and numbers Perl Patro documents.
struct SyncError {
  enum Code : int {
    none = static_cast<int>(Errc::ok),
    timeout = static_cast<int>(Errc::lock_timeout),  ///< not granted (or notified) in time
    not_held = static_cast<int>(Errc::not_held),     ///< unlock, wait or notify without the lock
    steal_refused = static_cast<int>(Errc::steal_refused),  ///< steal_lock_ok is off
    stolen = static_cast<int>(Errc::stolen),  ///< unlock after a steal: ok, count 0 ("0 but true")
    too_many_waiters = static_cast<int>(Errc::too_many_waiters),  ///< parked-request limit
    deep_recursion = static_cast<int>(Errc::deep_recursion),      ///< stacked as deep as allowed
  };
};

/// The result of a lock operation. True where Perl Patro returns true, including its "0 but true"
/// (unlocking a stolen lock, notifying nobody).
struct SyncResult {
  bool ok = false;
  int64_t count = 0;  ///< levels held or released, monitors notified
  int error = SyncError::none;
  uint64_t token = 0;  ///< the fencing token of the grant; it only ever grows for an object
  explicit operator bool() const noexcept { return ok; }
  /// error as a patro::Errc (Errc::ok, or one of the lock codes).
  Errc code() const noexcept { return static_cast<Errc>(error); }
};

/// A monitor's state on an object. code(): NULL=0 WAIT=1 NOTIFY=2 STOLEN=3 LOCK=4+depth-1.
class LockState {
 public:
  explicit LockState(int code = 0) : code_(code) {}
  int code() const noexcept { return code_; }
  /// "NULL", "WAIT", "NOTIFY", "STOLEN" or "LOCK".
  std::string name() const;
  /// Levels held (0 unless LOCK).
  int depth() const noexcept { return code_ >= 4 ? code_ - 3 : 0; }
  bool operator==(const LockState&) const = default;

 private:
  int code_;
};

using Timeout = std::optional<std::chrono::milliseconds>;

/// Acquires the lock, stacking if already held. No timeout: blocks until granted (bounded by
/// ClientOptions::max_lock_wait); zero or negative: tries once. steal takes the lock from its
/// holder where the server allows it (after the timeout, if one is given).
SyncResult lock(const Proxy& p, Timeout timeout = std::nullopt, bool steal = false);
/// Releases up to count levels (negative: all) and says how many.
SyncResult unlock(const Proxy& p, int64_t count = 1);
/// Releases every level, sleeps until notified, reacquires to the same depth. A wait that times
/// out leaves the monitor without the lock.
SyncResult wait(const Proxy& p, Timeout timeout = std::nullopt);
/// Moves up to count waiters (negative: all) to NOTIFY; does not release the lock.
SyncResult notify(const Proxy& p, int64_t count = 1);
LockState lock_state(const Proxy& p);

/// An object's lock as anyone sees it (patro locks): who holds it, how deep, who waits.
struct LockInfo {
  uint64_t holder = 0;  ///< the holding monitor's client id; 0: free
  uint32_t depth = 0;
  uint64_t waiters = 0;  ///< requests waiting to acquire it (including notified waits)
  uint64_t waiting = 0;  ///< monitors in WAIT, not yet notified
  uint64_t token = 0;    ///< the newest fencing token granted (0: never locked)
};
LockInfo lock_info(const Proxy& p);

struct SyncOptions {
  Timeout timeout;
  bool steal = false;
};

/// Runs block only once the lock is granted, and unlocks the level it took on every path
/// (rethrowing the block's exception). Returns the block's result (std::monostate for a void
/// block), or nullopt if the lock was not granted.
template <class F>
auto synchronize(const Proxy& p, F&& block, SyncOptions options = {}) {
  using R = std::invoke_result_t<F>;
  using Out = std::conditional_t<std::is_void_v<R>, std::monostate, R>;
  std::optional<Out> out;
  if (!lock(p, options.timeout, options.steal)) return out;
  try {
    if constexpr (std::is_void_v<R>) {
      std::invoke(std::forward<F>(block));
      out.emplace();
    } else {
      out.emplace(std::invoke(std::forward<F>(block)));
    }
  } catch (...) {
    try {
      unlock(p, 1);
    } catch (...) {
    }
    throw;
  }
  unlock(p, 1);
  return out;
}

}  // namespace patro
PATRO_PUBLIC_END
