#include "lock_table.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/deque.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/managed_external_buffer.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <boost/interprocess/sync/named_condition.hpp>
#include <boost/interprocess/sync/named_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <thread>

#include "log.hpp"
#include "mutex.hpp"
#include "os_failure.hpp"
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

using Buffer = bip::managed_external_buffer;
template <class T>
using Alloc = bip::allocator<T, Buffer::segment_manager>;

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

struct Counters {
  uint64_t waiters = 0;            // parked requests, all objects
  int64_t timer_next_ns = kNever;  // when the timer will next wake by itself
};

// The segment starts with this fixed header, so that a reader checks what it maps before it
// follows a single pointer; Boost's allocator manages the bytes after it.
constexpr char kMagic[8] = {'P', 'A', 'T', 'R', 'O', 'L', 'K', '\0'};
constexpr uint32_t kVersion = 2;  // 1: a managed_shared_memory with named objects, no header
constexpr size_t kHeaderBytes = 128;
constexpr uint64_t kMaxSegment = uint64_t{1} << 34;
struct SegHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t size;  // of the whole segment
  uint64_t locks_offset;
  uint64_t counters_offset;
  uint64_t max_depth;
  uint64_t max_waiters;
  uint64_t owner_uid;
};
static_assert(sizeof(SegHeader) <= kHeaderBytes);

// The guard file beside the segments, /dev/shm/patro-NAME-locks-guard, carries open-file-
// description locks, which the kernel drops with the process that held them:
// - byte 0, the owner's: the server holds it for its life. A second server of the same name
//   cannot take it and refuses to start; one that can knows the segments it finds are a dead
//   server's.
// - byte 1, a visitor's (patro-locks): held from before it takes the named mutex until after it
//   releases it, with its pid written at kVisitorField: +pid while waiting for the mutex or
//   leaving it, -pid while holding it. A server that cannot take the mutex and can take byte 1
//   knows that no live visitor holds the mutex, and a -pid left there names one that died
//   holding it (Boost 1.74's named mutex, a POSIX semaphore, has no robust mode).
// The file's bytes: the owner's pid at kOwnerField, the visitor's at kVisitorField.
constexpr off_t kOwnerByte = 0, kVisitorByte = 1;
constexpr off_t kOwnerField = 0, kVisitorField = 8;

// A server thread that waits this long for the mutex looks for a dead holder.
constexpr auto kStuckAfter = std::chrono::milliseconds(250);
// A holder that left no mark (a process that took the mutex without the visitor protocol, or
// died between taking it and marking it) is presumed dead after this many such turns with no
// live visitor at the mutex and no thread of this server holding it.
constexpr int kUnmarkedTurns = 8;
// How long a visitor waits for byte 1 and for the mutex before it reports the table busy.
constexpr auto kVisitorPatience = std::chrono::seconds(2);

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

