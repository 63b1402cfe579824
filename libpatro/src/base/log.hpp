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
#include <vector>

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

/// The most verbose level any log tap (below) wants, as its log_verbosity; -1: no tap.
extern std::atomic<int> g_tap_verbosity;
/// Whether a line is wanted at all: written here (the level and the selections in force), or
/// forwarded to a log tap. The line's level test stays one load and a compare when no tap is set.
inline bool log_wanted(LogLevel level, std::string_view who) noexcept {
  if (log_enabled(level) && log_selected(who)) return true;
  return ::patro::log_verbosity(level) <= g_tap_verbosity.load(std::memory_order_relaxed);
}

/// Writes a line that log_wanted let through (PATRO_LOG's test, before the line was formatted):
/// to the sink if the level and selections in force let it through, and to the log taps that
/// want it, unless the line is logged by a tap itself (a tap's own lines are never tapped).
void log_line(LogLevel level, std::string_view who, std::string_view text) noexcept;
/// Writes a line that came from another process (log forwarding) to the sink if the selections
/// in force let who through, whatever the level in force (the subscription chose the level).
/// Never given to a log tap: a line forwarded here is not forwarded again.
void write_forwarded_line(LogLevel level, std::string_view who, std::string_view text) noexcept;

/// A list of components as PATRO_LOG_SELECTIONS and set_log_selections take it (logging.hpp).
class LogSelection {
 public:
  /// Every component.
  LogSelection() = default;
  /// Throws Error(invalid_argument) as set_log_selections does.
  static LogSelection parse(std::string_view list);
  bool selects(std::string_view who) const noexcept;
  /// The items, separated by one space ("" selects every component).
  const std::string& text() const noexcept { return text_; }
  /// Whether it leaves any component out.
  bool narrows() const noexcept { return !every_ || !out_.empty(); }

 private:
  bool every_ = true;
  std::vector<std::string> in_, out_;
  std::string text_;
};

/// Something that takes every log line at or under its level, whatever the level and selections
/// in force (log forwarding: server/log_forward.hpp). Called on the thread that logs, possibly
/// with that thread's locks held: it must not block, and must not log (its own lines would not
/// reach it anyway).
class LogTap {
 public:
  virtual ~LogTap() = default;
  /// The most verbose level it wants now, as its log_verbosity; -1: none.
  virtual int tap_verbosity() const noexcept = 0;
  virtual void on_line(LogLevel level, std::string_view who, std::string_view text) noexcept = 0;
};
/// Adds a tap, or removes one (waiting for a line it is taking). Thread-safe.
void add_log_tap(LogTap* tap);
void remove_log_tap(LogTap* tap);
/// While one lives, the lines this thread logs go to no tap (a forwarder sending its lines: a
/// line about a failed send must not feed another send).
class PATRO_PRIVATE LogTapPause {
 public:
  LogTapPause() noexcept;
  ~LogTapPause();
  LogTapPause(const LogTapPause&) = delete;
  LogTapPause& operator=(const LogTapPause&) = delete;

 private:
  bool was_;
};
/// Reads the taps' levels again (a tap calls it when its level changed, holding none of its locks).
void refresh_log_taps();

/// Whether the level is trace, or a log tap wants trace: kept with the level by log_level() and
/// set_log_level(), and by the taps' changes.
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
#define PATRO_LOG(level, who)                                                                    \
  for (bool patro_log_once = ::patro::detail::log_wanted(::patro::detail::LogLevel::level, who); \
       patro_log_once; patro_log_once = false)                                                   \
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
  return log_wanted(level, who) && limiter.allow(held);
}
}  // namespace patro::detail
