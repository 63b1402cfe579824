// A client's link to its brokers: one DEALER to one broker at a time, and what the client knows of
// that broker — where it is, its instance (a new one in a heartbeat means a restart), its timing
// (from its Welcome), when our next heartbeat is due and how long it has been silent, and which
// servers it has seen us ask for (each learns by a LOCATE through the broker that we are attached
// there). With several brokers it moves to the next in the list: a new socket, a hello, and a
// watch that sees the TCP connection drop.
//
// It knows nothing of requests: it reports what happened (a restart, a silence past the window, a
// move) and the connection decides what becomes of the requests in flight. It is used by the
// holder of the connection's socket turn (IoLoop), except for its timing, which any thread reads
// (LinkTiming, atomics).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "heartbeats.hpp"
#include "patro/options.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

/// The broker's timing as the client applies it. Written by the link's holder, read by any thread.
struct LinkTiming {
  explicit LinkTiming(const Heartbeat& ours)
      : heartbeat_ms(ours.interval.count()),
        interval_ms(ours.interval.count()),
        window_ms(ours.window().count()) {}
  /// Ours or the broker's (from its Welcome), the faster: the broker never thinks us dead.
  std::atomic<int64_t> heartbeat_ms;
  /// The broker's heartbeat interval, and how long it may be silent before we call it gone (its
  /// interval times its liveness).
  std::atomic<int64_t> interval_ms;
  std::atomic<int64_t> window_ms;

  std::chrono::milliseconds heartbeat() const noexcept {
    return std::chrono::milliseconds(heartbeat_ms.load(std::memory_order_relaxed));
  }
  std::chrono::milliseconds window() const noexcept {
    return std::chrono::milliseconds(window_ms.load(std::memory_order_relaxed));
  }
  std::chrono::milliseconds interval() const noexcept {
    return std::chrono::milliseconds(interval_ms.load(std::memory_order_relaxed));
  }
};

/// How long a broker may be silent before the client acts. With several brokers, 1.75 of its
/// heartbeat intervals (a beat missed and the next one late by most of an interval) is enough to
/// move on: another broker is there, moving is safe, and the fail-over target is 2 intervals
/// (docs/BENCHMARKS.md). 1.5 intervals moved a loaded client (ASan beside a compile) between two
/// live brokers fourteen times in 35 s. Beats can be missed only once they come: until the broker
/// moved to is first heard (beating), its whole window applies, or a loaded machine, slow to
/// connect, moves on again and again without ever hearing one.
std::chrono::milliseconds silence_allowed(bool several, bool beating,
                                          std::chrono::milliseconds window,
                                          std::chrono::milliseconds interval) noexcept;

class BrokerLink {
 public:
  using Clock = std::chrono::steady_clock;

  BrokerLink(zmq::context_t& ctx, std::vector<std::string> brokers, const ClientOptions& options,
             const CurveOptions& curve, uint64_t client_id, LinkTiming& timing);
  ~BrokerLink();
  BrokerLink(const BrokerLink&) = delete;
  BrokerLink& operator=(const BrokerLink&) = delete;

  const std::vector<std::string>& brokers() const noexcept { return brokers_; }
  bool several() const noexcept { return brokers_.size() > 1; }

  /// What opening a socket to a broker came to.
  struct Opened {
    bool ok = false;
    bool refused = false;  // the broker refused the handshake (rather than not answering)
    std::string why;       // when not ok
  };
  /// Opens the socket to brokers_[index] and waits for its handshake (the CURVE handshake or the
  /// TCP connection) for up to budget; nothing of ours reaches the broker before it. Throws
  /// Error(invalid_argument) for an endpoint ZeroMQ refuses as such.
  Opened open(size_t index, std::chrono::milliseconds budget);
  /// The broker at brokers_[index] answered our hello with this Welcome: it is the one we talk to.
  void welcomed(size_t index, const wire::Welcome& welcome);
  /// The broker we talk to said which wire version it reads (a Welcome, also one to the hello of
  /// a move, which finds no slot).
  void heard_version(const wire::Welcome& welcome) noexcept;
  /// The wire version our requests to the broker go in: 2 once its Welcome said it reads it, 1
  /// before (and for an older broker), which every broker reads.
  uint8_t wire_version() const noexcept { return wire_version_; }
  /// Moves to the next broker in the list (or to brokers_[*to]): a new socket, and our hello
  /// (request id rid; its welcome finds no slot and is dropped: a cluster's brokers share their
  /// settings). The old broker is not told (no DISCONNECT): if it lives, it expires us after its
  /// window, and the servers heed that only if we did not attach to them here first. Returns the
  /// endpoint moved from.
  std::string move(std::optional<size_t> to, uint64_t rid, Clock::time_point now);
  /// Says goodbye (DISCONNECT) and closes the socket, waiting at most the close linger.
  void close() noexcept;