boost::posix_time::ptime in(std::chrono::microseconds d) {
  return boost::posix_time::microsec_clock::universal_time() +
         boost::posix_time::microseconds(d.count());
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
std::string guard_path(const std::string& n) {
  return "/dev/shm/" + segment_name(n) + "-guard";
}
// Where Linux keeps each of them (glibc: a named semaphore is sem.NAME).
std::vector<std::string> shm_paths(const std::string& n) {
  return {"/dev/shm/" + segment_name(n), "/dev/shm/sem." + mutex_name(n),
          "/dev/shm/" + cond_name(n), guard_path(n)};
}

std::string user_name(uid_t uid) {
  const passwd* pw = ::getpwuid(uid);
  return (pw != nullptr ? std::string(pw->pw_name) : std::string("?")) + " (uid " +
         std::to_string(uid) + ")";
}

// Refuses a file of another user's: it could read or rewrite every lock of the server.
void check_owner(const std::string& path, const struct stat& st, const std::string& server) {
  if (st.st_uid != ::geteuid())
    throw Error(Errc::invalid_argument,
                path + " belongs to user " + user_name(st.st_uid) + ", not to this process's " +
                    user_name(::geteuid()) + ": the lock segments of server '" + server +
                    "' must be its own (remove that file as its owner, or choose another name)");
  if (!S_ISREG(st.st_mode)) throw Error(Errc::invalid_argument, path + " is not a regular file");
}

bool ofd_lock(int fd, off_t byte, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  while (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

int64_t read_field(int fd, off_t at) {
  int64_t v = 0;
  if (::pread(fd, &v, sizeof v, at) != static_cast<ssize_t>(sizeof v)) return 0;
  return v;
}
void write_field(int fd, off_t at, int64_t v) {
  (void)!::pwrite(fd, &v, sizeof v, at);
}

// Opens the guard file: created (0600) by an owner, only opened by a visitor; refused if it is
// another user's or not a plain file. -1 with errno ENOENT: there is none.
int open_guard(const std::string& server, bool create) {
  const std::string path = guard_path(server);
  const int fd =
      ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    if ((err == EACCES || err == EPERM) && ::lstat(path.c_str(), &st) == 0)
      check_owner(path, st, server);
    if (err == ENOENT && !create) return -1;
    throw os_failure("cannot open " + path, err);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw os_failure("cannot stat " + path, err);
  }
  try {
    check_owner(path, st, server);
  } catch (...) {
    ::close(fd);
    throw;
  }
  return fd;
}

// True if fd is still the file at its path (not one unlinked by a server that removed it).
bool still_there(int fd, const std::string& path) {
  struct stat a {
  }, b{};
  return ::fstat(fd, &a) == 0 && ::lstat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// Takes the owner's byte of server's guard file; -1 if a live server holds it (its pid in
// *holder). Removes nothing.
int take_ownership(const std::string& server, bool create, int64_t* holder) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = open_guard(server, create);
    if (fd < 0) return -1;
    if (!ofd_lock(fd, kOwnerByte, F_WRLCK)) {
      if (holder != nullptr) *holder = read_field(fd, kOwnerField);
      ::close(fd);
      return -1;
    }
    if (still_there(fd, guard_path(server))) return fd;
    ::close(fd);  // unlinked under us by a server that was removing it: open the new one
  }
  throw Error(Errc::internal, "the guard file " + guard_path(server) + " keeps being replaced");
}

void remove_objects(const std::string& n) {
  bip::shared_memory_object::remove(segment_name(n).c_str());
  bip::named_mutex::remove(mutex_name(n).c_str());
  bip::named_condition::remove(cond_name(n).c_str());
}

// The names of the tables this process owns. A process reading its own table reads it in
// place: a fault there would be its own server's next lock operation's anyway.
Mutex owned_mu;
std::set<std::string>& owned() {
  static std::set<std::string> names;
  return names;
}
bool owned_here(const std::string& name) {
  MutexLock lock(owned_mu);
  return owned().count(name) > 0;
}

DeferredReply reply_to(const Waiter& w, SyncOutcome o) {
  const size_t len = std::min<size_t>(w.routing_len, sizeof w.routing);
  return DeferredReply{std::string(w.routing, len), w.request_id, o, w.monitor};
}

}  // namespace

struct LockTable::Shm {
  std::string name;
  int guard_fd = -1;  // the guard file, its owner's byte held
  std::unique_ptr<bip::shared_memory_object> object;
  std::unique_ptr<bip::mapped_region> region;
  std::unique_ptr<Buffer> buffer;
  SegHeader expected{};  // what this server wrote at the segment's start
  std::unique_ptr<bip::named_mutex> mutex;
  std::unique_ptr<bip::named_condition> cond;
  LockMap* locks = nullptr;
  Counters* header = nullptr;
  std::atomic<bool> stopping{false};
  std::atomic<int> own_holders{0};  // threads of this process that hold the named mutex
  Mutex recover_mu;                 // one thread at a time looks for a dead holder
  bool told_corrupt = false;        // the timer logged the overwritten header (its thread only)

  ~Shm() {
    if (guard_fd >= 0) ::close(guard_fd);
  }

