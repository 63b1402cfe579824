// A mutex that carries clang thread-safety annotations, so -Wthread-safety checks lock discipline
// (the annotations compile to nothing elsewhere). Modelled on libcamera's base/mutex.h.
#pragma once

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define PATRO_TSA(x) __attribute__((x))
#else
#define PATRO_TSA(x)
#endif

#define PATRO_CAPABILITY(x) PATRO_TSA(capability(x))
#define PATRO_SCOPED_CAPABILITY PATRO_TSA(scoped_lockable)
#define PATRO_GUARDED_BY(x) PATRO_TSA(guarded_by(x))
#define PATRO_REQUIRES(...) PATRO_TSA(requires_capability(__VA_ARGS__))
#define PATRO_ACQUIRE(...) PATRO_TSA(acquire_capability(__VA_ARGS__))
#define PATRO_RELEASE(...) PATRO_TSA(release_capability(__VA_ARGS__))
#define PATRO_TRY_ACQUIRE(...) PATRO_TSA(try_acquire_capability(__VA_ARGS__))
#define PATRO_EXCLUDES(...) PATRO_TSA(locks_excluded(__VA_ARGS__))
#define PATRO_NO_TSA PATRO_TSA(no_thread_safety_analysis)

namespace patro::detail {

class PATRO_CAPABILITY("mutex") Mutex {
 public:
  void lock() PATRO_ACQUIRE() { m_.lock(); }
  void unlock() PATRO_RELEASE() { m_.unlock(); }
  bool try_lock() PATRO_TRY_ACQUIRE(true) { return m_.try_lock(); }
  std::mutex& native() { return m_; }

 private:
  std::mutex m_;
};

class PATRO_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) PATRO_ACQUIRE(m) : lock_(m.native()) {}
  ~MutexLock() PATRO_RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  void unlock() PATRO_RELEASE() { lock_.unlock(); }
  void lock() PATRO_ACQUIRE() { lock_.lock(); }
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

using CondVar = std::condition_variable;

}  // namespace patro::detail
