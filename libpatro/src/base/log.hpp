// Logging with levels (the public side is patro/logging.hpp). The level comes from
// set_log_level, else PATRO_DEBUG (set and not "0": trace), else PATRO_LOG_LEVEL (error, warn,
// info, debug, trace, in any case; default warn).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>

#include "mutex.hpp"
#include "patro/logging.hpp"

namespace patro::detail {

using LogLevel = ::patro::LogLevel;

inline LogLevel log_level() noexcept {
  return ::patro::log_level();
}
void log_line(LogLevel level, const std::string& who, const std::string& text) noexcept;

/// Whether the level is trace: kept with the level by log_level() and set_log_level().
extern std::atomic<bool> g_wire_trace;
/// Whether to log every request and reply (the wire trace): one relaxed load, so that the
/// request path pays a single branch when it is off. Read log_level() once first (a Connection
/// or Server does, when made) so that the environment has been read.
inline bool wire_trace() noexcept {
  return g_wire_trace.load(std::memory_order_relaxed);
}

}  // namespace patro::detail

// PATRO_LOG(info, "broker") << "bound " << endpoint;
// A for statement rather than if/else, so that the macro is safe inside an unbraced if.
#define PATRO_LOG(level, who)                                                                  \
  for (bool patro_log_once = ::patro::detail::LogLevel::level <= ::patro::detail::log_level(); \
       patro_log_once; patro_log_once = false)                                                 \
  ::patro::detail::LogStream(::patro::detail::LogLevel::level, who).stream()

// PATRO_LOG_LIMITED(warn, "broker", limiter) << "..."; for lines a peer can cause at will: at
// most the limiter's burst per period are written, and the next one written after some were held
// back ends with "(N more suppressed)". Whatever counts the events (metrics) counts each.
#define PATRO_LOG_LIMITED(level, who, limiter)                                    \
  for (uint64_t patro_log_held = 0,                                               \
                patro_log_once = ::patro::detail::log_limited(                    \
                    (limiter), ::patro::detail::LogLevel::level, patro_log_held); \
       patro_log_once; patro_log_once = 0)                                        \
  ::patro::detail::LogStream(::patro::detail::LogLevel::level, who, patro_log_held).stream()

namespace patro::detail {
class LogStream {
 public:
  LogStream(LogLevel level, const char* who, uint64_t suppressed = 0)
      : level_(level), who_(who), suppressed_(suppressed) {}
  ~LogStream() {
    if (suppressed_ > 0) out_ << " (" << suppressed_ << " more suppressed)";
    log_line(level_, who_, out_.str());
  }
  std::ostringstream& stream() { return out_; }

 private:
  LogLevel level_;
  const char* who_;
  uint64_t suppressed_;
  std::ostringstream out_;
};

/// One kind of log line that a peer can cause at will: at most `burst` lines each `period`.
/// Thread-safe.
class LogLimiter {
 public:
  LogLimiter() : LogLimiter(std::chrono::seconds(10), 5) {}
  LogLimiter(std::chrono::milliseconds period, unsigned burst) : period_(period), burst_(burst) {}
  /// Whether a line may be written now; if so, `held` is how many were held back since the last
  /// one written (and the count starts again).
  bool allow(uint64_t& held) PATRO_EXCLUDES(mu_);

 private:
  const std::chrono::milliseconds period_;
  const unsigned burst_;
  Mutex mu_;
  std::chrono::steady_clock::time_point start_ PATRO_GUARDED_BY(mu_);
  unsigned written_ PATRO_GUARDED_BY(mu_) = 0;
  uint64_t held_ PATRO_GUARDED_BY(mu_) = 0;
};

// For PATRO_LOG_LIMITED: the limiter is an argument, so an expression that names it (one that
// counts the event, say) is evaluated whatever the level.
inline bool log_limited(LogLimiter& limiter, LogLevel level, uint64_t& held) {
  return level <= log_level() && limiter.allow(held);
}
}  // namespace patro::detail
