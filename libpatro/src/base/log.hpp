// Logging with levels (the public side is patro/logging.hpp). The level comes from
// set_log_level, else PATRO_DEBUG (set and not "0": trace), else PATRO_LOG_LEVEL (error, warn,
// info, debug, trace, in any case; default warn).
#pragma once

#include <atomic>
#include <sstream>
#include <string>

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

namespace patro::detail {
class LogStream {
 public:
  LogStream(LogLevel level, const char* who) : level_(level), who_(who) {}
  ~LogStream() { log_line(level_, who_, out_.str()); }
  std::ostringstream& stream() { return out_; }

 private:
  LogLevel level_;
  const char* who_;
  std::ostringstream out_;
};
}  // namespace patro::detail
