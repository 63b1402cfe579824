// The client's oneway batching, on its own (no sockets, the clock passed in): the open batch of
// oneway calls a connection is filling, and the queue of dropped references whose releases ride in
// those batches.
//
// A batch goes to one server. It is sealed — made into the frames of one request, whose one reply
// acknowledges all its calls — when it is full (ClientOptions::oneway_batch calls or
// oneway_batch_bytes), when a call for another server comes, when it is older than
// ClientOptions::oneway_delay (its holder asks overdue()), and, by its holder, before any other
// request (so the order of a connection's requests is the order they were made). The calls keep
// the order they were appended in.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "mutex.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

/// The references a client dropped (the last copy of each, from any thread), waiting for the
/// connection's heartbeat thread to release them at their servers (wire::Op::Release). Shared
/// with every reference's hold, so a hold that outlives its connection has somewhere to go.
class PATRO_PRIVATE ReleaseQueue {
 public:
  /// References to one object dropped, under one pass key (0: references a reply brought; else
  /// a callback reference's pass, released as Release [count, pass]).
  struct Released {
    ObjectId id;
    uint64_t pass = 0;
    uint64_t count = 0;
    bool operator==(const Released&) const = default;
  };
  /// Never throws (a reference's last copy goes in a destructor): a release it cannot queue is
  /// dropped, and the object lives until the client is gone.
  void add(const ObjectId& id, uint64_t pass = 0) noexcept PATRO_EXCLUDES(mu_);
  /// Everything queued, counted by object and pass key (one entry each, ordered by server, object
  /// and key).
  std::vector<Released> take() PATRO_EXCLUDES(mu_);
  /// How many are queued (a hint, read without the lock).
  size_t queued() const noexcept { return queued_.load(std::memory_order_relaxed); }

 private:
  std::atomic<size_t> queued_{0};
  Mutex mu_;
  std::vector<std::pair<ObjectId, uint64_t>> dropped_ PATRO_GUARDED_BY(mu_);  // (id, pass)
};

/// The open batch. Not locked itself: its holder guards it (the connection, with its out_mu_).
class PATRO_PRIVATE OnewayBatcher {
 public:
  using Clock = std::chrono::steady_clock;

  /// ClientOptions' oneway_batch, oneway_batch_bytes and oneway_delay.
  struct Limits {
    size_t calls = ClientOptions{}.oneway_batch;
    size_t bytes = ClientOptions{}.oneway_batch_bytes;
    std::chrono::microseconds delay = ClientOptions{}.oneway_delay;
  };

  /// A sealed batch: the request as it goes out ([request][target][request id][Batch body]).
  struct Sealed {
    Multipart frames;
    uint64_t request_id = 0;
    ObjectId target;
    uint32_t calls = 0;
  };

  /// What one append did.
  struct Appended {
    std::vector<Sealed> sealed;  // batches sealed by it, in the order they must go (at most 2)
    bool opened = false;         // it opened a batch that is still open (it is due at due())
  };

  /// request_ids: where request ids come from (the connection's counter), for each call and for
  /// each batch as it is sealed.
  OnewayBatcher(Limits limits, std::atomic<uint64_t>& request_ids)
      : limits_(limits), request_ids_(request_ids) {}
  OnewayBatcher(const OnewayBatcher&) = delete;
  OnewayBatcher& operator=(const OnewayBatcher&) = delete;

  /// Appends one call to target's server, made at now: encode(builder, request id) writes it into
  /// the batch's builder (not finished) and returns its offset. Seals the open batch first when it
  /// goes to another server, and the batch with the call when it is then full. encode must not
  /// throw once it began writing (the connection checks a call's arguments before).
  template <class Encode>
  Appended append(const ObjectId& target, Clock::time_point now, Encode&& encode) {
    Appended a;
    if (!calls_.empty() && target_.server != target.server) a.sealed.push_back(seal_open());
    if (calls_.empty()) {
      target_ = target;
      opened_ = now;
      a.opened = true;
    }
    const uint64_t rid = request_ids_++;
    calls_.push_back(encode(fb_, rid));
    if (calls_.size() >= limits_.calls || fb_.GetSize() >= limits_.bytes) {
      a.sealed.push_back(seal_open());
      a.opened = false;
    }
    return a;
  }

  /// Seals the open batch; none if it is empty.
  std::optional<Sealed> seal();
  /// When the open batch must go (opened + delay); none if it is empty.
  std::optional<Clock::time_point> due() const;
  /// Whether the open batch is older than the delay at now (false if it is empty).
  bool overdue(Clock::time_point now) const;
  /// The calls in the open batch.
  size_t open_calls() const noexcept { return calls_.size(); }

 private:
  Sealed seal_open();

  const Limits limits_;
  std::atomic<uint64_t>& request_ids_;
  flatbuffers::FlatBufferBuilder fb_{4096};  // reused from batch to batch
  std::vector<flatbuffers::Offset<wire::Request>> calls_;
  ObjectId target_;
  Clock::time_point opened_;
};

}  // namespace patro::detail
