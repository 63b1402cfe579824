#include "lock_table.hpp"

#include <dirent.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/deque.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/named_condition.hpp>
#include <boost/interprocess/sync/named_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <chrono>
#include <cstring>
#include <limits>

#include "patro/error.hpp"

namespace patro::detail {

namespace bip = boost::interprocess;

namespace {

// SyncResult error codes (patro::SyncError).
constexpr int kTimeout = 1001;
constexpr int kNotHeld = 1002;
constexpr int kStealRefused = 1003;
constexpr int kStolen = 1004;
constexpr int kTooManyWaiters = 1005;
constexpr int kDeepRecursion = 1111;

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

using Segment = bip::managed_shared_memory;
template <class T>
using Alloc = bip::allocator<T, Segment::segment_manager>;

enum class WaitKind : uint8_t { lock = 0, wait = 1, notified = 2 };

struct Waiter {
  uint64_t monitor = 0;
  uint64_t request_id = 0;
  int64_t deadline_ns = kNever;  // CLOCK_MONOTONIC, shared by the processes of a host
  uint32_t depth = 1;            // granted depth: 1 for lock, the saved depth for wait
  WaitKind kind = WaitKind::lock;
  bool steal = false;  // lock with steal and a timeout: steal when it expires
  uint8_t routing_len = 0;
  char routing[64] = {};
};

struct LockRec {
  explicit LockRec(const Alloc<void>& a) : waiters(a), stolen(a) {}
  uint64_t holder = 0;
  uint32_t depth = 0;
  uint64_t token = 0;
  bip::deque<Waiter, Alloc<Waiter>> waiters;
  bip::vector<uint64_t, Alloc<uint64_t>> stolen;  // monitors whose lock was stolen
};

using LockMap =
    bip::map<uint64_t, LockRec, std::less<uint64_t>, Alloc<std::pair<const uint64_t, LockRec>>>;

struct Header {
  uint64_t waiters = 0;            // parked requests, all objects
  int64_t timer_next_ns = kNever;  // when the timer will next wake by itself
};

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

uint64_t realtime_us() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::string safe(const std::string& name) {
  std::string out;
  for (char c : name)
    out +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return out;
}

std::string segment_name(const std::string& n) {
  return "patro-" + safe(n) + "-locks";
}
std::string mutex_name(const std::string& n) {
  return segment_name(n) + "-mutex";
}
std::string cond_name(const std::string& n) {
  return segment_name(n) + "-cond";
}

DeferredReply reply_to(const Waiter& w, SyncOutcome o) {
  return DeferredReply{std::string(w.routing, w.routing_len), w.request_id, o, w.monitor};
}

}  // namespace

struct LockTable::Shm {
  std::unique_ptr<Segment> segment;
  std::unique_ptr<bip::named_mutex> mutex;
  std::unique_ptr<bip::named_condition> cond;
  LockMap* locks = nullptr;
  Header* header = nullptr;
  std::atomic<bool> stopping{false};

