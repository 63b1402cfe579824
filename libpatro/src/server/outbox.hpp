// One lane's way out. Every reply to a request the lane took leaves through its outbox, on the
// lane's socket: replies made now, grants owed to parked callers, and replies made later on any
// thread (a patro::Deferred answered, the lock timer), which the outbox queues, wakes the lane for
// (its eventfd: no extra socket in the lane's poll) and the lane's thread encodes and sends. One
// thread sends on the socket, so a client's replies leave in the order the lane made them. A reply
// made later is recorded in the reply cache as it leaves, and goes where the latest copy of its
// request came from.
//
// The direct path: a request that came straight to a lane's own ROUTER carries a direct routing
// (direct_routing(): a marker, the lane, the client's id at that ROUTER). Its reply leaves by that
// lane's ROUTER: from the lane itself, or queued to that lane's outbox by another one (a grant
// made by an unlock on another lane, say).
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <zmq.hpp>

#include "deferred.hpp"
#include "lock_table.hpp"
#include "mutex.hpp"
#include "reply_cache.hpp"
#include "routing.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

class Executor;

class Outbox final : public ReplySink {
 public:
  /// wake_fd: the lane's eventfd, written when something is queued or a stop asked.
  Outbox(int wake_fd, ReplyCache& cache) : wake_fd_(wake_fd), cache_(cache) {}

  // --- Any thread ---
  /// A late reply with these results (encoded on the lane's thread, which owns the encoder).
  void send_results(const std::string& routing, uint64_t client_id, uint64_t request_id,
                    const ValueArray& results) override PATRO_EXCLUDES(mu_);
  void send_error(const std::string& routing, uint64_t client_id, uint64_t request_id,
                  const Error& e) override PATRO_EXCLUDES(mu_);
  /// Replies owed to parked callers whose deadline passed (the lock timer).
  void post_owed(std::vector<DeferredReply>& owed) PATRO_EXCLUDES(mu_);
  /// Asks the lane to stop.
  void request_stop() PATRO_EXCLUDES(mu_);
  /// The lanes' outboxes, for replies that must leave by another lane's direct ROUTER (set before
  /// the lanes start; they outlive every lane thread).
  void set_peers(unsigned lane, const std::vector<Outbox*>* peers) {
    lane_ = lane;
    peers_ = peers;
  }

  // --- The lane's thread ---
  /// The lane's direct ROUTER (null: none), set by the lane's thread before it sends anything.
  void set_direct(zmq::socket_t* direct) { direct_ = direct; }
  /// The lane's sockets to its brokers, by index (ServerOptions::brokers), for replies whose
  /// routing names a broker other than the first; set by the lane's thread before it sends.
  void set_brokers(std::vector<zmq::socket_t>* brokers) { brokers_ = brokers; }

  // --- The lane's thread ---
  /// Sends body to a caller by its routing id: through the first broker (sock), through another
  /// one for a routing that names it, or by a lane's direct ROUTER for a direct routing. version:
  /// the one the peer reads (3: a direct reply held may leave in a bundle); a reply made later
  /// goes in version 1, which every peer reads.
  void reply(zmq::socket_t& sock, std::string_view routing, uint64_t request_id,
             zmq::message_t body, uint8_t version = kWireVersion);
  /// Sends a reply made after its request was taken (a grant, a Deferred's answer): records it in
  /// the reply cache, and sends it where the latest copy of the request came from.
  void answer(zmq::socket_t& sock, const std::string& routing, uint64_t client_id,
              uint64_t request_id, zmq::message_t body);
  /// Sends the replies owed to parked callers (encoded by encoder), and clears owed.
  void send_owed(zmq::socket_t& sock, Executor& encoder, std::vector<DeferredReply>& owed);
  /// Sends one LOG_LINE (frames: what follows the header and routing) by routing, as reply()
  /// does, without waiting: false if the socket refused it (a full queue, a peer gone).
  bool send_log_line(zmq::socket_t& sock, std::string_view routing, Multipart& frames);
  /// Sends what other threads queued. Returns whether the lane was asked to stop.
  bool flush(zmq::socket_t& sock, Executor& encoder) PATRO_EXCLUDES(mu_);
  /// The pipelined requests that replies sent by answer() released, in order (the lane runs them).
  std::vector<ReplyCache::Dependent> take_released() { return std::exchange(released_, {}); }
  /// From now until send_held(), replies are held (in order) instead of sent: a lane handling
  /// requests it read together (a chain of pipelined calls, say) sends their replies in one
  /// burst, which libzmq's I/O thread writes in one go and the client's takes in one wake-up.
  void hold() { holding_ = true; }
  bool holding() const { return holding_; }
  /// Replies held so far.
  size_t held() const { return held_.size(); }
  /// Sends the replies held, in the order they were made, and stops holding: those in a row to
  /// one direct client that reads bundles in one bundle (at most kMaxBundle, kMaxBundleBytes).
  void send_held();

 private:
  struct Late {
    std::string routing;
    uint64_t client_id = 0;
    uint64_t request_id = 0;
    std::variant<ValueArray, zmq::message_t> reply;  // results to encode, or a body
  };
  void push(Late late) PATRO_EXCLUDES(mu_);
  /// Sends a reply now, or holds it (hold()). bundle: a direct reply ([routing][envelope]) to a
  /// client that reads bundles, which send_held may put in one with the next ones to it.
  void emit(zmq::socket_t& sock, Multipart& out, bool bundle = false);
  /// Sends held_[from, to): replies to one direct client, in one bundle if more than one.
  void send_bundle(size_t from, size_t to);

  const int wake_fd_;
  ReplyCache& cache_;
  unsigned lane_ = 0;
  const std::vector<Outbox*>* peers_ = nullptr;
  zmq::socket_t* direct_ = nullptr;                // the lane's thread only
  std::vector<ReplyCache::Dependent> released_;    // the lane's thread only
  std::vector<zmq::socket_t>* brokers_ = nullptr;  // the lane's thread only
  struct Held {
    zmq::socket_t* sock;
    Multipart out;
    bool bundle = false;
  };
  std::vector<Held> held_;  // the lane's thread only
  bool holding_ = false;    // the lane's thread only
  Mutex mu_;
  std::deque<Late> queue_ PATRO_GUARDED_BY(mu_);
  bool stop_ PATRO_GUARDED_BY(mu_) = false;
};

/// A lock operation's results: [ok, count, error, token].
ValueArray outcome_values(const SyncOutcome& o);

}  // namespace patro::detail
