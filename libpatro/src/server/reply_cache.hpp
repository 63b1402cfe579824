// The server's memory of what it answered: a bounded cache of replies keyed by (client id, request
// id), shared by every lane. A client resends a request whose reply it may have lost (its broker
// restarted, its connection broke); the lane that takes the copy answers it from here and does not
// run it again. A copy that arrives while the first is still running (on another lane, parked on a
// lock, or waiting for a patro::Deferred) is answered once, when the first finishes: its routing is
// remembered and the reply goes there, since the first copy's route may be gone with its broker.
//
// Bounds. Each client keeps at most Limits::reply_cache_entries requests, none older than
// Limits::reply_cache_age; past those an entry is forgotten whole, and a resend of its request
// would run again (the age is meant to exceed any call's deadline, the count what a client keeps
// in flight). The finished replies of all clients together hold at most Limits::reply_cache_bytes
// of bodies: past that, the oldest finished reply (of any client) loses its body first, and so do
// the replies of a client the broker says is gone (with several brokers, the broker the client
// came by last, so a client that moved keeps its state). An entry that lost its body is kept
// (a few bytes) until the count or age bound forgets it, and a resend of its request is answered
// Seen::dropped: the dispatcher answers outcome_unknown (it ran once; its reply is gone), never a
// second run. Requests still running are never evicted. Sharded by client id, so lanes serving
// different clients rarely meet on a mutex; the byte bound is kept across the shards (each one's
// oldest body, compared by a global sequence number), without holding two shards' mutexes.
//
// Promise pipelining: a request made on the result of another of its client's requests (its
// `pipeline_of`) waits here, beside that request's entry, until that request finishes — on any
// lane, now or later (a Deferred, a lock wait) — or is cancelled. It holds no lane meanwhile:
// finish() and cancel() hand the dependents they release to the caller (a lane's thread), which
// runs them, in the order they arrived, on the result. At most Limits::reply_cache_entries wait
// per client; they go with their client (forget, the age sweep).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "mutex.hpp"
#include "patro/curve.hpp"
#include "patro/options.hpp"
#include "routing.hpp"

namespace patro::detail {

class ReplyCache {
 public:
  using Clock = std::chrono::steady_clock;

  explicit ReplyCache(const Limits& limits)
      : max_entries_(limits.reply_cache_entries),
        max_age_(limits.reply_cache_age),
        max_bytes_(limits.reply_cache_bytes) {}

  /// A pipelined request, waiting for the request whose result it runs on.
  struct Dependent {
    uint64_t on = 0;          // the request whose result it runs on
    uint64_t request_id = 0;  // its own
    zmq::message_t body;      // its Request, as it came (the buffer shared, not copied)
    std::string routing;      // where its reply goes
    Clock::time_point arrived;
    std::chrono::nanoseconds age{0};  // how long it had waited when a lane took it
    // Its client's key's rights as it arrived (client_rights.hpp; null: everything): it runs
    // under them, checked against the result it runs on.
    std::shared_ptr<const AllowEntry> rights;
    // Set when released: what became of `on` (ready: on_reply holds its reply).
    enum class On { ready, cancelled, dropped } state = On::ready;
    zmq::message_t on_reply;
  };

  /// What a pipelined request finds of the request it runs on.
  enum class Target {
    ready,      // answered: *reply holds its reply (a copy)
    waiting,    // not answered yet (or not arrived): the dependent waits here, moved in
    cancelled,  // cancelled before it ran
    dropped,    // answered, and its reply is gone (see Seen::dropped)
    full        // too many dependents wait for this client: refused (overloaded)
  };
  /// Finds the reply of request d.on of client, or parks d until it comes.
  Target await_result(uint64_t client, Dependent& d, zmq::message_t* reply);
  /// The reply of request `on` of client where it has one (ready, cancelled or dropped, as
  /// await_result), else waiting, with nothing parked: a pipelined call looks first, and makes
  /// its Dependent (a copy of its request) only to wait.
  Target answered(uint64_t client, uint64_t on, zmq::message_t* reply);

  /// What to do with a request that arrived.
  enum class Seen {
    fresh,     // never seen: run it (it is now recorded as running)
    running,   // a copy is running: do nothing now; its reply comes here, routed to this copy
    answered,  // answered before: send *cached (a copy of that reply)
    dropped,   // answered before, and the reply was dropped (the byte bound, or the client was
               // gone): answer outcome_unknown; it must not run again
    cancelled  // its client cancelled it before it ran: answer cancelled; it must never run
  };
  /// Records a request as it arrives (routing: where its answer goes).
  Seen begin(uint64_t client, uint64_t request_id, std::string_view routing, Clock::time_point now,
             zmq::message_t* cached);

  /// Records a request's reply (a cheap copy: ZeroMQ shares the buffer). Returns the routing of
  /// the latest copy if one arrived while it ran (send there), or nothing (send to the first).
  /// The requests pipelined on it that waited are appended to released, in arrival order, to run.
  std::optional<std::string> finish(uint64_t client, uint64_t request_id,
                                    const zmq::message_t& body, std::vector<Dependent>& released);

