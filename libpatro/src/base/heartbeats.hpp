// One side of a heartbeat exchange with a broker, with no socket: when our next beat is due, when
// the broker was last heard, and whether it went silent (past its window). The client's broker
// link and each server lane's link to its brokers keep one each and send the beats it says are
// due; the decisions are the same on both sides, and here once.
#pragma once

#include <chrono>

namespace patro::detail {

class Heartbeats {
 public:
  using Clock = std::chrono::steady_clock;

  /// A new link, heard now: our first beat is due after interval.
  void start(Clock::time_point now, std::chrono::milliseconds interval) noexcept {
    last_heard_ = now;
    next_beat_ = now + interval;
    silent_ = false;
  }
  /// Whether a beat is due now; if so the next one is due after interval.
  bool beat_due(Clock::time_point now, std::chrono::milliseconds interval) noexcept {
    if (now < next_beat_) return false;
    next_beat_ = now + interval;
    return true;
  }
  /// Brings the next beat forward to at most after interval (a shorter interval learnt).
  void beat_within(Clock::time_point now, std::chrono::milliseconds interval) noexcept {
    if (now + interval < next_beat_) next_beat_ = now + interval;
  }
  /// The broker was heard now; whether it had gone silent before.
  bool heard(Clock::time_point now) noexcept {
    last_heard_ = now;
    const bool was = silent_;
    silent_ = false;
    return was;
  }
  /// Whether the broker has been silent for longer than window.
  bool overdue(Clock::time_point now, std::chrono::milliseconds window) const noexcept {
    return now - last_heard_ > window;
  }
  /// The broker went silent (overdue): marks it so, and starts a new window from now, so that
  /// each wait after this gets one of its own. Whether it was heard since it last went silent
  /// (what is worth a log line).
  bool went_silent(Clock::time_point now) noexcept {
    const bool newly = !silent_;
    silent_ = true;
    last_heard_ = now;
    return newly;
  }
  /// Starts a new window from now without calling the broker silent (it is acted on otherwise).
  void wait_again(Clock::time_point now) noexcept { last_heard_ = now; }
  bool silent() const noexcept { return silent_; }
  Clock::time_point last_heard() const noexcept { return last_heard_; }
  Clock::time_point next_beat() const noexcept { return next_beat_; }

 private:
  Clock::time_point last_heard_{};
  Clock::time_point next_beat_{};
  bool silent_ = false;
};

}  // namespace patro::detail
