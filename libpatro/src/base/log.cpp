#include "log.hpp"

#include "wire_constants.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <mutex>
#include <vector>

#include "patro/error.hpp"

namespace patro {

namespace {

using detail::g_verbosity;
using detail::kVerbosityUnread;

// Each level's names and journal priority, in the order of verbosity (log_verbosity indexes it).
struct LevelInfo {
  LogLevel level;
  const char* name;   // as parse_log_level takes it (in any case)
  const char* label;  // in a log line
  int journal;        // its syslog priority, as sd-daemon(3) prefixes it
};
constexpr LevelInfo kLevels[] = {
    {LogLevel::fatal, "fatal", "FATAL", 2},  // LOG_CRIT: the process ends
    {LogLevel::error, "error", "ERROR", 3}, {LogLevel::warn, "warn", "WARN", 4},
    {LogLevel::info, "info", "INFO", 6},    {LogLevel::verbose, "verbose", "VERBOSE", 6},
    {LogLevel::debug, "debug", "DEBUG", 7}, {LogLevel::trace, "trace", "TRACE", 7},
};
constexpr bool levels_in_order() {
  for (int v = 0; v < 7; ++v)
    if (log_verbosity(kLevels[v].level) != v) return false;
  return true;
}
static_assert(std::size(kLevels) == 7 && levels_in_order());
// The numbers LOG_SUBSCRIBE and LOG_LINE carry, as schemas/wire.json gives them to every client.
#define PATRO_CHECK_LEVEL(name, v) \
  static_assert(log_verbosity(LogLevel::name) == (v), "wire.json's log_levels: " #name);
PATRO_LOG_LEVEL_ROWS(PATRO_CHECK_LEVEL)
#undef PATRO_CHECK_LEVEL

const LevelInfo& level_info(LogLevel l) {
  return kLevels[log_verbosity(l)];
}

// Sets the level and the wire trace's flag with it.
void store_level(LogLevel level) {
  g_verbosity.store(log_verbosity(level), std::memory_order_relaxed);
  detail::g_wire_trace.store(level >= LogLevel::trace || detail::g_tap_verbosity.load() >= 6,
                             std::memory_order_relaxed);
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

// The selections: names selected, names left out, and whether "*" selects every other one.
struct Selections {
  bool every = false;
  std::vector<std::string> in, out;
  std::string text;  // as log_selections() gives it
};

struct SelectionState {
  detail::Mutex mu;
  Selections in_force PATRO_GUARDED_BY(mu);
};

SelectionState& selection_state() {
  static auto* s = new SelectionState;  // never destroyed: threads may log during exit
  return *s;
}

bool is_separator(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == ',';
}

Selections parse_selections(std::string_view list) {
  Selections s;
  size_t i = 0;
  while (i < list.size()) {
    if (is_separator(list[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < list.size() && !is_separator(list[end])) ++end;
    const std::string_view item = list.substr(i, end - i);
    i = end;
    for (char c : item)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        throw Error(Errc::invalid_argument, "log selections: a control character (code " +
                                                std::to_string(static_cast<unsigned char>(c)) +
                                                ") in a name");
    const bool leave_out = item.front() == '-';
    const std::string_view name = leave_out ? item.substr(1) : item;
    if (name.empty() || (leave_out && name == "*") || name.front() == '-')
      throw Error(Errc::invalid_argument,
                  "log selections: '" + std::string(item) +
                      "' is not a selection (NAME, *, or -NAME to leave NAME out)");
    if (!s.text.empty()) s.text += ' ';
    s.text.append(item);
    if (leave_out)
      s.out.emplace_back(name);
    else if (name == "*")
      s.every = true;
    else
      s.in.emplace_back(name);
  }
  if (s.in.empty()) s.every = true;  // nothing but leavings-out, or nothing: every other one
  return s;
}

// Puts s in force; the caller holds st.mu.
void store_selections(SelectionState& st, Selections s) PATRO_REQUIRES(st.mu) {
  const bool narrows = !s.every || !s.out.empty();
  st.in_force = std::move(s);
  detail::g_selecting.store(narrows ? detail::kSelectSome : detail::kSelectEvery,
                            std::memory_order_relaxed);
}

// Reads $PATRO_LOG_SELECTIONS if nothing has been set yet; the caller holds st.mu.
void read_selections_env(SelectionState& st) PATRO_REQUIRES(st.mu) {
  if (detail::g_selecting.load(std::memory_order_relaxed) != detail::kSelectionsUnread) return;
  const char* env = std::getenv("PATRO_LOG_SELECTIONS");
  try {
    store_selections(st, parse_selections(env != nullptr ? env : ""));
  } catch (const Error& e) {
    std::fprintf(stderr, "patro: PATRO_LOG_SELECTIONS: %s; selecting every component\n", e.what());
    Selections every;
    every.every = true;
    store_selections(st, std::move(every));
  }
}

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view name) noexcept {
  std::string lower;
  for (char c : name) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "warning") return LogLevel::warn;
  for (const LevelInfo& l : kLevels)
    if (lower == l.name) return l.level;
  return std::nullopt;
}

void set_log_selections(std::string_view selections) {
  Selections s = parse_selections(selections);  // throws before anything changes
  SelectionState& st = selection_state();
  detail::MutexLock lock(st.mu);
  store_selections(st, std::move(s));
}

std::string log_selections() {
  SelectionState& st = selection_state();
  detail::MutexLock lock(st.mu);
  read_selections_env(st);
  return st.in_force.text;
}

bool log_selected(std::string_view who) noexcept {
  return detail::log_selected(who);
}

bool debug_requested() noexcept {
  const char* env = std::getenv("PATRO_DEBUG");
  return env != nullptr && *env != '\0' && std::strcmp(env, "0") != 0;
}

LogLevel log_level() noexcept {
  const int v = g_verbosity.load(std::memory_order_relaxed);
  if (v != kVerbosityUnread) return kLevels[v].level;
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
                     "patro: PATRO_LOG_LEVEL='%s' is not a level (fatal, error, warn, info, "
                     "verbose, debug, trace); using warn\n",
                     env);
      });
    }
  }
  int expected = kVerbosityUnread;
  if (g_verbosity.compare_exchange_strong(expected, log_verbosity(from_env)))
    detail::g_wire_trace.store(from_env >= LogLevel::trace || detail::g_tap_verbosity.load() >= 6,
                               std::memory_order_relaxed);
  return kLevels[g_verbosity.load(std::memory_order_relaxed)].level;
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
  if (!detail::log_wanted(level, who)) return;
  detail::log_line(level, who, text);
}

