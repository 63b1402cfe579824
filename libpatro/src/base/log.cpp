#include "log.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace patro::detail {

namespace {
LogLevel parse_level(const char* s) {
  if (s == nullptr) return LogLevel::warn;
  if (std::strcmp(s, "error") == 0) return LogLevel::error;
  if (std::strcmp(s, "info") == 0) return LogLevel::info;
  if (std::strcmp(s, "debug") == 0) return LogLevel::debug;
  return LogLevel::warn;
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
  }
  return "?";
}
}  // namespace

LogLevel log_level() noexcept {
  static const LogLevel level = parse_level(std::getenv("PATRO_LOG_LEVEL"));
  return level;
}

void log_line(LogLevel level, const std::string& who, const std::string& text) noexcept {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  // One fprintf per line so that lines from threads do not interleave.
  std::fprintf(stderr, "%lld.%03lld %s %s[%d]: %s\n", static_cast<long long>(ms / 1000),
               static_cast<long long>(ms % 1000), level_name(level), who.c_str(),
               static_cast<int>(getpid()), text.c_str());
}

}  // namespace patro::detail
