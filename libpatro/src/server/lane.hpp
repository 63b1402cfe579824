// One lane of a server: a thread with its own DEALER socket to each broker (and, on the direct
// path, its own ROUTER), its dispatcher and its outbox. The lane registers at every broker,
// heartbeats each and watches each for silence, takes the requests they forward (and those that
// come straight to its ROUTER), runs them through its dispatcher and sends their replies; lane 0
// also frees the objects no client holds and releases the clients that did not come back after a
// broker went away. Everything here belongs to the lane's thread: the Lane is made, run and
// destroyed on it; what it shares with the other lanes is the server's (object table, lock table,
// reply cache), reached through the Server.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "deferred.hpp"
#include "dispatcher.hpp"
#include "heartbeats.hpp"
#include "outbox.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

class Server;

/// The offset from our steady clock to the broker's, from the readings it sends (REGISTERED and
/// its heartbeats), so that a lane knows how long a request waited since the broker forwarded it —
/// in the lane's socket behind a long call, say. A reading is taken before its trip here, so each
/// sample is at most the true offset and the largest recent one is the best: an age computed with
/// it errs short (a request just past its deadline may still run), never long.
class BrokerClock {
 public:
  void reset() { n_ = next_ = 0; }
  void observe(uint64_t broker_ns);
  /// How long ago the broker forwarded at forwarded_ns (its clock); zero before any reading.
  std::chrono::nanoseconds age(uint64_t forwarded_ns) const;

 private:
  std::array<int64_t, 8> samples_{};
  size_t n_ = 0, next_ = 0;
};

class Lane {
 public:
  using Clock = std::chrono::steady_clock;

  /// On the lane's thread: binds the direct ROUTER (if the server has the direct path), connects
  /// to every broker and sends the registrations. wake_fd: the lane's eventfd (stop, or late
  /// replies queued in outbox).
  Lane(Server& server, unsigned index, int wake_fd, std::shared_ptr<Outbox> outbox);
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;

  /// Serves until the outbox is asked to stop, then tells every broker it leaves (DISCONNECT)
  /// and closes its sockets.
  void run();

 private:
  /// One broker as this lane sees it.
  struct Link {
    // Ours until the broker says its own (in Registered): then the faster interval, its window.
    std::chrono::milliseconds interval, window;
    Heartbeats beats;  // ours due, the broker's last heard, its silence (logged once per silence)
    // Set while the broker refuses a name another live server holds: that owner may be this
    // server's previous process, which the broker sees dead only after its heartbeat window, so
    // the lane asks again each interval until the server's register_until_.
    Clock::time_point register_again = Clock::time_point::max();
    BrokerClock clock;
    bool counted = false;  // this lane told start() it registered here
    bool live = false;     // registered, and not lost since
  };

  /// One turn of the loop: wait for the sockets, the wake fd or the next timer, and handle what
  /// came. Returns false once the lane was asked to stop (or its poll failed).
  bool turn();
  /// The registration message, built once (the names the server serves, the direct endpoint).
  std::string registration() const;
  zmq::socket_t make_socket(size_t broker) const;
  void send_register(zmq::socket_t& s);
  void send_simple(zmq::socket_t& s, Command c);
  /// A heartbeat carries the server's counters, which the broker shows in broker_info.
  void send_heartbeat(zmq::socket_t& s);
  /// Where replies by routing leave from: the socket to the first broker.
  zmq::socket_t& first() { return socks_.front(); }