  SegHeader* seg() const { return static_cast<SegHeader*>(region->get_address()); }
  // The header as this server wrote it: a segment overwritten by another process (it can only
  // be one of this user's) is refused with an error instead of being followed.
  bool intact() const { return std::memcmp(seg(), &expected, sizeof expected) == 0; }
  void check() const {
    if (!intact())
      throw Error(Errc::internal, "the lock segment /dev/shm/" + segment_name(name) +
                                      " was overwritten by another process (its header no "
                                      "longer matches); restart the server");
  }

  // Takes the named mutex. Each kStuckAfter without it, looks for a dead holder to release.
  void acquire() {
    int unmarked = 0;
    for (;;) {
      if (mutex->timed_lock(in(kStuckAfter))) {
        own_holders.fetch_add(1);
        return;
      }
      recover(unmarked);
    }
  }

  void recover(int& unmarked) PATRO_EXCLUDES(recover_mu) {
    MutexLock one(recover_mu);
    // A live visitor at the mutex holds byte 1: it may be the holder, and it gives up within
    // kVisitorPatience. Taking byte 1 also keeps new visitors out while this looks.
    if (guard_fd < 0 || !ofd_lock(guard_fd, kVisitorByte, F_WRLCK)) {
      unmarked = 0;
      return;
    }
    const int64_t visitor = read_field(guard_fd, kVisitorField);
    bool release = false;
    if (visitor < 0) {
      release = true;  // it marked itself holding, and its byte is free: it died holding
    } else if (own_holders.load() == 0) {
      release = ++unmarked >= kUnmarkedTurns;
    } else {
      unmarked = 0;
    }
    if (release) {
      write_field(guard_fd, kVisitorField, 0);
      mutex->unlock();  // a semaphore's post: any process may release it
      unmarked = 0;
      PATRO_LOG(warn, "locks") << "server '" << name << "': "
                               << (visitor < 0 ? "process " + std::to_string(-visitor)
                                               : std::string("a process that left no mark"))
                               << " died holding the lock table's mutex; released it";
    }
    ofd_lock(guard_fd, kVisitorByte, F_UNLCK);
  }

