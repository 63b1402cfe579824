#include "watchdog.hpp"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <thread>

#include "lock_table.hpp"
#include "log.hpp"
#include "patro/error.hpp"

namespace patro::detail {

namespace {

using Clock = std::chrono::steady_clock;

// Ends the process: it has nobody left to serve. The lock segments go first (a process that
// SIGTERM kills at once, or that _exit ends, runs no destructor), then SIGTERM gives a program
// with a clean stop (patro-worker: its logs and write-ahead logs) the chance to take it; a
// process whose lanes hang in a method never finishes that stop, and _exit ends it.
// A parent that stops its child closes its input first: the input's end is news, not an error.
// Its output may lead nowhere now (through ssh, the connection that carried its standard output
// and error is gone): a log line must not end it by SIGPIPE before its clean stop, so SIGPIPE is
// ignored from here on, and the segments go before anything is written.
[[noreturn]] void end_process(const std::string& why, std::chrono::milliseconds silence,
                              bool ended = false) {
  ::signal(SIGPIPE, SIG_IGN);
  LockTable::remove_owned();
  if (ended)
    PATRO_LOG(info, "watchdog") << why << ": ending this process";
  else
    PATRO_LOG(fatal, "watchdog") << why << ": ending this process";
  ::kill(::getpid(), SIGTERM);
  const auto grace = std::max<std::chrono::milliseconds>(std::chrono::seconds(1), silence);
  std::this_thread::sleep_for(grace);
  PATRO_LOG(fatal, "watchdog") << "still running " << grace.count()
                               << " ms after SIGTERM (its lanes hang?): _exit(1)";
  ::_exit(1);
}

void watch(std::chrono::milliseconds silence) {
  auto last = Clock::now();
  char buf[512];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(last + silence - Clock::now());
    if (left.count() <= 0)
      end_process("no beat on standard input for " + std::to_string(silence.count()) +
                      " ms (its parent, or the connection to it, hangs)",
                  silence);
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (r < 0 && errno != EINTR)
      end_process("standard input cannot be watched (poll: " + std::to_string(errno) + ")",
                  silence);
    if (r <= 0) continue;
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n > 0) {
      last = Clock::now();
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
      end_process("standard input ended (its parent, or the connection to it, is gone)", silence,
                  n == 0);
    }
  }
}

}  // namespace

std::chrono::milliseconds watchdog_from_environment() {
  const char* v = std::getenv(kWatchdogVariable);
  if (v == nullptr || *v == '\0') return std::chrono::milliseconds(0);
  char* end = nullptr;
  errno = 0;
  const long long ms = std::strtoll(v, &end, 10);
  if (errno != 0 || *end != '\0' || ms <= 0 || ms > 24LL * 3600 * 1000)
    throw Error(Errc::invalid_argument, std::string(kWatchdogVariable) + "='" + v +
                                            "' is not a number of milliseconds from 1 to a day");
  return std::chrono::milliseconds(ms);
}

void start_watchdog(std::chrono::milliseconds silence) {
  static std::atomic<bool> started{false};
  if (silence.count() <= 0 || started.exchange(true)) return;
  PATRO_LOG(debug, "watchdog") << "the process ends if standard input brings nothing for "
                               << silence.count() << " ms or ends";
  std::thread([silence] { watch(silence); }).detach();
}

}  // namespace patro::detail