  /// Sends m to the broker; false if it would block (dontwait) or failed (logged).
  bool send(Multipart& m, bool dontwait, const char* what) noexcept;
  /// Reads one message if one is queued: the broker is heard (was_silent: it had gone silent, see
  /// went_silent). Whether one was read.
  bool receive(Multipart& m, Clock::time_point now, bool& was_silent);
  /// Whether a message waits (ZMQ_EVENTS: no system call in the common case).
  bool readable();
  /// Sends our heartbeat if one is due.
  void beat(Clock::time_point now);
  /// Asks the broker where server takes requests directly (and tells the server, through the
  /// broker, that we are attached here).
  void locate(uint64_t server);

  /// What a broker instance (in a heartbeat or welcome) means.
  enum class Instance { same, first, restarted };
  Instance instance(uint64_t instance) noexcept;
  uint64_t instance() const noexcept { return instance_; }
  /// After a read found nothing: the text to act on if the broker has been silent past what
  /// silence_allowed allows (and a new window starts now), else nothing.
  std::optional<std::string> overdue(Clock::time_point now);
  /// Marks the broker silent (one broker, retries on: requests wait for it, and are resent when
  /// it is heard); whether it was not already (worth a log line).
  bool went_silent(Clock::time_point now) noexcept { return beats_.went_silent(now); }
  /// Several brokers: when the silence would be long enough to move on (a poll wakes then).
  Clock::time_point move_due() const noexcept;
  Clock::time_point next_beat() const noexcept { return beats_.next_beat(); }
  /// Several brokers: whether the TCP connection to the broker dropped.
  bool dropped();

  /// The socket and the drop watch (null: none), for a poll.
  void* socket_handle() noexcept { return sock_.handle(); }
  void* watch_handle() const noexcept { return watch_ ? watch_->handle() : nullptr; }
  const std::string& endpoint() const noexcept { return endpoint_; }
  /// Where servers register with this broker (from its Welcome; empty: it did not say).
  const std::string& server_endpoint() const noexcept { return server_endpoint_; }

  /// The servers this broker has seen us ask for (a LOCATE for each after a restart or a move).
  void note_server(uint64_t server);
  void forget_server(uint64_t server);
  const std::unordered_set<uint64_t>& servers_seen() const noexcept { return servers_seen_; }

 private:
  /// Closes the socket at once (linger 0), and its drop watch.
  void drop_socket() noexcept;
  /// A new socket (CURVE if configured), not connected; the old one closes.
  void new_socket();

  zmq::context_t& ctx_;
  const std::vector<std::string> brokers_;
  const ClientOptions& options_;
  const CurveOptions& curve_;
  const uint64_t client_id_;
  LinkTiming& timing_;
  zmq::socket_t sock_;
  std::unique_ptr<DisconnectWatch> watch_;  // several brokers
  size_t index_ = 0;                        // brokers_[index_] is endpoint_
  std::string endpoint_;
  std::string server_endpoint_;
  uint64_t instance_ = 0;  // 0: not heard since we attached
  uint8_t wire_version_ = kWireVersion;
  Heartbeats beats_;
  std::unordered_set<uint64_t> servers_seen_;
  uint64_t last_server_ = 0;  // the last one noted (most requests go to the same server)
};

/// Asks the broker at endpoint one control question on a socket of its own (request id rid); the
/// answer's body, or nothing within the connect timeout.
std::optional<zmq::message_t> ask_broker(zmq::context_t& ctx, const std::string& endpoint,
                                         const ClientOptions& options, const CurveOptions& curve,
                                         Command command, uint64_t rid,
                                         const flatbuffers::FlatBufferBuilder& fb);

/// Sends m on s; false if it would block (dontwait) or failed, which is logged (what: "request").
bool send_logged(zmq::socket_t& s, Multipart& m, bool dontwait, const char* what) noexcept;

/// A control message to a broker: [hdr][id][body] (the id: a request id, or LOCATE's server id).
Multipart control_frames(Command command, uint64_t id, const flatbuffers::FlatBufferBuilder& fb);
/// HELLO's body: the client id.
flatbuffers::FlatBufferBuilder hello_body(uint64_t client_id);

}  // namespace patro::detail