  LockRec& record(uint64_t object) {
    auto it = locks->find(object);
    if (it == locks->end())
      it = locks->emplace(object, LockRec(buffer->get_segment_manager())).first;
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

  // The named mutex, held by a thread of the owning server (taken through Shm::acquire).
  class Held {
   public:
    explicit Held(Shm& s, bool check = true) : s_(s) {
      s_.acquire();
      lock_ = bip::scoped_lock<bip::named_mutex>(*s_.mutex, bip::accept_ownership);
      if (check) {
        try {
          s_.check();
        } catch (...) {
          release();
          throw;
        }
      }
    }
    ~Held() { release(); }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;

    void wait() {
      s_.own_holders.fetch_sub(1);
      s_.cond->wait(lock_);
      s_.own_holders.fetch_add(1);
    }
    void wait_until(const boost::posix_time::ptime& abs) {
      s_.own_holders.fetch_sub(1);
      s_.cond->timed_wait(lock_, abs);
      s_.own_holders.fetch_add(1);
    }

   private:
    void release() {
      if (!lock_.owns()) return;
      s_.own_holders.fetch_sub(1);
      lock_.unlock();
    }
    Shm& s_;
    bip::scoped_lock<bip::named_mutex> lock_;
  };
};

LockTable::LockTable(const std::string& name, bool steal_ok, const LockLimits& limits)
    : name_(name), steal_ok_(steal_ok), limits_(limits), shm_(std::make_unique<Shm>()) {
  Shm& s = *shm_;
  s.name = name;
  int64_t live = 0;
  s.guard_fd = take_ownership(name, true, &live);
  if (s.guard_fd < 0)
    throw Error(Errc::name_taken, "server name '" + name +
                                      "' is in use: its lock segments in /dev/shm belong to a "
                                      "live server (pid " +
                                      std::to_string(live) +
                                      "); stop it first, or choose another name");
  write_field(s.guard_fd, kOwnerField, ::getpid());
  write_field(s.guard_fd, kVisitorField, 0);
  // Whatever else is there is a dead server's (nobody held the owner's byte), unless another
  // user put it there.
  for (const std::string& path : shm_paths(name)) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) check_owner(path, st, name);
  }
  remove_objects(name);
  const bip::permissions mine(0600);
  try {
    const size_t size = std::max<size_t>(limits.segment_size, 64 * 1024);
    s.object = std::make_unique<bip::shared_memory_object>(
        bip::create_only, segment_name(name).c_str(), bip::read_write, mine);
    s.object->truncate(static_cast<bip::offset_t>(size));
    s.region = std::make_unique<bip::mapped_region>(*s.object, bip::read_write);
    char* base = static_cast<char*>(s.region->get_address());
    s.buffer = std::make_unique<Buffer>(bip::create_only, base + kHeaderBytes,
                                        s.region->get_size() - kHeaderBytes);
    s.locks = s.buffer->construct<LockMap>(bip::anonymous_instance)(
        std::less<uint64_t>(), s.buffer->get_segment_manager());
    s.header = s.buffer->construct<Counters>(bip::anonymous_instance)();
    SegHeader& h = s.expected;
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.version = kVersion;
    h.header_bytes = kHeaderBytes;
    h.size = s.region->get_size();
    h.locks_offset = static_cast<uint64_t>(reinterpret_cast<char*>(s.locks) - base);
    h.counters_offset = static_cast<uint64_t>(reinterpret_cast<char*>(s.header) - base);
    h.max_depth = limits.max_depth;
    h.max_waiters = limits.max_waiters;
    h.owner_uid = ::geteuid();
    std::memcpy(base, &h, sizeof h);
    s.mutex = std::make_unique<bip::named_mutex>(bip::create_only, mutex_name(name).c_str(), mine);
    s.cond =
        std::make_unique<bip::named_condition>(bip::create_only, cond_name(name).c_str(), mine);
    MutexLock lock(owned_mu);
    owned().insert(name);
  } catch (const bip::interprocess_exception& e) {
    shm_.reset();
    remove_objects(name);
    ::unlink(guard_path(name).c_str());
    throw Error(Errc::os_failure, "cannot create the lock segments of server '" + name +
                                      "' in /dev/shm: " + e.what());
  }
}

LockTable::~LockTable() {
  {
    MutexLock lock(owned_mu);
    owned().erase(name_);
  }
  stop_timer();
  const int guard = std::exchange(shm_->guard_fd, -1);
  shm_.reset();
  // Still holding the owner's byte: nobody else removes or recreates them meanwhile.
  remove_objects(name_);
  ::unlink(guard_path(name_).c_str());
  ::close(guard);
}

void LockTable::remove_owned() noexcept {
  try {
    MutexLock lock(owned_mu);
    for (const std::string& name : owned()) {
      remove_objects(name);
      ::unlink(guard_path(name).c_str());
    }
  } catch (...) {
  }
}

bool LockTable::remove(const std::string& name) {
  struct stat st {};
  if (::lstat(guard_path(name).c_str(), &st) != 0) {
    remove_objects(name);  // no guard: nobody owns them
    return true;
  }
  int fd = -1;
  try {
    fd = take_ownership(name, false, nullptr);
  } catch (const Error&) {
    return false;  // another user's, or unreadable: not ours to remove
  }
  if (fd < 0) return false;  // a live server's
  remove_objects(name);
  ::unlink(guard_path(name).c_str());
  ::close(fd);
  return true;
}

std::optional<SyncOutcome> LockTable::lock(uint64_t object, const Caller& c,
                                           std::optional<int64_t> timeout_ms, bool steal,
                                           int64_t bound_ms, std::vector<DeferredReply>& owed) {
  (void)owed;
  Shm::Held guard(*shm_);
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
  Shm::Held guard(*shm_);
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
  Shm::Held guard(*shm_);
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
  Shm::Held guard(*shm_);
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
  Shm::Held guard(*shm_);
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
  Shm::Held guard(*shm_);
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
  Shm::Held guard(*shm_);
  LockRec* r = shm_->find(object);
  return r ? r->token : 0;
}

