// Patro's log lines: levels, the level names, and where the lines go. The library logs to stderr
// at warn by default (PATRO_LOG_LEVEL overrides; PATRO_DEBUG=1 means trace); daemons set their own
// level and may log to a file that SIGHUP reopens. At trace, clients and servers also log every
// request and reply they send or take, one line each (the wire trace: README, "Wire trace").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

/// "error", "warn" (or "warning"), "info", "debug", "trace", in any case; nullopt for anything
/// else.
std::optional<LogLevel> parse_log_level(std::string_view name) noexcept;
/// The level in force: set_log_level's, else trace if $PATRO_DEBUG is set (and not "0"), else
/// $PATRO_LOG_LEVEL's, else warn.
LogLevel log_level() noexcept;
void set_log_level(LogLevel level) noexcept;
/// Whether $PATRO_DEBUG asks for the wire trace: set, not empty and not "0".
bool debug_requested() noexcept;
/// Appends log lines to path from now on (empty: back to stderr). Throws Error(invalid_argument)
/// if it cannot be opened.
void set_log_file(const std::string& path);
/// Reopens the log file by its name (after logrotate moved it away); nothing for stderr.
void reopen_log_file();
/// The time now as Patro's log lines write it, UTC with milliseconds: "2026-11-28T21:00:00.123Z"
/// (patro-worker's served logs write it too).
std::string log_timestamp();
/// Writes one line if level is at or above log_level(): "2026-11-28T21:00:00.123Z INFO who[pid]:
/// text", or under systemd (stderr is the journal: $JOURNAL_STREAM names it) "<6>who: text", the
/// journal keeping the time.
void write_log(LogLevel level, std::string_view who, std::string_view text) noexcept;

}  // namespace patro
PATRO_PUBLIC_END