namespace detail {
std::atomic<bool> g_wire_trace{false};
std::atomic<int> g_verbosity{kVerbosityUnread};
std::atomic<int> g_selecting{kSelectionsUnread};
std::atomic<int> g_tap_verbosity{-1};

namespace {
struct Taps {
  Mutex mu;
  std::vector<LogTap*> list PATRO_GUARDED_BY(mu);
};
Taps& taps() {
  static auto* t = new Taps;  // never destroyed: threads may log during exit
  return *t;
}
// Set while this thread gives a line to the taps (or writes a forwarded line): a line logged
// meanwhile is not tapped, so forwarding never feeds itself.
thread_local bool t_tapping = false;

void refresh_taps(Taps& t) PATRO_REQUIRES(t.mu) {
  int most = -1;
  for (LogTap* tap : t.list) most = std::max(most, tap->tap_verbosity());
  g_tap_verbosity.store(most, std::memory_order_relaxed);
  // A tap at trace wants the wire trace too (every request and reply: logged only when asked).
  const int v = g_verbosity.load(std::memory_order_relaxed);
  g_wire_trace.store(most >= log_verbosity(LogLevel::trace) ||
                         (v != kVerbosityUnread && v >= log_verbosity(LogLevel::trace)),
                     std::memory_order_relaxed);
}

void write_sink(LogLevel level, std::string_view who, std::string_view text) noexcept;
}  // namespace

LogTapPause::LogTapPause() noexcept : was_(t_tapping) {
  t_tapping = true;
}
LogTapPause::~LogTapPause() {
  t_tapping = was_;
}

void add_log_tap(LogTap* tap) {
  Taps& t = taps();
  MutexLock lock(t.mu);
  t.list.push_back(tap);
  refresh_taps(t);
}

void remove_log_tap(LogTap* tap) {
  Taps& t = taps();
  MutexLock lock(t.mu);
  t.list.erase(std::remove(t.list.begin(), t.list.end(), tap), t.list.end());
  refresh_taps(t);
}

void refresh_log_taps() {
  Taps& t = taps();
  MutexLock lock(t.mu);
  refresh_taps(t);
}

LogSelection LogSelection::parse(std::string_view list) {
  Selections s = parse_selections(list);
  LogSelection out;
  out.every_ = s.every;
  out.in_ = std::move(s.in);
  out.out_ = std::move(s.out);
  out.text_ = std::move(s.text);
  return out;
}

bool LogSelection::selects(std::string_view who) const noexcept {
  for (const auto& name : out_)
    if (name == who) return false;
  if (every_) return true;
  for (const auto& name : in_)
    if (name == who) return true;
  return false;
}

void write_forwarded_line(LogLevel level, std::string_view who, std::string_view text) noexcept {
  if (!log_selected(who)) return;
  write_sink(level, who, text);
}

bool log_enabled_unread(LogLevel level) noexcept {
  return level <= ::patro::log_level();
}

bool log_selected_slow(std::string_view who) noexcept {
  SelectionState& st = selection_state();
  MutexLock lock(st.mu);
  read_selections_env(st);
  for (const auto& name : st.in_force.out)
    if (name == who) return false;
  if (st.in_force.every) return true;
  for (const auto& name : st.in_force.in)
    if (name == who) return true;
  return false;
}

void log_line(LogLevel level, std::string_view who, std::string_view text) noexcept {
  if (log_enabled(level) && log_selected(who)) write_sink(level, who, text);
  if (log_verbosity(level) > g_tap_verbosity.load(std::memory_order_relaxed) || t_tapping) return;
  t_tapping = true;
  {
    Taps& t = taps();
    MutexLock lock(t.mu);
    for (LogTap* tap : t.list)
      if (log_verbosity(level) <= tap->tap_verbosity()) tap->on_line(level, who, text);
  }
  t_tapping = false;
}

namespace {
void write_sink(LogLevel level, std::string_view who, std::string_view text) noexcept {
  try {
    Sink& s = sink();
    std::string line;
    line.reserve(text.size() + 64);
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.journal && s.fd == 2) {
      line += '<';
      line += static_cast<char>('0' + level_info(level).journal);
      line += '>';
      line.append(who);
      line += ": ";
    } else {
      line += log_timestamp();
      line += ' ';
      line += level_info(level).label;
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
}  // namespace

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
