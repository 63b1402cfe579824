// Patro's log lines: levels, the level names, which components are selected, and where the lines
// go. The library logs to stderr at warn by default (PATRO_LOG_LEVEL overrides; PATRO_DEBUG=1
// means trace) and every component's lines (PATRO_LOG_SELECTIONS narrows them); daemons set their
// own level and may log to a file that SIGHUP reopens. At trace, clients and servers also log
// every request and reply they send or take, one line each (the wire trace: README, "Wire trace").
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// Object::Remote's seven levels. The values are names, not the order: error to trace keep the
/// values they had before verbose and fatal came, so code built against those keeps its meaning.
/// Compare levels with <, <=, >, >= (defined below): the order is by verbosity, fatal < error <
/// warn < info < verbose < debug < trace, and a line is written when its level <= log_level().
enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3, trace = 4, verbose = 5, fatal = 6 };

/// A level's place in that order: fatal 0, error 1, warn 2, info 3, verbose 4, debug 5, trace 6.
constexpr int log_verbosity(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::fatal:
      return 0;
    case LogLevel::error:
      return 1;
    case LogLevel::warn:
      return 2;
    case LogLevel::info:
      return 3;
    case LogLevel::verbose:
      return 4;
    case LogLevel::debug:
      return 5;
    case LogLevel::trace:
      return 6;
  }
  return 6;
}
constexpr bool operator<(LogLevel a, LogLevel b) noexcept {
  return log_verbosity(a) < log_verbosity(b);
}
constexpr bool operator<=(LogLevel a, LogLevel b) noexcept {
  return log_verbosity(a) <= log_verbosity(b);
}
constexpr bool operator>(LogLevel a, LogLevel b) noexcept {
  return log_verbosity(a) > log_verbosity(b);
}
constexpr bool operator>=(LogLevel a, LogLevel b) noexcept {
  return log_verbosity(a) >= log_verbosity(b);
}
constexpr std::strong_ordering operator<=>(LogLevel a, LogLevel b) noexcept {
  return log_verbosity(a) <=> log_verbosity(b);
}

/// "fatal", "error", "warn" (or "warning"), "info", "verbose", "debug", "trace", in any case;
/// nullopt for anything else.
std::optional<LogLevel> parse_log_level(std::string_view name) noexcept;
/// The level in force: set_log_level's, else trace if $PATRO_DEBUG is set (and not "0"), else
/// $PATRO_LOG_LEVEL's, else warn.
LogLevel log_level() noexcept;
void set_log_level(LogLevel level) noexcept;
/// Whether $PATRO_DEBUG asks for the wire trace: set, not empty and not "0".
bool debug_requested() noexcept;

/// Which components' lines are written (a component is the `who` of write_log: "client",
/// "server", "broker", "watchdog", "locks", "worker"..., or a program's own), as
/// Object::Remote's OBJECT_REMOTE_LOG_SELECTIONS selects its loggers: a list of names separated
/// by spaces (or commas). A name selects its component, "*" every component, and "-name" leaves
/// that component out whatever else the list says. A list of nothing but "-name"s keeps every
/// other component; an empty list selects every component (the default). Names match whole and
/// in case. Only lines at or under the level are tested, so the level's test stays the only cost
/// of a line that is not written. Throws Error(invalid_argument) for a list with "-" or "-*"
/// alone, a name that starts with "--", or a control character; the selections then stay as
/// they were. Wins over $PATRO_LOG_SELECTIONS (read when first needed; a bad one is reported once
/// on stderr and every component stays selected).
void set_log_selections(std::string_view selections);
/// The selections in force, their items separated by one space ("" selects every component).
std::string log_selections();
/// Whether the selections in force let component who's lines through (the level aside).
bool log_selected(std::string_view who) noexcept;

/// Appends log lines to path from now on (empty: back to stderr). Throws Error(invalid_argument)
/// if it cannot be opened.
void set_log_file(const std::string& path);
/// Reopens the log file by its name (after logrotate moved it away); nothing for stderr.
void reopen_log_file();
/// The time now as Patro's log lines write it, UTC with milliseconds: "2026-11-28T21:00:00.123Z"
/// (patro-worker's served logs write it too).
std::string log_timestamp();
/// Writes one line if level <= log_level() and the selections let who through:
/// "2026-11-28T21:00:00.123Z INFO who[pid]: text", or under systemd (stderr is the journal:
/// $JOURNAL_STREAM names it) "<6>who: text", the journal keeping the time (fatal is <2>, error
/// <3>, warn <4>, info and verbose <6>, debug and trace <7>).
void write_log(LogLevel level, std::string_view who, std::string_view text) noexcept;

/// One log line another process forwarded over a connection (log forwarding, Object::Remote's
/// Log::Remote: ClientOptions::forward_logs, patro::Client::forward_logs; README "Logging").
struct LogRecord {
  std::string host;  // the far process's host name
  int64_t pid = 0;   // its process id
  LogLevel level = LogLevel::info;
  std::string who;   // the line's component ("server", "worker", a program's own...)
  std::string time;  // when it was logged there, as log_timestamp() writes it
  std::string text;
  /// Lines of this subscription the far side dropped just before this one (its queue for this
  /// client was full: a slow client), 0 when none.
  uint64_t dropped = 0;
};

}  // namespace patro
PATRO_PUBLIC_END
