// The watchdog of a served process (Object::Remote's WatchDog): the process ends when its
// parent's beats on standard input stop, even if every lane hangs.
#pragma once

#include <chrono>

namespace patro::detail {

/// The variable patro::spawn sets for a child it beats for: the silence in milliseconds.
inline constexpr const char* kWatchdogVariable = "PATRO_WATCHDOG_MS";

/// $PATRO_WATCHDOG_MS as a duration; zero if unset. Throws Error(invalid_argument) for a value
/// that is not a positive number of milliseconds.
std::chrono::milliseconds watchdog_from_environment();

/// Starts the watchdog thread, once per process (later calls do nothing): it reads standard
/// input, and once nothing has come for `silence` or the input ended it logs why, removes this
/// process's lock segments, raises SIGTERM and, if the process still runs max(1 s, silence)
/// later, calls _exit(1). The thread is detached: it ends with the process.
void start_watchdog(std::chrono::milliseconds silence);

}  // namespace patro::detail