  /// The client cancelled request_id (a CANCEL): if it has not arrived yet (or is waiting behind
  /// the request a lane runs now, which is the same to us) it is recorded as cancelled, so that
  /// neither it nor a resent copy ever runs; one running or answered is left alone. Whether it was
  /// recorded. A cancelled entry holds no body and is forgotten by the count and age bounds as
  /// others are.
  /// Requests pipelined on a request cancelled here are appended to released (to fail them).
  bool cancel(uint64_t client, uint64_t request_id, Clock::time_point now,
              std::vector<Dependent>& released);

  /// A client is gone (its broker says so): the requests it left running are forgotten (a lock
  /// wait dropped with it never answers). Its finished replies stay until the age sweep or the
  /// byte bound takes them, as any client's: a client taken for gone while alive (it moved
  /// brokers and back, or a broker stalled) resends what it had in flight and gets its reply.
  void forget(uint64_t client);

  /// Several brokers: the client is attached through broker `broker` now (it located a server
  /// of ours there after moving; a brokered request records the same as it arrives).
  void attach(uint64_t client, unsigned broker, Clock::time_point now);
  /// Whether broker `broker`'s word that the client is gone stands: it does unless the client's
  /// latest brokered request or attachment came through another broker (it moved there, and
  /// the broker it left, alive but cut off from it, expired it).
  bool gone_at(uint64_t client, unsigned broker);
  /// Broker `broker` went away: marks the clients attached through it unconfirmed until they
  /// send a request or attach again (a live client moves, or comes back, and says so). Returns
  /// how many.
  size_t mark_unconfirmed(unsigned broker);
  /// The clients still unconfirmed and attached through broker `broker` (it clears the marks).
  std::vector<uint64_t> unconfirmed(unsigned broker);

  uint64_t hits() const noexcept { return hits_.load(std::memory_order_relaxed); }
  /// The bytes of reply bodies held now, and how many bodies were dropped to keep the byte bound.
  size_t bytes() const noexcept { return bytes_.load(std::memory_order_relaxed); }
  uint64_t evicted() const noexcept { return evicted_.load(std::memory_order_relaxed); }
  uint64_t expired() const noexcept { return expired_.load(std::memory_order_relaxed); }
  void count_expired() noexcept { expired_.fetch_add(1, std::memory_order_relaxed); }

 private:
  struct Entry {
    bool done = false;
    bool dropped = false;    // done, and its body was dropped (bytes, or the client gone)
    bool cancelled = false;  // done and dropped (no body): cancelled before it ran
    uint64_t seq = 0;        // when it finished (a global count), naming it in Shard::stored
    zmq::message_t body;
    std::string reroute;  // a copy's routing, set when one arrived while running
  };
  // A finished reply that holds a body, oldest first per shard. Records whose entry is gone (or
  // dropped its body) are skipped when met and compacted away as they accumulate.
  struct Stored {
    uint64_t seq;
    uint64_t client;
    uint64_t request_id;
  };
  struct PerClient {
    std::unordered_map<uint64_t, Entry> entries;
    std::deque<std::pair<uint64_t, Clock::time_point>> order;  // oldest first
    Clock::time_point last;                                    // its latest request
    int via = -1;  // the broker its latest brokered request or attachment came by (-1: none)
    bool unconfirmed = false;  // its broker went away, and it has not been heard from since
    // Pipelined requests waiting, by the request they run on; how many in all.
    std::unordered_map<uint64_t, std::vector<Dependent>> waiting;
    size_t waiting_count = 0;
  };
  /// Moves the dependents waiting for request_id to released, marked state.
  static void release_waiting(PerClient& c, uint64_t request_id, Dependent::On state,
                              const zmq::message_t* reply, std::vector<Dependent>& released);
  struct Shard {
    Mutex mu;
    std::unordered_map<uint64_t, PerClient> clients PATRO_GUARDED_BY(mu);
    uint32_t since_sweep PATRO_GUARDED_BY(mu) = 0;
    std::deque<Stored> stored PATRO_GUARDED_BY(mu);
    size_t bodies PATRO_GUARDED_BY(mu) = 0;  // entries holding a body (live records in stored)
  };
  Shard& shard(uint64_t client) noexcept { return shards_[(client * 0x9E3779B97F4A7C15ull) >> 60]; }
  void evict(Shard& s, PerClient& c, Clock::time_point now) PATRO_REQUIRES(s.mu);
  /// Drops clients silent for longer than the age bound (gone while the broker that would have
  /// said so was down); every few thousand requests to a shard.
  void sweep(Shard& s, Clock::time_point now) PATRO_REQUIRES(s.mu);
  /// Frees an entry's body (its bytes leave the count); the entry itself stays.
  void release(Shard& s, Entry& e) PATRO_REQUIRES(s.mu);
  /// The entry a stored record names, if it still holds that body; else nullptr.
  static Entry* holder(Shard& s, const Stored& r) PATRO_REQUIRES(s.mu);
  /// Drops the oldest bodies, across shards, until the byte bound holds. Called with no mutex.
  void shed();

  const size_t max_entries_;
  const std::chrono::milliseconds max_age_;
  const size_t max_bytes_;
  std::array<Shard, 16> shards_;
  std::atomic<uint64_t> hits_{0}, expired_{0}, evicted_{0}, seq_{0};
  std::atomic<size_t> bytes_{0};
};

}  // namespace patro::detail
