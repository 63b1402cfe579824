#include "oneway_batcher.hpp"

#include <algorithm>
#include <tuple>

namespace patro::detail {

void ReleaseQueue::add(const ObjectId& id) noexcept {
  try {
    MutexLock lock(mu_);
    dropped_.push_back(id);
    queued_.store(dropped_.size(), std::memory_order_relaxed);
  } catch (...) {  // no memory: the object stays until this client is gone
  }
}

std::vector<std::pair<ObjectId, uint64_t>> ReleaseQueue::take() {
  std::vector<ObjectId> ids;
  {
    MutexLock lock(mu_);
    ids.swap(dropped_);
    queued_.store(0, std::memory_order_relaxed);
  }
  std::sort(ids.begin(), ids.end(), [](const ObjectId& a, const ObjectId& b) {
    return std::tie(a.server, a.object) < std::tie(b.server, b.object);
  });
  std::vector<std::pair<ObjectId, uint64_t>> counted;
  for (const ObjectId& id : ids) {
    if (counted.empty() || !(counted.back().first == id))
      counted.emplace_back(id, 1);
    else
      ++counted.back().second;
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
