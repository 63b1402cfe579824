// Log forwarding's server side without a network: the log taps (base/log.hpp) see lines below the
// process's level and outside its selections, never their own, and the forwarder
// (server/log_forward.hpp) queues each subscriber's lines by its level and selection, bounded,
// with the dropped ones counted in the next line.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "log.hpp"
#include "log_forward.hpp"
#include "patro/error.hpp"
#include "patro/logging.hpp"
#include "wire.hpp"

using namespace patro;
using patro::detail::LogForwarder;
using patro::detail::LogSelection;

namespace {

struct KeepLevel {
  LogLevel level = log_level();
  ~KeepLevel() { set_log_level(level); }
};

struct Recorder final : detail::LogTap {
  int verbosity = log_verbosity(LogLevel::debug);
  std::vector<std::string> lines;
  int tap_verbosity() const noexcept override { return verbosity; }
  void on_line(LogLevel, std::string_view who, std::string_view text) noexcept override {
    lines.push_back(std::string(who) + ": " + std::string(text));
    write_log(LogLevel::error, "tap", "a line the tap logs");  // never reaches a tap
  }
};

std::string text_of(const LogForwarder::Outgoing& o) {
  return std::string(o.frames.at(5).to_string_view());
}

}  // namespace

TEST_CASE("a log tap gets lines under its level whatever the process's level, never its own") {
  KeepLevel keep;
  set_log_level(LogLevel::error);
  set_log_file("/dev/null");
  Recorder r;
  detail::add_log_tap(&r);
  write_log(LogLevel::debug, "alpha", "one");
  PATRO_LOG(info, "beta") << "two";
  PATRO_LOG(trace, "beta") << "not wanted";
  {
    const detail::LogTapPause pause;
    write_log(LogLevel::info, "alpha", "paused");
  }
  detail::remove_log_tap(&r);
  write_log(LogLevel::info, "alpha", "gone");
  set_log_file("");
  CHECK(r.lines == std::vector<std::string>{"alpha: one", "beta: two"});
  CHECK(detail::g_tap_verbosity.load() == -1);
}

TEST_CASE("selections parse as PATRO_LOG_SELECTIONS does") {
  const auto s = LogSelection::parse("alpha, -beta");
  CHECK(s.selects("alpha"));
  CHECK_FALSE(s.selects("beta"));
  CHECK_FALSE(s.selects("gamma"));
  CHECK(LogSelection::parse("-beta").selects("gamma"));
  CHECK(LogSelection::parse("").selects("anything"));
  CHECK_THROWS_AS(LogSelection::parse("--x"), Error);
}

TEST_CASE("the forwarder queues by level and selection, bounded, drops counted in the next line") {
  KeepLevel keep;
  set_log_level(LogLevel::error);
  set_log_file("/dev/null");
  std::vector<unsigned> woken;
  {
    LogForwarder f(3, [&](unsigned lane) { woken.push_back(lane); });
    f.subscribe(7, "route-7", 1, LogLevel::info, LogSelection::parse("alpha"));
    write_log(LogLevel::info, "alpha", "a1");
    write_log(LogLevel::debug, "alpha", "too verbose");
    write_log(LogLevel::warn, "beta", "not selected");
    write_log(LogLevel::warn, std::string(detail::kLogForwardComponent), "about forwarding");
    CHECK(woken == std::vector<unsigned>{1});
    CHECK(f.pending(1));
    CHECK_FALSE(f.pending(0));
    CHECK(f.take(0).empty());
    for (int i = 2; i <= 6; ++i) write_log(LogLevel::error, "alpha", "a" + std::to_string(i));
    auto out = f.take(1);
    CHECK_FALSE(f.pending(1));
    REQUIRE(out.size() == 3);  // a1 a2 a3; a4..a6 dropped
    CHECK(text_of(out[0]) == "a1");
    CHECK(text_of(out[2]) == "a3");
    CHECK(out[0].routing == "route-7");
    CHECK(out[0].client_id == 7);
    CHECK(f.dropped() == 3);
    write_log(LogLevel::info, "alpha", "a7");
    out = f.take(1);
    REQUIRE(out.size() == 1);
    CHECK(text_of(out[0]) == "a7");
    CHECK(detail::parse_u64(out[0].frames.at(6)) == 3u);  // the drops before it
    CHECK(detail::parse_u64(out[0].frames.at(2)) == uint64_t(log_verbosity(LogLevel::info)));
    CHECK(std::string(out[0].frames.at(3).to_string_view()) == "alpha");
    f.unsubscribe(7);
    CHECK(f.subscribers() == 0);
    write_log(LogLevel::fatal, "alpha", "after");
    CHECK(f.take(1).empty());
  }
  set_log_file("");
  CHECK(detail::g_tap_verbosity.load() == -1);
}