  LockRec& record(uint64_t object) {
    auto it = locks->find(object);
    if (it == locks->end())
      it = locks->emplace(object, LockRec(segment->get_segment_manager())).first;
    return it->second;
  }
  LockRec* find(uint64_t object) {
    auto it = locks->find(object);
    return it == locks->end() ? nullptr : &it->second;
  }
  static uint64_t next_token(LockRec& r) {
    r.token = std::max(r.token + 1, realtime_us());
    return r.token;
  }
  static void unmark_stolen(LockRec& r, uint64_t monitor) {
    r.stolen.erase(std::remove(r.stolen.begin(), r.stolen.end(), monitor), r.stolen.end());
  }
  static bool is_stolen(const LockRec& r, uint64_t monitor) {
    return std::find(r.stolen.begin(), r.stolen.end(), monitor) != r.stolen.end();
  }
  void erase_waiter(LockRec& r, decltype(LockRec::waiters)::iterator it) {
    r.waiters.erase(it);
    --header->waiters;
  }
  void grant(LockRec& r, uint64_t monitor, uint32_t depth) {
    r.holder = monitor;
    r.depth = depth;
    unmark_stolen(r, monitor);
    next_token(r);
  }
  // The lock is free: give it to the first waiter in line (FIFO).
  void grant_next(LockRec& r, std::vector<DeferredReply>& owed) {
    if (r.holder != 0) return;
    for (auto it = r.waiters.begin(); it != r.waiters.end(); ++it) {
      if (it->kind == WaitKind::wait) continue;
      const Waiter w = *it;
      erase_waiter(r, it);
      grant(r, w.monitor, w.depth);
      owed.push_back(reply_to(w, SyncOutcome{true, w.depth, 0, r.token}));
      return;
    }
  }
  void steal(LockRec& r, uint64_t thief) {
    if (r.holder != 0 && r.holder != thief && !is_stolen(r, r.holder)) r.stolen.push_back(r.holder);
    grant(r, thief, 1);
  }
  bool park(LockRec& r, const Caller& c, int64_t timeout_ms, WaitKind kind, uint32_t depth,
            bool steal_at_deadline, const LockLimits& limits) {
    if (header->waiters >= limits.max_waiters || c.routing.size() > sizeof(Waiter::routing))
      return false;
    Waiter w;
    w.monitor = c.monitor;
    w.request_id = c.request_id;
    const int64_t now = now_ns();
    w.deadline_ns = timeout_ms > (kNever - now) / 1000000 ? kNever : now + timeout_ms * 1000000;
    w.depth = depth;
    w.kind = kind;
    w.steal = steal_at_deadline;
    w.routing_len = static_cast<uint8_t>(c.routing.size());
    std::memcpy(w.routing, c.routing.data(), c.routing.size());
    r.waiters.push_back(w);
    ++header->waiters;
    // Wake the timer only if it would sleep past this deadline.
    if (w.deadline_ns < header->timer_next_ns) cond->notify_all();
    return true;
  }
};

LockTable::LockTable(const std::string& name, bool steal_ok, const LockLimits& limits)
    : name_(name), steal_ok_(steal_ok), limits_(limits), shm_(std::make_unique<Shm>()) {
  remove(name);  // a crashed predecessor's segments, whose mutex may be held by a dead process
  try {
    shm_->segment = std::make_unique<Segment>(bip::create_only, segment_name(name).c_str(),
                                              limits.segment_size);
    shm_->mutex = std::make_unique<bip::named_mutex>(bip::create_only, mutex_name(name).c_str());
    shm_->cond = std::make_unique<bip::named_condition>(bip::create_only, cond_name(name).c_str());
    shm_->locks = shm_->segment->construct<LockMap>("locks")(std::less<uint64_t>(),
                                                             shm_->segment->get_segment_manager());
    shm_->header = shm_->segment->construct<Header>("header")();
  } catch (const bip::interprocess_exception& e) {
    remove(name);
    throw Error(Errc::os_failure, "cannot create the lock segments of server '" + name +
                                      "' in /dev/shm: " + e.what());
  }
}

LockTable::~LockTable() {
  stop_timer();
  shm_.reset();
  remove(name_);
}

void LockTable::remove(const std::string& name) {
  bip::shared_memory_object::remove(segment_name(name).c_str());
  bip::named_mutex::remove(mutex_name(name).c_str());
  bip::named_condition::remove(cond_name(name).c_str());
}

std::optional<SyncOutcome> LockTable::lock(uint64_t object, const Caller& c,
                                           std::optional<int64_t> timeout_ms, bool steal,
                                           int64_t bound_ms, std::vector<DeferredReply>& owed) {
  (void)owed;
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockRec& r = shm_->record(object);
  if (r.holder == c.monitor) {
    if (r.depth >= limits_.max_depth) return SyncOutcome{false, r.depth, kDeepRecursion, r.token};
    ++r.depth;
    return SyncOutcome{true, r.depth, 0, r.token};
  }
  const bool line_empty = std::none_of(r.waiters.begin(), r.waiters.end(),
                                       [](const Waiter& w) { return w.kind != WaitKind::wait; });
  if (r.holder == 0 && line_empty) {
    shm_->grant(r, c.monitor, 1);
    return SyncOutcome{true, 1, 0, r.token};
  }
  if (steal) {
    if (!steal_ok_) return SyncOutcome{false, 0, kStealRefused, 0};
    if (!timeout_ms || *timeout_ms <= 0) {
      shm_->steal(r, c.monitor);
      return SyncOutcome{true, 1, 0, r.token};
    }
  }
  if (timeout_ms && *timeout_ms <= 0) return SyncOutcome{false, 0, kTimeout, 0};
  const int64_t budget = timeout_ms ? std::min(*timeout_ms, bound_ms) : bound_ms;
  if (!shm_->park(r, c, budget, WaitKind::lock, 1, steal && timeout_ms.has_value(), limits_))
    return SyncOutcome{false, 0, kTooManyWaiters, 0};
  return std::nullopt;
}

SyncOutcome LockTable::unlock(uint64_t object, uint64_t monitor, int64_t count,
                              std::vector<DeferredReply>& owed) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockRec* r = shm_->find(object);
  if (r != nullptr && Shm::is_stolen(*r, monitor)) {
    // The theft is reported once, as Perl's "0 but true"; the monitor returns to NULL.
    Shm::unmark_stolen(*r, monitor);
    return SyncOutcome{true, 0, kStolen, r->token};
  }
  if (r == nullptr || r->holder != monitor) return SyncOutcome{false, 0, kNotHeld, 0};
  const int64_t released =
      (count < 0 || count >= static_cast<int64_t>(r->depth)) ? r->depth : count;
  r->depth -= static_cast<uint32_t>(released);
  if (r->depth == 0) {
    r->holder = 0;
    shm_->grant_next(*r, owed);
  }
  return SyncOutcome{true, released, 0, r->token};
}

