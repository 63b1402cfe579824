#include "log_forward.hpp"

#include <unistd.h>

#include <algorithm>

#include "wire.hpp"

namespace patro::detail {

namespace {
std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

zmq::message_t text_frame(std::string_view s) {
  return zmq::message_t(s.data(), s.size());
}
}  // namespace

LogForwarder::LogForwarder(size_t cap, std::function<void(unsigned lane)> wake)
    : cap_(std::max<size_t>(cap, 1)), wake_(std::move(wake)), host_(host_name()), pid_(::getpid()) {
  add_log_tap(this);
}

LogForwarder::~LogForwarder() {
  remove_log_tap(this);
}

void LogForwarder::refresh() {
  int most = -1;
  {
    MutexLock lock(mu_);
    for (const auto& [id, s] : subs_) most = std::max(most, log_verbosity(s.level));
  }
  verbosity_.store(most, std::memory_order_relaxed);
  refresh_log_taps();
}

void LogForwarder::subscribe(uint64_t client_id, std::string routing, unsigned lane, LogLevel level,
                             LogSelection selection) {
  {
    MutexLock lock(mu_);
    Subscriber& s = subs_[client_id];
    s.routing = std::move(routing);
    s.lane = lane;
    s.level = level;
    s.selection = std::move(selection);
  }
  refresh();
}

void LogForwarder::unsubscribe(uint64_t client_id) {
  {
    MutexLock lock(mu_);
    if (subs_.erase(client_id) == 0) return;
  }
  refresh();
}

size_t LogForwarder::subscribers() const {
  MutexLock lock(mu_);
  return subs_.size();
}

void LogForwarder::on_line(LogLevel level, std::string_view who, std::string_view text) noexcept {
  if (who == kLogForwardComponent) return;  // a line about forwarding is not forwarded
  try {
    std::vector<unsigned> wake;
    {
      MutexLock lock(mu_);
      std::string time;
      for (auto& [id, s] : subs_) {
        if (level > s.level || !s.selection.selects(who)) continue;
        if (s.queue.size() >= cap_) {
          ++s.dropped;
          dropped_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if (time.empty()) time = log_timestamp();
        s.queue.push_back(Line{level, std::string(who), time, std::string(text), s.dropped});
        s.dropped = 0;
        if (!s.woken) {
          s.woken = true;
          pending_.fetch_or(lane_bit(s.lane), std::memory_order_relaxed);
          wake.push_back(s.lane);
        }
      }
    }
    for (unsigned lane : wake) wake_(lane);
  } catch (...) {
    // A line that cannot be queued (no memory) is lost; logging never throws.
  }
}

std::vector<LogForwarder::Outgoing> LogForwarder::take(unsigned lane) {
  std::vector<std::pair<uint64_t, std::pair<std::string, std::vector<Line>>>> taken;
  {
    MutexLock lock(mu_);
    pending_.fetch_and(~lane_bit(lane), std::memory_order_relaxed);
    for (auto& [id, s] : subs_) {
      if (s.lane != lane || !s.woken) continue;
      s.woken = false;
      taken.push_back({id, {s.routing, std::move(s.queue)}});
      s.queue.clear();
    }
  }
  std::vector<Outgoing> out;
  for (auto& [id, rq] : taken) {
    for (Line& l : rq.second) {
      Outgoing o{id, rq.first, {}};
      o.frames.reserve(7);
      o.frames.push_back(text_frame(host_));
      o.frames.push_back(u64_frame(static_cast<uint64_t>(pid_)));
      o.frames.push_back(u64_frame(static_cast<uint64_t>(log_verbosity(l.level))));
      o.frames.push_back(text_frame(l.who));
      o.frames.push_back(text_frame(l.time));
      o.frames.push_back(text_frame(l.text));
      o.frames.push_back(u64_frame(l.dropped));
      out.push_back(std::move(o));
    }
  }
  forwarded_.fetch_add(out.size(), std::memory_order_relaxed);
  return out;
}

void LogForwarder::not_sent(uint64_t client_id) {
  forwarded_.fetch_sub(1, std::memory_order_relaxed);
  dropped_.fetch_add(1, std::memory_order_relaxed);
  MutexLock lock(mu_);
  if (auto it = subs_.find(client_id); it != subs_.end()) ++it->second.dropped;
}

}  // namespace patro::detail
