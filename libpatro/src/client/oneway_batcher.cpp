#include "oneway_batcher.hpp"

#include <algorithm>
#include <tuple>

namespace patro::detail {

void ReleaseQueue::add(const ObjectId& id, uint64_t pass) noexcept {
  try {
    MutexLock lock(mu_);
    dropped_.emplace_back(id, pass);
    queued_.store(dropped_.size(), std::memory_order_relaxed);
  } catch (...) {  // no memory: the object stays until this client is gone
  }
}

std::vector<ReleaseQueue::Released> ReleaseQueue::take() {
  std::vector<std::pair<ObjectId, uint64_t>> ids;
  {
    MutexLock lock(mu_);
    ids.swap(dropped_);
    queued_.store(0, std::memory_order_relaxed);
  }
  const auto key = [](const std::pair<ObjectId, uint64_t>& d) {
    return std::tie(d.first.server, d.first.object, d.second);
  };
  std::sort(ids.begin(), ids.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
  std::vector<Released> counted;
  for (const auto& [id, pass] : ids) {
    if (counted.empty() || !(counted.back().id == id) || counted.back().pass != pass)
      counted.push_back(Released{id, pass, 1});
    else
      ++counted.back().count;
  }
  return counted;
}

std::optional<OnewayBatcher::Sealed> OnewayBatcher::seal() {
  if (calls_.empty()) return std::nullopt;
  return seal_open();
}

OnewayBatcher::Sealed OnewayBatcher::seal_open() {
  auto calls = fb_.CreateVector(calls_);
  wire::BatchBuilder b(fb_);
  b.add_requests(calls);
  fb_.Finish(b.Finish(), wire::BatchIdentifier());
  Sealed s;
  s.request_id = request_ids_++;
  s.target = target_;
  s.calls = static_cast<uint32_t>(calls_.size());
  s.frames.reserve(4);
  s.frames.push_back(header_frame(Command::request));
  s.frames.push_back(object_id_frame(target_));
  s.frames.push_back(u64_frame(s.request_id));
  s.frames.push_back(body_frame(fb_));
  fb_.Clear();
  calls_.clear();
  return s;
}

std::optional<OnewayBatcher::Clock::time_point> OnewayBatcher::due() const {
  if (calls_.empty()) return std::nullopt;
  return opened_ + limits_.delay;
}

bool OnewayBatcher::overdue(Clock::time_point now) const {
  return !calls_.empty() && now >= opened_ + limits_.delay;
}

}  // namespace patro::detail