void LockTable::drop_monitor(uint64_t monitor, std::vector<DeferredReply>& owed) {
  std::optional<Shm::Held> guard;
  try {
    guard.emplace(*shm_);
  } catch (const Error& e) {
    // Called as a client leaves, where nobody would see an exception: its locks stay as they
    // are in the overwritten segment, and every lock operation reports the damage.
    PATRO_LOG(error, "locks") << e.what();
    return;
  }
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
  Shm::Held guard(*shm_, false);
  for (;;) {
    if (shm_->stopping) return false;
    if (!shm_->intact()) {
      // Overwritten: nothing in it can be followed. Lock operations report it; the timer waits
      // for the stop.
      if (!std::exchange(shm_->told_corrupt, true)) {
        try {
          shm_->check();
        } catch (const Error& e) {
          PATRO_LOG(error, "locks") << e.what();
        }
      }
      guard.wait_until(in(std::chrono::seconds(1)));
      continue;
    }
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
    if (next == kNever)
      guard.wait();
    else
      guard.wait_until(in(std::chrono::microseconds((next - now) / 1000 + 1)));
  }
}

void LockTable::stop_timer() {
  if (!shm_ || !shm_->mutex) return;
  Shm::Held guard(*shm_, false);
  shm_->stopping = true;
  shm_->cond->notify_all();
}

