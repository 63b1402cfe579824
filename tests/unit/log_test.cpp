// The log's levels and selections: Object::Remote's seven level names (and the old spellings),
// their order, the level read from the environment, the selections' parsing, and which lines
// reach the log file (write_log, PATRO_LOG and PATRO_LOG_LIMITED) for a level and selections.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "../support/process.hpp"
#include "log.hpp"
#include "patro/error.hpp"
#include "patro/logging.hpp"

using namespace patro;
using patro::test::read_file;
using patro::test::TempDir;

namespace {

// Puts the level and the selections back as they were, and the log back on stderr.
struct KeepLogSettings {
  LogLevel level = log_level();
  std::string selections = log_selections();
  ~KeepLogSettings() {
    set_log_level(level);
    set_log_selections(selections);
    set_log_file("");
  }
};

// Makes the next log_level() or selection test read the environment again, as a process's first
// does.
void forget_level() {
  detail::g_verbosity.store(detail::kVerbosityUnread);
}
void forget_selections() {
  detail::g_selecting.store(detail::kSelectionsUnread);
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

}  // namespace

TEST_CASE("level names: the seven of Object::Remote in any case, and the old spellings") {
  CHECK(parse_log_level("fatal") == LogLevel::fatal);
  CHECK(parse_log_level("FATAL") == LogLevel::fatal);
  CHECK(parse_log_level("error") == LogLevel::error);
  CHECK(parse_log_level("warn") == LogLevel::warn);
  CHECK(parse_log_level("Warning") == LogLevel::warn);
  CHECK(parse_log_level("info") == LogLevel::info);
  CHECK(parse_log_level("verbose") == LogLevel::verbose);
  CHECK(parse_log_level("Verbose") == LogLevel::verbose);
  CHECK(parse_log_level("debug") == LogLevel::debug);
  CHECK(parse_log_level("trace") == LogLevel::trace);
  CHECK_FALSE(parse_log_level(""));
  CHECK_FALSE(parse_log_level("verbosely"));
  CHECK_FALSE(parse_log_level("fatal "));
  CHECK_FALSE(parse_log_level("crit"));
}

TEST_CASE("levels: the old values are kept, and the order is by verbosity, not by value") {
  // Code built before verbose and fatal came keeps its values.
  CHECK(static_cast<int>(LogLevel::error) == 0);
  CHECK(static_cast<int>(LogLevel::warn) == 1);
  CHECK(static_cast<int>(LogLevel::info) == 2);
  CHECK(static_cast<int>(LogLevel::debug) == 3);
  CHECK(static_cast<int>(LogLevel::trace) == 4);
  const std::vector<LogLevel> order{LogLevel::fatal, LogLevel::error,   LogLevel::warn,
                                    LogLevel::info,  LogLevel::verbose, LogLevel::debug,
                                    LogLevel::trace};
  for (size_t i = 0; i < order.size(); ++i) {
    CHECK(log_verbosity(order[i]) == static_cast<int>(i));
    for (size_t j = 0; j < order.size(); ++j) {
      CAPTURE(i);
      CAPTURE(j);
      CHECK((order[i] < order[j]) == (i < j));
      CHECK((order[i] <= order[j]) == (i <= j));
      CHECK((order[i] > order[j]) == (i > j));
      CHECK((order[i] >= order[j]) == (i >= j));
      CHECK(((order[i] <=> order[j]) < 0) == (i < j));
    }
  }
  static_assert(LogLevel::fatal < LogLevel::error && LogLevel::info < LogLevel::verbose &&
                LogLevel::verbose < LogLevel::debug);
}

TEST_CASE("the level in force decides which levels are written; only trace is the wire trace") {
  KeepLogSettings keep;
  set_log_level(LogLevel::verbose);
  CHECK(log_level() == LogLevel::verbose);
  CHECK(detail::log_enabled(LogLevel::fatal));
  CHECK(detail::log_enabled(LogLevel::info));
  CHECK(detail::log_enabled(LogLevel::verbose));
  CHECK_FALSE(detail::log_enabled(LogLevel::debug));
  CHECK_FALSE(detail::log_enabled(LogLevel::trace));
  CHECK_FALSE(detail::wire_trace());
  set_log_level(LogLevel::fatal);
  CHECK(log_level() == LogLevel::fatal);
  CHECK(detail::log_enabled(LogLevel::fatal));
  CHECK_FALSE(detail::log_enabled(LogLevel::error));
  set_log_level(LogLevel::trace);
  CHECK(detail::log_enabled(LogLevel::trace));
  CHECK(detail::wire_trace());
  set_log_level(LogLevel::debug);
  CHECK(detail::log_enabled(LogLevel::verbose));
  CHECK_FALSE(detail::log_enabled(LogLevel::trace));
  CHECK_FALSE(detail::wire_trace());
}

TEST_CASE("the level from the environment: PATRO_LOG_LEVEL's new names, PATRO_DEBUG still wins") {
  KeepLogSettings keep;
  ::unsetenv("PATRO_DEBUG");
  const char* was = std::getenv("PATRO_LOG_LEVEL");
  const std::string before = was != nullptr ? was : "";
  for (const auto& [name, level] :
       std::vector<std::pair<std::string, LogLevel>>{{"verbose", LogLevel::verbose},
                                                     {"FATAL", LogLevel::fatal},
                                                     {"warning", LogLevel::warn},
                                                     {"info", LogLevel::info},
                                                     {"no-such-level", LogLevel::warn}}) {
    CAPTURE(name);
    ::setenv("PATRO_LOG_LEVEL", name.c_str(), 1);
    forget_level();
    CHECK(detail::log_enabled(level));  // the first test reads the environment
    CHECK(log_level() == level);
  }
  ::setenv("PATRO_LOG_LEVEL", "verbose", 1);
  ::setenv("PATRO_DEBUG", "1", 1);
  forget_level();
  CHECK(log_level() == LogLevel::trace);
  CHECK(detail::wire_trace());
  ::unsetenv("PATRO_DEBUG");
  if (was != nullptr)
    ::setenv("PATRO_LOG_LEVEL", before.c_str(), 1);
  else
    ::unsetenv("PATRO_LOG_LEVEL");
}

TEST_CASE("selections: names, *, -name; spaces or commas; exclusion wins; whole names in case") {
  KeepLogSettings keep;
  set_log_selections("");
  CHECK(log_selections().empty());
  CHECK(log_selected("client"));
  CHECK(log_selected("anything at all"));

  set_log_selections("client");
  CHECK(log_selections() == "client");
  CHECK(log_selected("client"));
  CHECK_FALSE(log_selected("server"));
  CHECK_FALSE(log_selected("Client"));   // in case
  CHECK_FALSE(log_selected("clients"));  // whole names
  CHECK_FALSE(log_selected("clien"));
  CHECK_FALSE(log_selected(""));

  set_log_selections("  client,server\tbroker ,, ");
  CHECK(log_selections() == "client server broker");
  CHECK(log_selected("client"));
  CHECK(log_selected("server"));
  CHECK(log_selected("broker"));
  CHECK_FALSE(log_selected("worker"));

  set_log_selections("-broker");  // nothing but a leaving-out: every other one
  CHECK(log_selections() == "-broker");
  CHECK_FALSE(log_selected("broker"));
  CHECK(log_selected("client"));
  CHECK(log_selected("my-app"));

  set_log_selections("* -broker -locks");
  CHECK_FALSE(log_selected("broker"));
  CHECK_FALSE(log_selected("locks"));
  CHECK(log_selected("worker"));

  set_log_selections("client -client server");  // leaving out wins, wherever it stands
  CHECK_FALSE(log_selected("client"));
  CHECK(log_selected("server"));
  CHECK_FALSE(log_selected("worker"));

  set_log_selections("* client");
  CHECK(log_selected("worker"));
}

TEST_CASE("selections: bad lists are refused and leave the selections as they were") {
  KeepLogSettings keep;
  set_log_selections("server");
  for (const std::string bad : {"-", "client -", "-*", "--client", "cli\x01ent"}) {
    CAPTURE(bad);
    try {
      set_log_selections(bad);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      CHECK(contains(e.what(), "log selections"));
    }
    CHECK(log_selections() == "server");
    CHECK(log_selected("server"));
    CHECK_FALSE(log_selected("client"));
  }
}

TEST_CASE("selections from PATRO_LOG_SELECTIONS; a bad one selects every component") {
  KeepLogSettings keep;
  ::setenv("PATRO_LOG_SELECTIONS", "worker -broker", 1);
  forget_selections();
  CHECK(log_selected("worker"));  // the first test reads the environment
  CHECK_FALSE(log_selected("broker"));
  CHECK_FALSE(log_selected("client"));
  CHECK(log_selections() == "worker -broker");
  ::setenv("PATRO_LOG_SELECTIONS", "worker --broker", 1);
  forget_selections();
  CHECK(log_selections().empty());  // reported on stderr once
  CHECK(log_selected("broker"));
  CHECK(log_selected("client"));
  ::unsetenv("PATRO_LOG_SELECTIONS");
  forget_selections();
  CHECK(log_selected("client"));
  set_log_selections("server");  // set wins over the environment, read or not
  ::setenv("PATRO_LOG_SELECTIONS", "client", 1);
  CHECK(log_selected("server"));
  CHECK_FALSE(log_selected("client"));
  ::unsetenv("PATRO_LOG_SELECTIONS");
}

TEST_CASE("the lines written for a level and selections: write_log, PATRO_LOG, PATRO_LOG_LIMITED") {
  KeepLogSettings keep;
  TempDir dir;
  const std::string path = dir.file("log");
  set_log_file(path);
  set_log_level(LogLevel::verbose);
  set_log_selections("client worker -server");
  write_log(LogLevel::verbose, "client", "one");
  write_log(LogLevel::debug, "client", "two");
  write_log(LogLevel::fatal, "worker", "three");
  write_log(LogLevel::error, "server", "four");
  write_log(LogLevel::error, "broker", "five");
  int formatted = 0;
  auto count = [&formatted] { return ++formatted; };
  PATRO_LOG(info, "client") << "six " << count();
  PATRO_LOG(debug, "client") << "seven " << count();  // the level: not formatted
  PATRO_LOG(info, "broker") << "eight " << count();   // the selections: not formatted
  PATRO_LOG(verbose, "worker") << "nine " << count();
  detail::LogLimiter limiter(std::chrono::hours(1), 1);
  PATRO_LOG_LIMITED(warn, "server", limiter) << "ten";  // left out: does not use the burst
  PATRO_LOG_LIMITED(warn, "client", limiter) << "eleven";
  PATRO_LOG_LIMITED(warn, "client", limiter) << "twelve";  // over the burst
  set_log_file("");
  const std::string text = read_file(path);
  INFO(text);
  CHECK(contains(text, " VERBOSE client["));
  CHECK(contains(text, "]: one\n"));
  CHECK_FALSE(contains(text, "two"));
  CHECK(contains(text, " FATAL worker["));
  CHECK(contains(text, "]: three\n"));
  CHECK_FALSE(contains(text, "four"));
  CHECK_FALSE(contains(text, "five"));
  CHECK(contains(text, "]: six 1\n"));
  CHECK_FALSE(contains(text, "seven"));
  CHECK_FALSE(contains(text, "eight"));
  CHECK(contains(text, "]: nine 2\n"));
  CHECK(formatted == 2);
  CHECK_FALSE(contains(text, "ten"));
  CHECK(contains(text, "]: eleven\n"));
  CHECK_FALSE(contains(text, "twelve"));
}
