// Log forwarding, the server's side (Object::Remote's Log::Remote; README "Logging"): the clients
// that asked for this process's log lines (LOG_SUBSCRIBE: a level and a selection of components)
// and the lines queued for each. It is a log tap (base/log.hpp): every line logged in the process
// at or above a subscriber's level is offered to it on the logging thread, queued for each
// subscriber that selects it, and the lane the subscription came by is woken to send them
// (LOG_LINE) by the way it came, through the broker or its direct ROUTER. Bounded: each
// subscriber has at most ServerOptions::log_forward_queue lines queued; past that its lines are
// dropped and counted, and the next line it is sent carries the count. Nothing here blocks the
// thread that logs, and nothing it does is logged to a subscriber (a tap's own lines are not
// tapped). Any thread may call it; one mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "log.hpp"
#include "mutex.hpp"
#include "socket.hpp"

namespace patro::detail {

/// The component of the forwarder's own lines, which are never forwarded.
inline constexpr std::string_view kLogForwardComponent = "logfwd";

class PATRO_PRIVATE LogForwarder final : public LogTap {
 public:
  /// cap: most lines queued per subscriber. wake: called (with no lock held) to wake lane i,
  /// which then calls take(i).
  LogForwarder(size_t cap, std::function<void(unsigned lane)> wake);
  ~LogForwarder() override;
  LogForwarder(const LogForwarder&) = delete;
  LogForwarder& operator=(const LogForwarder&) = delete;

  /// Starts or changes client_id's subscription: its lines leave by `routing` (a reply routing:
  /// routing.hpp) from lane `lane`. Replaces an earlier one of the client's.
  void subscribe(uint64_t client_id, std::string routing, unsigned lane, LogLevel level,
                 LogSelection selection) PATRO_EXCLUDES(mu_);
  /// Ends client_id's subscription (unsubscribed, or the client is gone); its queued lines go.
  void unsubscribe(uint64_t client_id) PATRO_EXCLUDES(mu_);

  /// The frames of one LOG_LINE, after the header and routing: [host][pid][level][who][time]
  /// [text][dropped].
  struct Outgoing {
    uint64_t client_id = 0;
    std::string routing;
    Multipart frames;
  };
  /// Whether lines wait for lane `lane` to send them: one relaxed load, asked by the lane between
  /// the requests it runs (a request that logs a queue's worth must not crowd out the next).
  bool pending(unsigned lane) const noexcept {
    return (pending_.load(std::memory_order_relaxed) & lane_bit(lane)) != 0;
  }
  /// The lines queued for the subscribers that lane `lane` sends to.
  std::vector<Outgoing> take(unsigned lane) PATRO_EXCLUDES(mu_);
  /// A line taken that could not be sent (its socket refused it): counted as dropped, and the
  /// client's next line says so.
  void not_sent(uint64_t client_id) PATRO_EXCLUDES(mu_);

  /// Lines sent to subscribers, and dropped (queue full, or refused by the socket).
  uint64_t forwarded() const noexcept { return forwarded_.load(std::memory_order_relaxed); }
  uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  size_t subscribers() const PATRO_EXCLUDES(mu_);

  int tap_verbosity() const noexcept override { return verbosity_.load(std::memory_order_relaxed); }
  void on_line(LogLevel level, std::string_view who, std::string_view text) noexcept override
      PATRO_EXCLUDES(mu_);

 private:
  struct Line {
    LogLevel level;
    std::string who, time, text;
    uint64_t dropped = 0;  // dropped just before this one
  };
  struct Subscriber {
    std::string routing;
    unsigned lane = 0;
    LogLevel level = LogLevel::info;
    LogSelection selection;
    std::vector<Line> queue;
    uint64_t dropped = 0;  // since the last line queued
    bool woken = false;    // its lane was woken and has not taken the queue yet
  };
  void refresh() PATRO_EXCLUDES(mu_);
  static uint64_t lane_bit(unsigned lane) noexcept {
    return uint64_t{1} << (lane < 64 ? lane : 63);  // lanes past 63 share the last bit
  }

  const size_t cap_;
  const std::function<void(unsigned)> wake_;
  const std::string host_;
  const int64_t pid_;
  std::atomic<int> verbosity_{-1};
  std::atomic<uint64_t> forwarded_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> pending_{0};  // a bit per lane woken for lines (lane_bit)
  mutable Mutex mu_;
  std::unordered_map<uint64_t, Subscriber> subs_ PATRO_GUARDED_BY(mu_);
};

}  // namespace patro::detail