namespace {

// One lock, as the reading child sends it to inspect(); `stolen` monitors follow it.
struct Sent {
  uint64_t object, holder, token, lock_waiters, wait_waiters, stolen;
  uint32_t depth;
  int32_t bad;  // a failed per-record check (then nothing follows)
};
enum Bad : int32_t {
  kGood = 0,
  kTooManyRecords,
  kRecordOutside,
  kBadDepth,
  kHolderDepth,
  kManyWaiters,
  kBadWaiter,
  kTooManyStolen
};
const char* bad_text(int32_t b) {
  switch (b) {
    case kTooManyRecords:
      return "more records than the segment can hold";
    case kRecordOutside:
      return "a record outside the segment";
    case kBadDepth:
      return "a lock deeper than the server's limit";
    case kHolderDepth:
      return "a holder without depth, or depth without a holder";
    case kManyWaiters:
      return "more waiters than the server's limit";
    case kBadWaiter:
      return "a waiter with an impossible kind, depth or routing id";
    case kTooManyStolen:
      return "an impossible list of stolen monitors";
    default:
      return "a record that fails its checks";
  }
}

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Walks the map, checks each record, and hands each to put(bytes, n) (false: stop). Returns
// the failed check, if any, after sending it.
template <class Put>
int32_t walk_locks(const char* base, const SegHeader& h, Put&& put) {
  const auto& locks = *reinterpret_cast<const LockMap*>(base + h.locks_offset);
  const size_t n = locks.size();
  auto fail = [&](int32_t why) {
    Sent s{};
    s.bad = why;
    put(&s, sizeof s);
    return why;
  };
  if (n > h.size / sizeof(LockRec)) return fail(kTooManyRecords);
  size_t seen = 0;
  for (const auto& [object, r] : locks) {
    const char* at = reinterpret_cast<const char*>(&r);
    if (++seen > n || at < base + kHeaderBytes || at + sizeof r > base + h.size)
      return fail(kRecordOutside);
    if (r.depth > h.max_depth) return fail(kBadDepth);
    if ((r.holder == 0) != (r.depth == 0)) return fail(kHolderDepth);
    if (r.waiters.size() > h.max_waiters) return fail(kManyWaiters);
    if (r.stolen.size() > h.size / sizeof(uint64_t)) return fail(kTooManyStolen);
    Sent s{object, r.holder, r.token, 0, 0, r.stolen.size(), r.depth, kGood};
    for (const Waiter& w : r.waiters) {
      if (static_cast<uint8_t>(w.kind) > 2 || w.routing_len > sizeof w.routing || w.depth == 0 ||
          w.depth > h.max_depth)
        return fail(kBadWaiter);
      (w.kind == WaitKind::wait ? s.wait_waiters : s.lock_waiters)++;
    }
    if (!put(&s, sizeof s)) return kGood;
    for (uint64_t m : r.stolen)
      if (!put(&m, sizeof m)) return kGood;
  }
  return kGood;
}

// In a forked child: a pointer that garbage sent astray ends this child, not the reader.
[[noreturn]] void send_locks(int out, const char* base, const SegHeader& h) {
  bool ok = true;
  walk_locks(base, h, [&](const void* p, size_t n) { return ok = write_all(out, p, n); });
  ::_exit(ok ? 0 : 1);
}

// The segment of `server`, mapped read-only and its header checked; throws what is wrong.
class Mapped {
 public:
  explicit Mapped(const std::string& server) {
    const std::string path = "/dev/shm/" + segment_name(server);
    fd_ = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd_ < 0)
      throw Error(Errc::not_found, "no lock segments for server '" + server + "' in /dev/shm (" +
                                       path + ": " + std::strerror(errno) + ")");
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      throw os_failure("cannot stat " + path, err);
    }
    check_owner(path, st, server);
    const auto bad = [&](const std::string& what) {
      return Error(Errc::bad_message, path + " is not a Patro lock segment: " + what);
    };
    if (st.st_size < static_cast<off_t>(kHeaderBytes) ||
        static_cast<uint64_t>(st.st_size) > kMaxSegment)
      throw bad("its size, " + std::to_string(st.st_size) + " bytes, is impossible");
    size_ = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      throw os_failure("cannot map " + path, err);
    }
    base_ = static_cast<const char*>(p);
    std::memcpy(&h_, base_, sizeof h_);
    if (std::memcmp(h_.magic, kMagic, sizeof kMagic) != 0) throw bad("no magic at its start");
    if (h_.version != kVersion)
      throw bad("layout version " + std::to_string(h_.version) + ", this build reads " +
                std::to_string(kVersion) + " (another version of Patro made it)");
    if (h_.header_bytes != kHeaderBytes || h_.size != size_)
      throw bad("its header says " + std::to_string(h_.size) + " bytes, the file has " +
                std::to_string(size_));
    const auto inside = [&](uint64_t off, size_t len) {
      return off % alignof(uint64_t) == 0 && off >= kHeaderBytes && off <= size_ - len;
    };
    if (!inside(h_.locks_offset, sizeof(LockMap)) || !inside(h_.counters_offset, sizeof(Counters)))
      throw bad("its header points outside it");
    if (h_.owner_uid != st.st_uid) throw bad("its header names another owner");
    if (h_.max_depth > std::numeric_limits<uint32_t>::max() || h_.max_waiters > size_)
      throw bad("impossible limits in its header");
  }
  ~Mapped() {
    if (base_ != nullptr) ::munmap(const_cast<char*>(base_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;

  // Reads every lock in a child process, within kVisitorPatience.
  std::vector<LockInfo> read(const std::string& server) const {
    const std::string what = "the lock segment of server '" + server + "'";
    if (owned_here(server)) {
      std::string bytes;
      walk_locks(base_, h_, [&](const void* p, size_t n) {
        bytes.append(static_cast<const char*>(p), n);
        return true;
      });
      return parse(bytes, what);
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      const int err = errno;
      throw os_failure("pipe2 to read " + what, err);
    }
    const pid_t child = ::fork();
    if (child < 0) {
      const int err = errno;
      ::close(fds[0]);
      ::close(fds[1]);
      throw os_failure("fork to read " + what, err);
    }
    if (child == 0) {
      ::close(fds[0]);
      send_locks(fds[1], base_, h_);
    }
    ::close(fds[1]);
    std::string bytes;
    const auto give_up = std::chrono::steady_clock::now() + kVisitorPatience;
    bool finished = false;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          give_up - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      pollfd pfd{fds[0], POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
      char buf[4096];
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        finished = n == 0;
        break;
      }
      bytes.append(buf, static_cast<size_t>(n));
    }
    ::close(fds[0]);
    if (!finished) ::kill(child, SIGKILL);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (!finished) throw Error(Errc::bad_message, what + " is corrupt: reading it did not finish");
    if (WIFSIGNALED(status))
      throw Error(Errc::bad_message, what + " is corrupt: reading it faulted (signal " +
                                         std::to_string(WTERMSIG(status)) + ")");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw Error(Errc::internal, "reading " + what + " was cut short");
    return parse(bytes, what);
  }

 private:
  static std::vector<LockInfo> parse(const std::string& bytes, const std::string& what) {
    std::vector<LockInfo> out;
    size_t at = 0;
    while (at + sizeof(Sent) <= bytes.size()) {
      Sent s{};
      std::memcpy(&s, bytes.data() + at, sizeof s);
      at += sizeof s;
      if (s.bad != kGood) throw Error(Errc::bad_message, what + " is corrupt: " + bad_text(s.bad));
      LockInfo info;
      info.object = s.object;
      info.holder = s.holder;
      info.depth = s.depth;
      info.token = s.token;
      info.lock_waiters = s.lock_waiters;
      info.wait_waiters = s.wait_waiters;
      if (s.stolen > (bytes.size() - at) / sizeof(uint64_t)) break;
      info.stolen.resize(s.stolen);
      if (s.stolen != 0)  // an empty vector's data() may be null, which memcpy may not take
        std::memcpy(info.stolen.data(), bytes.data() + at, s.stolen * sizeof(uint64_t));
      at += s.stolen * sizeof(uint64_t);
      out.push_back(std::move(info));
    }
    if (at != bytes.size()) throw Error(Errc::internal, "reading " + what + " was cut short");
    return out;
  }

  int fd_ = -1;
  const char* base_ = nullptr;
  size_t size_ = 0;
  SegHeader h_{};
};

}  // namespace