std::optional<SyncOutcome> LockTable::wait(uint64_t object, const Caller& c,
                                           std::optional<int64_t> timeout_ms, int64_t bound_ms,
                                           std::vector<DeferredReply>& owed) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockRec* r = shm_->find(object);
  if (r == nullptr || r->holder != c.monitor) return SyncOutcome{false, 0, kNotHeld, 0};
  const uint32_t saved = r->depth;
  r->holder = 0;
  r->depth = 0;
  shm_->grant_next(*r, owed);
  if (timeout_ms && *timeout_ms <= 0) return SyncOutcome{false, 0, kTimeout, 0};
  const int64_t budget = timeout_ms ? std::min(*timeout_ms, bound_ms) : bound_ms;
  if (!shm_->park(*r, c, budget, WaitKind::wait, saved, false, limits_))
    return SyncOutcome{false, 0, kTooManyWaiters, 0};
  return std::nullopt;
}

SyncOutcome LockTable::notify(uint64_t object, uint64_t monitor, int64_t count) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockRec* r = shm_->find(object);
  if (r == nullptr || r->holder != monitor) return SyncOutcome{false, 0, kNotHeld, 0};
  // Notified waiters join the back of the line for the lock, in the order they waited.
  std::vector<Waiter> moved;
  for (auto it = r->waiters.begin(); it != r->waiters.end();) {
    if (it->kind == WaitKind::wait && (count < 0 || static_cast<int64_t>(moved.size()) < count)) {
      moved.push_back(*it);
      moved.back().kind = WaitKind::notified;
      it = r->waiters.erase(it);
    } else {
      ++it;
    }
  }
  for (const Waiter& w : moved) r->waiters.push_back(w);
  return SyncOutcome{true, static_cast<int64_t>(moved.size()), 0, r->token};
}

int LockTable::state(uint64_t object, uint64_t monitor) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockRec* r = shm_->find(object);
  if (r == nullptr) return 0;
  if (r->holder == monitor) return 4 + static_cast<int>(r->depth) - 1;
  if (Shm::is_stolen(*r, monitor)) return 3;
  for (const Waiter& w : r->waiters) {
    if (w.monitor != monitor) continue;
    if (w.kind == WaitKind::wait) return 1;
    if (w.kind == WaitKind::notified) return 2;
  }
  return 0;
}

