// Logging with levels and selections (the public side is patro/logging.hpp). The level comes
// from set_log_level, else PATRO_DEBUG (set and not "0": trace), else PATRO_LOG_LEVEL (fatal,
// error, warn, info, verbose, debug, trace, in any case; default warn); the selections from
// set_log_selections, else PATRO_LOG_SELECTIONS (default: every component).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "mutex.hpp"
#include "patro/logging.hpp"

namespace patro::detail {

using LogLevel = ::patro::LogLevel;

inline LogLevel log_level() noexcept {
  return ::patro::log_level();
}

/// The level in force as its log_verbosity, or kVerbosityUnread until the environment is read:
/// above every level, so that a line's first test passes and log_enabled reads it then.
extern std::atomic<int> g_verbosity;
constexpr int kVerbosityUnread = 1000;
bool log_enabled_unread(LogLevel level) noexcept;
/// Whether a line at level is written: one relaxed load and a compare with a constant when it is
/// not (the environment is read the first time).
inline bool log_enabled(LogLevel level) noexcept {
  const int v = g_verbosity.load(std::memory_order_relaxed);
  if (::patro::log_verbosity(level) > v) return false;
  return v != kVerbosityUnread || log_enabled_unread(level);
}

/// Whether any selection narrows the components (else every one is selected), or
/// kSelectionsUnread until PATRO_LOG_SELECTIONS is read or set_log_selections called.
enum : int { kSelectionsUnread = 0, kSelectEvery = 1, kSelectSome = 2 };
extern std::atomic<int> g_selecting;
bool log_selected_slow(std::string_view who) noexcept;
/// Whether component who's lines are written: one relaxed load when nothing narrows them.
inline bool log_selected(std::string_view who) noexcept {
  return g_selecting.load(std::memory_order_relaxed) == kSelectEvery || log_selected_slow(who);
}

/// Writes a line that log_enabled and log_selected let through (PATRO_LOG's, tested before
/// the line was formatted), without testing them again.
void log_line(LogLevel level, std::string_view who, std::string_view text) noexcept;

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
// A for statement rather than if/else, so that the macro is safe inside an unbraced if. A line
// at a level not in force costs one load and compare; the selections are tested only for a line
// at a level in force, before it is formatted.
#define PATRO_LOG(level, who)                                                                  \
  for (bool patro_log_once = ::patro::detail::log_enabled(::patro::detail::LogLevel::level) && \
                             ::patro::detail::log_selected(who);                               \
       patro_log_once; patro_log_once = false)                                                 \
  ::patro::detail::LogStream(::patro::detail::LogLevel::level, who).stream()

// PATRO_LOG_LIMITED(warn, "broker", limiter) << "..."; for lines a peer can cause at will: at
// most the limiter's burst per period are written, and the next one written after some were held
// back ends with "(N more suppressed)". Whatever counts the events (metrics) counts each.
#define PATRO_LOG_LIMITED(level, who, limiter)                                         \
  for (uint64_t patro_log_held = 0,                                                    \
                patro_log_once = ::patro::detail::log_limited(                         \
                    (limiter), ::patro::detail::LogLevel::level, who, patro_log_held); \
       patro_log_once; patro_log_once = 0)                                             \
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
// counts the event, say) is evaluated whatever the level. A line that the level or the
// selections leave out does not count against the limiter.
inline bool log_limited(LogLimiter& limiter, LogLevel level, std::string_view who, uint64_t& held) {
  return log_enabled(level) && log_selected(who) && limiter.allow(held);
}
}  // namespace patro::detail
