// Who may open a CURVE connection to a server's direct ROUTERs: the clients a broker vouched for.
// A broker that accepted a client's key (its ZAP handler, its allow list) and answers that client's
// LOCATE for this server sends the key along with CLIENT_AT; the gate keeps it, and answers
// libzmq's ZAP requests (RFC 27) on this server's context from a thread of its own: a key is
// admitted if a broker vouched for it, refused otherwise (libzmq does not try a refused handshake
// again, but a probing client connects anew after 100 ms, then 200, 400…, so a vouch that arrives
// just after the handshake admits a next attempt). A key a broker revoked
// (it left the broker's allow list) is refused, and the lanes drop what its live sessions send.
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <string>
#include <thread>
#include <unordered_set>
#include <zmq.hpp>

#include "log.hpp"
#include "mutex.hpp"

namespace patro::detail {

class DirectGate {
 public:
  /// The ZAP domain of the direct ROUTERs.
  static constexpr const char* kDomain = "patro-direct";
  /// Most keys kept: past it the oldest vouch is forgotten (its client is vouched for again
  /// when it locates the server again).
  static constexpr size_t kMaxKeys = 100'000;

  /// Binds inproc://zeromq.zap.01 on ctx (one gate per context) and starts answering.
  explicit DirectGate(zmq::context_t& ctx);
  ~DirectGate();
  DirectGate(const DirectGate&) = delete;
  DirectGate& operator=(const DirectGate&) = delete;

  /// A broker vouches for a client's public key (Z85); false if it is no key.
  bool vouch(const std::string& key) PATRO_EXCLUDES(mu_);
  /// A broker revoked a key: refused from now on, and its live sessions' messages dropped.
  void revoke(const std::string& key) PATRO_EXCLUDES(mu_);
  /// Whether a message from a live session under key (its User-Id) is to be dropped. Cheap while
  /// no key was ever revoked.
  bool revoked(const std::string& key) PATRO_EXCLUDES(mu_);
  bool any_revoked() const noexcept { return any_revoked_.load(std::memory_order_acquire); }
  /// Handshakes refused so far.
  uint64_t refused() const noexcept { return refused_.load(std::memory_order_relaxed); }

 private:
  void run();
  void answer(std::vector<zmq::message_t>& req) PATRO_EXCLUDES(mu_);

  zmq::socket_t sock_;  // REP on inproc://zeromq.zap.01: the thread's alone
  Mutex mu_;
  std::unordered_set<std::string> vouched_ PATRO_GUARDED_BY(mu_);
  std::deque<std::string> order_ PATRO_GUARDED_BY(mu_);  // vouched_, oldest first
  std::unordered_set<std::string> revoked_ PATRO_GUARDED_BY(mu_);
  std::atomic<bool> any_revoked_{false};
  std::atomic<uint64_t> refused_{0};
  std::atomic<bool> stopping_{false};
  LogLimiter refusals_;
  std::thread thread_;
};

}  // namespace patro::detail