LockInfo LockTable::info(uint64_t object) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockInfo info;
  info.object = object;
  const LockRec* r = shm_->find(object);
  if (r == nullptr) return info;
  info.holder = r->holder;
  info.depth = r->depth;
  info.token = r->token;
  for (const Waiter& w : r->waiters)
    (w.kind == WaitKind::wait ? info.wait_waiters : info.lock_waiters)++;
  info.stolen.assign(r->stolen.begin(), r->stolen.end());
  return info;
}

uint64_t LockTable::token(uint64_t object) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  LockRec* r = shm_->find(object);
  return r ? r->token : 0;
}

void LockTable::drop_monitor(uint64_t monitor, std::vector<DeferredReply>& owed) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  for (auto& [object, r] : *shm_->locks) {
    for (auto it = r.waiters.begin(); it != r.waiters.end();) {
      if (it->monitor == monitor) {
        it = r.waiters.erase(it);
        --shm_->header->waiters;
      } else {
        ++it;
      }
    }
    Shm::unmark_stolen(r, monitor);
    if (r.holder == monitor) {
      r.holder = 0;
      r.depth = 0;
      shm_->grant_next(r, owed);
    }
  }
}

bool LockTable::timer_step(std::vector<DeferredReply>& owed) {
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  for (;;) {
    if (shm_->stopping) return false;
    const int64_t now = now_ns();
    int64_t next = kNever;
    for (auto& [object, r] : *shm_->locks) {
      for (auto it = r.waiters.begin(); it != r.waiters.end();) {
        if (it->deadline_ns > now) {
          next = std::min(next, it->deadline_ns);
          ++it;
          continue;
        }
        const Waiter w = *it;
        it = r.waiters.erase(it);
        --shm_->header->waiters;
        if (w.steal && w.kind == WaitKind::lock && steal_ok_) {
          shm_->steal(r, w.monitor);
          owed.push_back(reply_to(w, SyncOutcome{true, 1, 0, r.token}));
        } else {
          owed.push_back(reply_to(w, SyncOutcome{false, 0, kTimeout, 0}));
        }
      }
    }
    if (!owed.empty()) return true;
    shm_->header->timer_next_ns = next;
    if (next == kNever) {
      shm_->cond->wait(guard);
    } else {
      const auto abs = boost::posix_time::microsec_clock::universal_time() +
                       boost::posix_time::microseconds((next - now) / 1000 + 1);
      shm_->cond->timed_wait(guard, abs);
    }
  }
}

void LockTable::stop_timer() {
  if (!shm_ || !shm_->mutex) return;
  bip::scoped_lock<bip::named_mutex> guard(*shm_->mutex);
  shm_->stopping = true;
  shm_->cond->notify_all();
}

std::vector<LockInfo> LockTable::inspect(const std::string& name) {
  std::vector<LockInfo> out;
  try {
    Segment segment(bip::open_read_only, segment_name(name).c_str());
    bip::named_mutex mutex(bip::open_only, mutex_name(name).c_str());
    auto* locks = segment.find<LockMap>("locks").first;
    if (locks == nullptr) throw Error(Errc::not_found, "no lock table in the segment");
    bip::scoped_lock<bip::named_mutex> guard(mutex);
    for (const auto& [object, r] : *locks) {
      LockInfo info;
      info.object = object;
      info.holder = r.holder;
      info.depth = r.depth;
      info.token = r.token;
      for (const Waiter& w : r.waiters)
        (w.kind == WaitKind::wait ? info.wait_waiters : info.lock_waiters)++;
      info.stolen.assign(r.stolen.begin(), r.stolen.end());
      out.push_back(std::move(info));
    }
  } catch (const bip::interprocess_exception& e) {
    throw Error(Errc::not_found,
                "no lock segments for server '" + name + "' in /dev/shm (" + e.what() + ")");
  }
  return out;
}

std::vector<std::string> LockTable::servers() {
  std::vector<std::string> out;
  DIR* d = opendir("/dev/shm");
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    const std::string prefix = "patro-", suffix = "-locks";
    if (n.size() > prefix.size() + suffix.size() && n.rfind(prefix, 0) == 0 &&
        n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(n.substr(prefix.size(), n.size() - prefix.size() - suffix.size()));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace patro::detail