void LockTable::visit(const std::string& server, const std::function<void()>& while_held) {
  const int fd = open_guard(server, false);
  if (fd < 0)
    throw Error(Errc::not_found, "no lock segments for server '" + server + "' in /dev/shm");
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }  // drops byte 1
  } closer{fd};
  const auto give_up = std::chrono::steady_clock::now() + kVisitorPatience;
  while (!ofd_lock(fd, kVisitorByte, F_WRLCK)) {
    if (std::chrono::steady_clock::now() > give_up)
      throw Error(Errc::timeout,
                  "the lock table of server '" + server + "' stayed busy (another reader held it)");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::unique_ptr<bip::named_mutex> mutex;
  try {
    mutex = std::make_unique<bip::named_mutex>(bip::open_only, mutex_name(server).c_str());
  } catch (const bip::interprocess_exception& e) {
    throw Error(Errc::not_found,
                "no lock segments for server '" + server + "' in /dev/shm (" + e.what() + ")");
  }
  const int64_t me = ::getpid();
  write_field(fd, kVisitorField, me);
  if (!mutex->timed_lock(in(kVisitorPatience))) {
    write_field(fd, kVisitorField, 0);
    throw Error(Errc::timeout, "the lock table of server '" + server + "' stayed busy for " +
                                   std::to_string(kVisitorPatience.count()) + " s");
  }
  write_field(fd, kVisitorField, -me);
  struct Leave {
    int fd;
    int64_t me;
    bip::named_mutex& mutex;
    ~Leave() {
      write_field(fd, kVisitorField, me);  // not holding any more, as far as a reader can tell
      mutex.unlock();
      write_field(fd, kVisitorField, 0);
    }
  } leave{fd, me, *mutex};
  while_held();
}

std::vector<LockInfo> LockTable::inspect(const std::string& name) {
  const Mapped segment(name);
  std::vector<LockInfo> out;
  visit(name, [&] { out = segment.read(name); });
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
