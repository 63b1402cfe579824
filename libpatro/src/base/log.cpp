#include "log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

#include "patro/error.hpp"

namespace patro {

namespace {

constexpr int kUnset = -1;
std::atomic<int> g_level{kUnset};

// Sets the level and the wire trace's flag with it.
void store_level(LogLevel level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
  detail::g_wire_trace.store(level >= LogLevel::trace, std::memory_order_relaxed);
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::error:
      return "ERROR";
    case LogLevel::warn:
      return "WARN";
    case LogLevel::info:
      return "INFO";
    case LogLevel::debug:
      return "DEBUG";
    case LogLevel::trace:
      return "TRACE";
  }
  return "?";
}

// syslog priorities, as sd-daemon(3) prefixes them.
int journal_priority(LogLevel l) {
  switch (l) {
    case LogLevel::error:
      return 3;
    case LogLevel::warn:
      return 4;
    case LogLevel::info:
      return 6;
    case LogLevel::debug:
    case LogLevel::trace:
      return 7;
  }
  return 6;
}

// Where lines go: stderr, or a file opened by name (reopened on request).
struct Sink {
  std::mutex mu;
  int fd = 2;
  std::string path;
  bool journal = false;  // fd 2 is the journal's stream
};

Sink& sink() {
  static Sink* s = [] {
    auto* out = new Sink;  // never destroyed: threads may log during exit
    // systemd sets JOURNAL_STREAM=DEV:INODE for the stream it connected to stdout/stderr; it
    // counts only if stderr is still that stream (not redirected by a shell).
    if (const char* js = std::getenv("JOURNAL_STREAM")) {
      unsigned long long dev = 0, ino = 0;
      struct stat st {};
      if (std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && ::fstat(2, &st) == 0 &&
          static_cast<unsigned long long>(st.st_dev) == dev &&
          static_cast<unsigned long long>(st.st_ino) == ino)
        out->journal = true;
    }
    return out;
  }();
  return *s;
}

int open_log(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0)
    throw Error(Errc::invalid_argument,
                "cannot open log file " + path + ": " + std::strerror(errno));
  return fd;
}

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view name) noexcept {
  std::string lower;
  for (char c : name) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "error") return LogLevel::error;
  if (lower == "warn" || lower == "warning") return LogLevel::warn;
  if (lower == "info") return LogLevel::info;
  if (lower == "debug") return LogLevel::debug;
  if (lower == "trace") return LogLevel::trace;
  return std::nullopt;
}

bool debug_requested() noexcept {
  const char* env = std::getenv("PATRO_DEBUG");
  return env != nullptr && *env != '\0' && std::strcmp(env, "0") != 0;
}

LogLevel log_level() noexcept {
  int l = g_level.load(std::memory_order_relaxed);
  if (l != kUnset) return static_cast<LogLevel>(l);
  LogLevel from_env = LogLevel::warn;
  const char* env = std::getenv("PATRO_LOG_LEVEL");
  if (debug_requested()) {
    from_env = LogLevel::trace;  // PATRO_DEBUG=1 wins, as RMI_DEBUG=1 does
  } else if (env != nullptr && *env != '\0') {
    if (auto parsed = parse_log_level(env)) {
      from_env = *parsed;
    } else {
      static std::once_flag warned;
      std::call_once(warned, [env] {
        std::fprintf(stderr,
                     "patro: PATRO_LOG_LEVEL='%s' is not a level (error, warn, info, debug, "
                     "trace); using warn\n",
                     env);
      });
    }
  }
  int expected = kUnset;
  if (g_level.compare_exchange_strong(expected, static_cast<int>(from_env)))
    detail::g_wire_trace.store(from_env >= LogLevel::trace, std::memory_order_relaxed);
  return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}

void set_log_level(LogLevel level) noexcept {
  store_level(level);
}

void set_log_file(const std::string& path) {
  Sink& s = sink();
  const int fd = path.empty() ? 2 : open_log(path);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.fd != 2) ::close(s.fd);
  s.fd = fd;
  s.path = path;
}

void reopen_log_file() {
  Sink& s = sink();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.path.empty()) return;
  try {
    const int fd = open_log(s.path);
    ::close(s.fd);
    s.fd = fd;
  } catch (const Error& e) {
    // Keep writing to the old file rather than losing lines.
    const std::string text = std::string("patro: ") + e.what() + "\n";
    (void)!::write(2, text.data(), text.size());
  }
}

std::string log_timestamp() {
  using namespace std::chrono;
  const auto now = system_clock::now();
  const std::time_t t = system_clock::to_time_t(now);
  const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[96];  // room for any int gcc's format check can imagine; 24 are written
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return stamp;
}

void write_log(LogLevel level, std::string_view who, std::string_view text) noexcept {
  if (level > log_level()) return;
  try {
    Sink& s = sink();
    std::string line;
    line.reserve(text.size() + 64);
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.journal && s.fd == 2) {
      line += '<';
      line += static_cast<char>('0' + journal_priority(level));
      line += '>';
      line.append(who);
      line += ": ";
    } else {
      line += log_timestamp();
      line += ' ';
      line += level_name(level);
      line += ' ';
      line.append(who);
      line += '[' + std::to_string(getpid()) + "]: ";
    }
    line.append(text);
    line += '\n';
    // One write per line, so that lines from threads and processes do not interleave.
    size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = ::write(s.fd, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  } catch (...) {
    // Logging never throws.
  }
}

namespace detail {
std::atomic<bool> g_wire_trace{false};

void log_line(LogLevel level, const std::string& who, const std::string& text) noexcept {
  ::patro::write_log(level, who, text);
}

bool LogLimiter::allow(uint64_t& held) {
  const auto now = std::chrono::steady_clock::now();
  MutexLock lock(mu_);
  if (written_ == 0 || now - start_ >= period_) {
    start_ = now;
    written_ = 0;
  }
  if (written_ >= burst_) {
    ++held_;
    return false;
  }
  ++written_;
  held = held_;
  held_ = 0;
  return true;
}
}  // namespace detail

}  // namespace patro