  /// A message read ahead of the one the lane runs next: from the direct ROUTER, or from broker
  /// `broker`.
  struct Ahead {
    Multipart msg;
    bool direct = false;
    size_t broker = 0;
    // A request that came in a bundle ([routing][envelope] here): the bundle's frame, which
    // carries the session's properties (its client's key) that the envelope lacks, and holds the
    // envelope's bytes (msg[1] is a view into it, made without a copy: split_direct_bundle).
    zmq::message_t props{};
  };
  /// Reads what waits on the lane's sockets (at most Limits::lane_read_ahead messages held), so
  /// that a CANCEL queued behind a request is seen before that request runs: CANCELs are applied
  /// as they are read, the rest handled in order by turn().
  void read_ahead();
  /// Whether the next message read ahead is a call pipelined on an earlier request (the lane
  /// then holds the replies it makes, to send them with that call's: Outbox::hold).
  bool pipelined_next() const;
  /// The direct client whose replies may go in a bundle (its request says it reads them): its id
  /// at the ROUTER; empty for any other message.
  static std::string_view bundle_reader(const Ahead& a);
  /// Whether the next message read ahead comes from reader (bundle_reader), so that the reply
  /// to the one before it is held to leave in one bundle with the next one's.
  bool from_reader_next(std::string_view reader) const;
  /// Splits a bundle that came to the direct ROUTER ([routing][bundle]) into one message read
  /// ahead per request in it; a malformed bundle is dropped whole.
  void split_direct_bundle(Ahead& a);
  /// A message that came to the lane's direct ROUTER: a request, run; a heartbeat, answered.
  void handle_direct(Multipart& m, const zmq::message_t& bundle_props);
  /// A CANCEL, [hdr][client routing][object id][request id][client id] (brokered; direct ones
  /// come with the ROUTER's routing first and the header second): recorded in the reply cache.
  void handle_cancel(const Multipart& m);
  /// A direct REQUEST in an inline envelope ([routing][envelope]), read where it lies: no version
  /// 1 frames are made for it (handle_direct's path for the usual direct call). props: the frame
  /// that carries the session's properties.
  void handle_direct_request(Multipart& m, const InlineEnvelope& e, const zmq::message_t& props);
  // Whether a direct message comes from a session whose key was revoked (answered, if a request
  // (request_id), in its wire version). router_id: the client's id at the ROUTER; props: the frame
  // that carries the session's properties.
  bool refuse_revoked(zmq::message_t& router_id, std::optional<uint64_t> request_id,
                      const zmq::message_t& props, uint8_t version);
  /// A request through broker `broker`, as version 1 frames:
  /// [hdr + forwarded at][client routing][object id][request id][body]. version: the wire version
  /// it came in, which its reply goes in.
  void handle_request(Multipart& rq, uint64_t stamp, size_t broker, uint8_t version);
  /// A direct request from the client router_id at the lane's ROUTER: served under the key its
  /// session's properties (props) carry, its reply in wire version `version`.
  void serve_direct(const zmq::message_t& router_id, uint64_t request_id,
                    const zmq::message_t& body, const zmq::message_t& props, uint8_t version);
  /// What a request runs, from its parts: its routing (a direct one's, or the client's at broker
  /// `broker`), its id and body. key: a direct request's client key (its session's User-Id),
  /// looked up only while some key is limited (ClientRights::any). version: the wire version it
  /// came in, which its reply goes in.
  void serve_request(std::string_view routing, uint64_t request_id, const zmq::message_t& body,
                     uint64_t stamp, bool is_direct, size_t broker, const std::string& key,
                     uint8_t version);
  /// A message from broker `broker`.
  void handle_broker(size_t broker, Multipart& m, Clock::time_point now);
  /// The broker's answer to our registration.
  void handle_registered(size_t broker, Multipart& m, Clock::time_point now);
  /// A LOG_SUBSCRIBE, [hdr][client routing][server id][client id]([level][selections]), its
  /// lines to leave by routing (a reply routing: routing.hpp).
  void handle_log_subscribe(Multipart& m, std::string routing);
  /// Sends the log lines queued for the subscribers this lane sends to.
  void send_log_lines();
  /// Runs the pipelined requests released since (their first requests finished or were
  /// cancelled), and those they release in turn, sending their replies.
  void run_dependents();
  /// A client is gone: its locks are released, its waits dropped, what it left running forgotten.
  void release_client(uint64_t client_id);

  // The server's own watch over its clients when a broker goes away (lane 0 keeps it): a client
  // attached through that broker that died with it is never reported gone by any broker, so
  // every client attached through it must come back — a request, or a LOCATE through any broker
  // (CLIENT_AT), as libpatro sends after moving or when its broker restarted — within twice the
  // broker's window once some broker has us registered; those that do not are released.
  void broker_lost(size_t broker, Clock::time_point now);
  void broker_registered(size_t broker, Clock::time_point now);
  /// Lane 0 releases the clients that did not come back after a broker went away.
  void check_lost(Clock::time_point now);
  /// Lane 0 frees the objects no client has held for their lease.
  void collect(Clock::time_point now);
  /// Heartbeats, registrations asked again, and brokers silent past their window.
  void keep_links(Clock::time_point now);
  /// After the loop: DISCONNECT to every broker, sockets closed.
  void leave();

  Server& server_;
  const unsigned index_;
  const int wake_fd_;
  const std::shared_ptr<Outbox> outbox_;
  Dispatcher dispatcher_;
  Executor& encoder_;
  std::vector<DeferredReply> owed_;
  std::vector<ReplyCache::Dependent> released_;  // released by a CANCEL, for run_dependents()

  // The direct path: this lane's own ROUTER, where clients send requests straight to it.
  zmq::socket_t direct_;
  std::string direct_endpoint_;
  std::string reg_body_;

  // Lane 0 looks for objects to free four times a lease (ObjectTable::collect).
  Clock::duration collect_every_;
  Clock::time_point next_collect_;

  // One DEALER per broker, each registered, heartbeated and watched on its own.
  std::vector<zmq::socket_t> socks_;
  std::vector<Link> links_;
  std::vector<zmq::pollitem_t> items_;  // the wake fd, the direct ROUTER if any, the brokers
  size_t first_broker_item_ = 0;
  std::deque<Ahead> ahead_;      // read ahead (read_ahead), in the order read
  Clock::time_point read_at_{};  // when read_ahead last drained the sockets
  std::vector<bool> dry_;        // read_ahead: the broker sockets found empty in this pass
  std::vector<std::string_view> bundled_;  // split_direct_bundle's envelopes (kept for its room)
  AlignedScratch scratch_;
  std::string marked_;  // a request's routing through a broker other than the first
};

}  // namespace patro::detail
