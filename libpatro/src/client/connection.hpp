// A client connection to a broker: one DEALER socket, many requests in flight, replies matched by
// request id. There is no I/O thread: the thread that waits for a reply does the socket I/O itself
// (leader/follower: the IoLoop, io_loop.hpp, holds the turns), so a call costs what a raw ZeroMQ
// round trip costs. The connection is a façade over parts that each do one job: the io loop, the
// broker link (broker_link.hpp: the socket, hello and welcome, heartbeats, silence, the move to
// another broker), the request table (request_table.hpp), the direct routes (direct_routes.hpp)
// and the oneway batcher (oneway_batcher.hpp); its own code is the pump that drives them (what a
// holder of the turn does with the sockets) and the decisions that join them. A small heartbeat
// thread keeps the connection alive while nobody is calling, sends oneway batches that waited their
// delay, and drives the socket while then-callbacks wait for answers nobody else waits for. Any
// thread may use a Connection.
//
// Oneway calls are appended to an open batch (one server per batch) that goes out when it is full,
// when it is older than ClientOptions::oneway_delay, or before any other request (so the order of
// the connection's requests is the order they were made). The server acknowledges each batch with
// one reply; at most ClientOptions::oneway_window calls are unacknowledged, and a sender past it
// waits, driving the socket as a caller waiting for a reply does. The open batch is an
// OnewayBatcher (oneway_batcher.hpp), guarded by out_mu_ like the outbox its batches go into;
// the references a client dropped wait in a ReleaseQueue and go as Release calls in those batches.
//
// Retries (ClientOptions::retry), decided by the request table (request_table.hpp: the slots in
// flight, their deadlines and the exactly-once rules, with no socket; the connection sends what it
// says to resend): each request keeps its frames until its answer comes (the body is
// shared with the copy that went out, not copied). It is sent again, with the same request id, when
// its answer may have been lost — the broker restarted (its instance, in every heartbeat, changed)
// or was silent past its window and is heard again — and, after a backoff, when the broker said it
// has no route for it (the server not registered yet), or its server went away and it is
// idempotent. The server's reply cache answers a copy that already ran, so every operation is safe
// to resend. A call fails only at its deadline (timeout; server_unavailable where no copy can have
// run), when no route appears within twice the broker's window (server_unavailable), or when its
// server went away and it is not idempotent (outcome_unknown).
//
// The direct path (ClientOptions::route): on its first request to a server the connection asks the
// broker where the server takes requests directly (LOCATE), opens one DEALER to one of its lanes
// (chosen by client id, so the connection's requests to that server all run on one lane, in send
// order) and checks it with a heartbeat. Requests go to the broker until that heartbeat is
// answered and none sent through the broker to that server is still in flight; then straight to
// the lane. A direct connection silent past the broker's window is dead: the requests in flight on
// it are resent through the broker, in their order, with the same ids (the server's reply cache
// answers a copy that already ran), later requests follow them there, and the direct path is tried
// again after a backoff. The decisions (each server's state, timers and held requests) are a
// DirectRoutes table (direct_routes.hpp); the connection keeps the sockets and acts on them,
// under the io loop's turn with the broker link.
//
// Several brokers (a config or a list naming more than one): the connection talks to one at a
// time. When it goes silent (1.75 of its heartbeat intervals) or its connection drops (a socket
// monitor sees the TCP connection close, as it does at once when a broker process dies), the
// connection moves to the next in the list: a new socket, a hello, a LOCATE for each server it has
// talked to (the server then heeds only this broker's CLIENT_GONE for it: locks and leases belong
// to the client, not to the broker it came by), and every request in flight through the broker
// resent with its id (the reply cache answers copies that already ran). Requests on direct
// connections do not pass a broker and go on untouched. A name unknown at the current broker is
// looked up at the others, and the connection moves to the first that knows it.
//
// Lock order: the io loop's turn (loop_.turn(): the broker link and the direct sockets), then
// out_mu_ (the outbox and the open batch), then the request table's mutex (requests_.mutex(); it
// also guards the turns' generation and the heartbeat thread's wake-ups). Callbacks run with none
// of them held.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "broker_link.hpp"
#include "completions.hpp"
#include "direct_routes.hpp"
#include "io_loop.hpp"
#include "mutex.hpp"
#include "oneway_batcher.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"
#include "request_table.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

class ChildProcess;  // spawn.cpp: a process patro::spawn started

struct NameInfo {
  ObjectId id;
  std::string type_name;
  std::string reftype;
};

/// Per-call settings beyond the operation itself.
struct CallExtras {
  /// The call's deadline; none: ClientOptions::call_timeout.
  std::optional<std::chrono::milliseconds> timeout;
  /// A fencing token to send (0: none).
  uint64_t fence = 0;
  /// Where to put the arguments the call changed (index, new value), if wanted.
  std::vector<std::pair<uint32_t, Value>>* changed = nullptr;
  /// Promise pipelining: the request (of this connection) whose result the call runs on, in
  /// place of the object named (whose server routes it); 0: none.
  uint64_t pipeline_of = 0;
};

class Connection;

/// Serves a client's local objects so that servers can call them back (RMI's callbacks). It needs
/// a server, a family above this one: the peer family installs the factory when the library loads.
class PATRO_PRIVATE CallbackHost {
 public:
  virtual ~CallbackHost() = default;
  /// A reference that servers can call, to the local object r names (r.node), now served.
  virtual Value serve(const Reference& r) = 0;
  /// Whether the calling thread is one of the host's (running a callback).
  virtual bool on_host_thread() const = 0;
  /// The server half of the ids of the objects it serves.
  virtual uint64_t server_id() const = 0;
  /// A reference to id about to go into a request (a pass): counted, and the key its receiver
  /// releases it with (wire Ref.pass) returned; 0 (nothing counted) if the host does not serve it.
  virtual uint64_t count_pass(const ObjectId& id) = 0;
  /// The objects it serves now.
  virtual size_t served() const = 0;
};
using CallbackHostFactory = std::unique_ptr<CallbackHost> (*)(Connection& conn);
void set_callback_host_factory(CallbackHostFactory factory) noexcept;

class PATRO_PRIVATE Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Clock = std::chrono::steady_clock;

  Connection(std::vector<std::string> brokers, const ClientOptions& options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Says hello to the first broker that answers; throws Error(broker_unreachable).
  void connect();

  /// Runs one operation and returns its results; throws Error (RemoteError for what served code
  /// threw or a failed server-side system call). The arguments the call changed go to changed.
  ValueArray call(const ObjectId& id, wire::Op op, const Path& path, const ValueArray& args,
                  std::string_view name = {}, wire::CallContext context = wire::CallContext::Scalar,
                  const CallExtras& extras = {});

  /// Sends one operation and returns at once; its answer arrives in the slot. Waits (driving the
  /// socket) while max_in_flight requests are in flight.
  SlotPtr start(const ObjectId& id, wire::Op op, const Path& path, const ValueArray& args,
                std::string_view name = {}, wire::CallContext context = wire::CallContext::Scalar,
                const CallExtras& extras = {});
  /// Drives the socket until the slot is answered or until; whether it was answered.
  bool await(const SlotPtr& slot, Clock::time_point until);
  /// Until the slot's own deadline (after which it is answered with Errc::timeout).
  void await(const SlotPtr& slot);
  bool ready(const SlotPtr& slot);
  /// Makes the slot's deadline no later than now + after (Future::expire_after): past it, it is
  /// answered Errc::timeout and a CANCEL follows its request, as cancel() sends. Whether the slot
  /// was still unanswered.
  bool expire_after(const SlotPtr& slot, Clock::duration after);
  /// Cancels the slot's request if it is not answered yet (whether it was not): it is answered
  /// Errc::cancelled at once, and a CANCEL follows the request the way it went, so that a server
  /// that has not started it never runs it (docs/WIRE.md "Cancelling").
  bool cancel(const SlotPtr& slot);
  /// The results of an answered slot; throws the call's error.
  ValueArray results(const SlotPtr& slot,
                     std::vector<std::pair<uint32_t, Value>>* changed = nullptr);
  /// Runs f once the slot is answered: at once in this thread if it is, otherwise in the thread
  /// that receives the answer, after it let go of the socket. With continuations = event_loop,
  /// queued for run_ready instead, in either case.
  void on_done(const SlotPtr& slot, std::function<void()> f);
  /// continuations = event_loop: the fd readable while continuations wait, and the call that runs
  /// them in the calling thread (how many ran). Otherwise both throw Error(invalid_argument).
  int event_fd() const;
  size_t run_ready();

  /// Queues a oneway call (no answer). Waits, driving the socket, while oneway_window calls are
  /// unacknowledged; throws Error(timeout) if the window does not open within call_timeout.
  void send_oneway(const ObjectId& id, wire::Op op, const Path& path, const ValueArray& args,
                   std::string_view name = {}, uint64_t fence = 0);
  /// Sends the open batch and waits until every oneway call is acknowledged. Returns the number
  /// of oneway calls that failed on the server since the last time (each was logged).
  uint64_t await_oneway(std::chrono::milliseconds timeout);
  /// Oneway calls sent but not acknowledged, plus those in the open batch.
  size_t oneway_outstanding();
  /// A hold on a reference to id that a reply brought: its last copy going queues a release.
  /// pass: the key of a callback reference's pass (wire Ref.pass), released with it (0: none).
  std::shared_ptr<const void> hold(const ObjectId& id, uint64_t pass = 0);
  /// References released so far (each Release call sent; a test's and an operator's view).
  uint64_t released() const noexcept { return released_.load(std::memory_order_relaxed); }

  /// Resolves a name in the broker's registry (several brokers: the current one's, then the
  /// others' in turn).
  std::optional<NameInfo> lookup(const std::string& name);

  /// Sends a control request (fb: a finished Control) to the broker and returns the body of its
  /// answer; throws Error(timeout) after call_timeout.
  zmq::message_t control(Command command, const flatbuffers::FlatBufferBuilder& fb);

  uint64_t client_id() const noexcept { return client_id_; }
  Route route() const noexcept { return route_; }
  /// Requests sent again so far.
  uint64_t retries() const noexcept { return retries_.load(std::memory_order_relaxed); }
  const ClientOptions& options() const noexcept { return options_; }
  /// The broker talked to now (several brokers: it changes when the connection moves).
  std::string endpoint() PATRO_EXCLUDES(loop_.turn());
  /// Where servers register with that broker (from its Welcome; a wildcard host replaced by the
  /// host this connection reached). Throws Error(unsupported) for a broker too old to say.
  std::string broker_server_endpoint() PATRO_EXCLUDES(loop_.turn());
  /// Callbacks: serves the local object r names on this connection's callback host (started on
  /// first use, stopped with the connection) and returns a reference that servers can call.
  Value serve_local(const Reference& r) PATRO_EXCLUDES(callbacks_mu_);
  /// Stops the callback host, if one runs (patro::stop_callbacks).
  void stop_callbacks() PATRO_EXCLUDES(callbacks_mu_);
  /// Times the connection moved to another broker.
  uint64_t failovers() const noexcept { return failovers_.load(std::memory_order_relaxed); }
  /// The objects its callback host serves now (0: none runs).
  size_t callbacks_served() PATRO_EXCLUDES(callbacks_mu_);
  /// What the request table counted (patro::Client::stats).
  RequestTable::Counts request_counts() PATRO_EXCLUDES(requests_.mutex());

  /// Closes the connection (patro::Client::close): the callback host stops, the requests in
  /// flight fail with Errc::disconnected (their futures complete so), the broker is told, and every
  /// later call fails with Errc::disconnected at once. Unsent oneway calls are dropped. Closing
  /// again does nothing. Refused (Errc::invalid_argument) on a callback host's thread, where
  /// stopping the host would wait for itself.
  void close() PATRO_EXCLUDES(callbacks_mu_, loop_.turn(), out_mu_, requests_.mutex());
  bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

  /// Log forwarding (patro::Client::forward_logs): from now on, the servers this connection
  /// talks to send it their log lines at or above level of the components selections selects
  /// (a LOG_SUBSCRIBE to each it has talked to now, and to each new one before its first
  /// request); nullopt: they stop. Throws Error(invalid_argument) for bad selections.
  void forward_logs(std::optional<LogLevel> level, const std::string& selections)
      PATRO_EXCLUDES(loop_.turn(), out_mu_);
  /// Forwarded log lines received so far.
  uint64_t log_lines() const noexcept { return log_lines_.load(std::memory_order_relaxed); }
  uint64_t bundles_sent() const noexcept { return bundles_sent_.load(std::memory_order_relaxed); }
  uint64_t bundles_received() const noexcept {
    return bundles_received_.load(std::memory_order_relaxed);
  }

  /// The process patro::spawn started to serve this connection's objects (null: none). Set once,
  /// before the connection is shared; it is stopped when the connection goes, after the
  /// connection closed its sockets (child_ is the first member, so the last destroyed).
  void set_child(std::shared_ptr<ChildProcess> child) { child_ = std::move(child); }
  const std::shared_ptr<ChildProcess>& child() const noexcept { return child_; }

 private:
  /// Registers a slot for request_id (the caller fills the frames).
  /// frames: the request as it goes out, kept to resend it (none: not resent).
  SlotPtr new_slot(uint64_t request_id, uint64_t server, wire::Op op, Clock::time_point started,
                   Clock::time_point deadline, const Multipart* frames, bool control,
                   uint32_t oneway_calls = 0) PATRO_EXCLUDES(requests_.mutex());
  /// The wire trace: logs a request (or a batch and its calls) as it goes out.
  void trace_sent(const Multipart& frames, const Slot& slot, bool direct, uint32_t attempt);
  /// serve_local, as local_copies takes it.
  LocalServer local_server() const;
  /// Encodes a Request into fb (not finished). Each reference to an object of the callback host
  /// in it is a pass, counted there.
  flatbuffers::Offset<wire::Request> encode_request(
      flatbuffers::FlatBufferBuilder& fb, uint64_t rid, const ObjectId& id, wire::Op op,
      const Path& path, const ValueArray& args, std::string_view name, wire::CallContext context,
      std::chrono::milliseconds timeout, uint64_t fence, uint64_t pipeline_of = 0);
  /// CallbackHost::count_pass on the callback host, if one runs.
  uint64_t count_pass(const ObjectId& id) PATRO_EXCLUDES(callbacks_mu_);
  /// Throws Error(disconnected) once the connection was closed.
  void check_open() const;
  /// Waits, driving the socket, until done() (called under requests_.mutex()) or until.
  template <class Done>
  bool drive(Done done, Clock::time_point until) PATRO_EXCLUDES(loop_.turn(), requests_.mutex());
  /// Waits for room for one more request in flight.
  void wait_for_room(Clock::time_point until);
  /// Queues frames behind everything queued before (the open batch first) and sends them.
  void submit(Multipart frames, SlotPtr slot) PATRO_EXCLUDES(loop_.turn(), out_mu_);
  /// Moves the open batch to the outbox.
  void seal_batch() PATRO_REQUIRES(out_mu_);
  /// Puts a sealed batch in the outbox, with its slot (its reply acknowledges its calls).
  void queue_batch(OnewayBatcher::Sealed batch) PATRO_REQUIRES(out_mu_);
  /// Sends what is in the outbox, now if the socket is free, otherwise by its holder.
  void kick() PATRO_EXCLUDES(loop_.turn(), out_mu_);

 public:
  /// patro::Bundle: calls wait in the outbox from cork() until the matching uncork(), which
  /// sends them (nested: the last one).
  void cork() noexcept { corked_.fetch_add(1, std::memory_order_relaxed); }
  void uncork() PATRO_EXCLUDES(loop_.turn(), out_mu_);
  /// Sends what is in the outbox, corked or not (patro::Bundle::send).
  void send_queued() PATRO_EXCLUDES(loop_.turn(), out_mu_);

 private:
  void release_io() PATRO_RELEASE(loop_.turn());
  /// Reads what the broker sent while nothing was in flight, before a new request goes out: a
  /// SERVER_DOWN still queued (the heartbeat thread reads every half interval) must not fail a
  /// request sent after its server came back under the same id (a restart with a fixed
  /// server_id). Skipped while another thread holds the socket (it reads).
  void read_queued() PATRO_EXCLUDES(loop_.turn(), out_mu_, requests_.mutex());
  /// Socket work by whoever holds loop_.turn(): flush the outbox, heartbeat, poll until done()
  /// (called under requests_.mutex()), someone wants the socket, or until. read_first: read before
  /// the first poll (a single pass, until now, reads only then).
  template <class Done>
  void pump(Done done, Clock::time_point until, bool read_first) PATRO_REQUIRES(loop_.turn());
  void flush() PATRO_REQUIRES(loop_.turn());
  /// Sends one message: straight to its server when its route allows (routes_ decides), else to
  /// the broker; route=direct: held for the direct connection, or failed when it is dead.
  /// may_bundle (flush): a request that goes straight to a server that reads bundles waits in
  /// bundling_ for the ones after it to that server, and leaves with them (send_bundled).
  void send_out(Outgoing& o, bool may_bundle = false) PATRO_REQUIRES(loop_.turn());
  /// Sends the requests waiting in bundling_: one bundle (one message) for more than one.
  void send_bundled() PATRO_REQUIRES(loop_.turn());
  /// Packs a direct request as the server's direct ROUTERs read it: version 1 frames, version 2
  /// [envelope][body], or (version 3) an envelope that says we read bundled replies.
  void pack_direct(Outgoing& o) PATRO_REQUIRES(loop_.turn());
  /// Sends a CANCEL the way its request went (held behind it while that is held).
  void send_cancel(Outgoing& o) PATRO_REQUIRES(loop_.turn());
  /// Queues a CANCEL for the slot's request (none for a control request or a oneway batch).
  void queue_cancel(const SlotPtr& slot) PATRO_EXCLUDES(loop_.turn(), out_mu_);
  /// Whether a request to server sent through the broker is still in flight (a direct one must
  /// not overtake it).
  bool brokered_in_flight(uint64_t server) PATRO_EXCLUDES(requests_.mutex());
  // Whether a direct socket that refused a message did so for want of a connection.
  bool direct_closed(uint64_t server) PATRO_EXCLUDES(requests_.mutex());
  // Sends a request directly; false if the socket has no connection (nothing left).
  bool send_direct(zmq::socket_t& sock, Outgoing& o) PATRO_REQUIRES(loop_.turn());
  // Sends m on server's direct socket, waiting for room in a full queue; false, m kept, if the
  // socket has no connection.
  bool send_or_wait(zmq::socket_t& sock, uint64_t server, Multipart& m, const char* what)
      PATRO_REQUIRES(loop_.turn());
  // Sends frames to the broker, a REQUEST in the wire version the broker reads.
  void send_to_broker(Multipart& m, const char* what) PATRO_REQUIRES(loop_.turn());
  void on_locate_reply(Multipart& msg) PATRO_REQUIRES(loop_.turn());
  /// A LOG_LINE: to on_log, or into this process's log.
  void on_log_line(const Multipart& msg) PATRO_REQUIRES(loop_.turn());
  /// Sends server a LOG_SUBSCRIBE (or, with no level, its end): by direct if given, else
  /// through the broker.
  void send_log_subscribe(uint64_t server, zmq::socket_t* direct) PATRO_REQUIRES(loop_.turn());
  /// Puts a forward_logs change in force (its turn in the outbox).
  void change_log_forwarding(const Outgoing& o) PATRO_REQUIRES(loop_.turn());
  /// A probing route's socket with no connection yet: disconnect and connect again (see
  /// DirectRoutes::reconnect_due).
  void reconnect_direct(uint64_t server, zmq::socket_t& sock) PATRO_REQUIRES(loop_.turn());
  /// A message from a server's direct socket.
  void dispatch_direct(uint64_t server, Multipart& msg) PATRO_REQUIRES(loop_.turn());
  /// Heartbeats and silence checks of the direct connections; returns the next time to look.
  Clock::time_point tend_routes(Clock::time_point now) PATRO_REQUIRES(loop_.turn());
  /// The direct connection to server failed: requests in flight on it go through the broker
  /// (route=auto) or fail (route=direct); it is tried again after a backoff.
  void route_failed(uint64_t server, const std::string& why) PATRO_REQUIRES(loop_.turn());
  /// Completes the slots with the error (route=direct and no direct connection).
  void fail_slots(const std::vector<SlotPtr>& slots, const std::string& why)
      PATRO_EXCLUDES(requests_.mutex());
  /// A message from the broker, or (direct) from a server's direct socket.
  void dispatch(Multipart& msg, bool direct = false) PATRO_REQUIRES(loop_.turn());
  /// The reply to request_id came (direct: from a server's direct socket): its slot is answered.
  void answer(uint64_t request_id, zmq::message_t body, bool direct) PATRO_REQUIRES(loop_.turn());
  /// An inline REPLY envelope as a server sends it to a client (no routing), read where it lies
  /// and answered; false, nothing done, for anything else (dispatch reads it as frames).
  bool answer_inline(std::string_view envelope, bool direct) PATRO_REQUIRES(loop_.turn());
  /// Fails the requests in flight (to server, if given): RequestTable::fail_pending.
  void fail_pending(Errc code, const std::string& text, std::optional<uint64_t> server,
                    const std::vector<uint64_t>* only = nullptr) PATRO_EXCLUDES(requests_.mutex());
  /// The broker's timing now, for the request table's retry decisions.
  RetryTiming retry_timing() const noexcept;
  /// The broker restarted or came back: every request in flight may have been lost; resend all.
  void resend_all(const char* why) PATRO_REQUIRES(loop_.turn());
  /// Resends the requests whose backoff ran out.
  void resend_due(Clock::time_point now) PATRO_REQUIRES(loop_.turn());
  /// Flushes the outbox (what was queued before goes first), then sends the slots again.
  void resend(const std::vector<SlotPtr>& slots) PATRO_REQUIRES(loop_.turn());
  /// Sends the slots again through the broker, in the given order, with the same request ids.
  void send_again(const std::vector<SlotPtr>& slots) PATRO_REQUIRES(loop_.turn());
  /// A broker instance in a heartbeat or welcome; a new one means a restart.
  void broker_instance(uint64_t instance) PATRO_REQUIRES(loop_.turn());
  /// Several brokers: moves to the next one in the list (see above), or to brokers_[*to].
  void switch_broker(const std::string& why, std::optional<size_t> to = std::nullopt)
      PATRO_REQUIRES(loop_.turn());
  /// A LOCATE for each server the broker has seen us ask for, and for those with a direct route
  /// (not seen): after a restart (alive) or a move (locate_again).
  void locate_known(const std::vector<uint64_t>& routed) PATRO_REQUIRES(loop_.turn());
  void expire_slots(Clock::time_point now) PATRO_EXCLUDES(loop_.turn(), out_mu_, requests_.mutex());
  void run_callbacks() PATRO_EXCLUDES(requests_.mutex());
  /// Runs the callbacks of answered slots, or (event_loop) posts them to completions_.
  void deliver(const std::vector<SlotPtr>& ready) PATRO_EXCLUDES(requests_.mutex());
  /// completions_, or Error(invalid_argument) saying that what needs event_loop.
  Completions& completions(const char* what) const;
  void heartbeat_main(const std::atomic<bool>& gone);

  std::shared_ptr<ChildProcess> child_;
  const std::vector<std::string> brokers_;
  const ClientOptions options_;
  CurveOptions curve_;  // options_.curve, resolved (environment, a fresh pair)
  const uint64_t client_id_;
  Mutex callbacks_mu_;
  std::unique_ptr<CallbackHost> callbacks_ PATRO_GUARDED_BY(callbacks_mu_);
  // callbacks_'s server id (0: none runs), read without the lock when encoding references.
  std::atomic<uint64_t> callback_server_{0};
  std::atomic<bool> closed_{false};  // close() was called
  std::atomic<uint64_t> failovers_{0};
  std::atomic<uint64_t> next_request_id_{1};
  std::atomic<uint64_t> retries_{0};
  // The earliest deadline of a slot in flight once one was made earlier (expire_after), for the
  // heartbeat thread's next look (its steady_clock count; max: none sooner than usual).
  std::atomic<Clock::rep> expire_at_{std::numeric_limits<Clock::rep>::max()};
  Route route_ = Route::automatic;  // options_.route, resolved (CURVE: broker)
  LinkTiming timing_{options_.heartbeat};
  // continuations = event_loop: the continuations waiting for the program's loop (else null).
  std::unique_ptr<Completions> completions_;

  // The references dropped, to release (before the table: its slots release into it too).
  const std::shared_ptr<ReleaseQueue> releases_ = std::make_shared<ReleaseQueue>();
  // The requests in flight. Its mutex, last in the lock order, also guards what waiters of the
  // table look at with it: the io loop's generation and the heartbeat thread's wake-ups.
  RequestTable requests_;

  zmq::context_t ctx_{1};  // before the sockets below: they close first
  IoLoop loop_{requests_.mutex()};
  BrokerLink link_ PATRO_GUARDED_BY(loop_.turn());
  // The direct path: each server's route (its state and timers), and the sockets of the routes
  // that have one (probing or live). route=direct is never resolved away (CURVE refuses it), so
  // options_.route says what the table needs.
  DirectRoutes routes_ PATRO_GUARDED_BY(loop_.turn()){options_.route};
  std::unordered_map<uint64_t, zmq::socket_t> direct_socks_ PATRO_GUARDED_BY(loop_.turn());
  // The wire version each server's direct ROUTERs read, where above 1 (its LocateReply said so).
  std::unordered_map<uint64_t, uint8_t> direct_versions_ PATRO_GUARDED_BY(loop_.turn());
  // Direct requests to one server packed in one flush, to leave together (send_bundled).
  struct Bundling {
    uint64_t server = 0;
    std::vector<Outgoing> items;
    size_t bytes = 0;
    std::vector<Outgoing> sending;  // send_bundled's, reused
  };
  Bundling bundling_ PATRO_GUARDED_BY(loop_.turn());
  // dispatch_direct's envelopes of a bundle (kept for its room).
  std::vector<std::string_view> bundled_ PATRO_GUARDED_BY(loop_.turn());
  // Open patro::Bundle scopes: while any is, a call waits in the outbox instead of leaving (kick),
  // until the last one ends or a caller waits.
  std::atomic<int> corked_{0};
  std::vector<zmq::pollitem_t> poll_items_ PATRO_GUARDED_BY(loop_.turn());
  std::vector<uint64_t> poll_servers_ PATRO_GUARDED_BY(loop_.turn());
  // Log forwarding: the level and selections asked for (none: off), and the servers sent a
  // LOG_SUBSCRIBE (again after a server restarts, its direct route fails, or we move brokers).
  std::optional<LogLevel> log_level_ PATRO_GUARDED_BY(loop_.turn());
  std::string log_selections_ PATRO_GUARDED_BY(loop_.turn());
  std::unordered_set<uint64_t> log_subscribed_ PATRO_GUARDED_BY(loop_.turn());
  // Servers told of a change (forward_logs) and told again before their next request.
  std::unordered_set<uint64_t> log_pending_ PATRO_GUARDED_BY(loop_.turn());
  std::atomic<uint64_t> log_lines_{0};
  std::atomic<uint64_t> bundles_sent_{0}, bundles_received_{0};  // ClientStats
  // Requests made since pump last polled the sockets: drive reads before polling only while more
  // are in flight (an answer to one made before that poll may be queued).
  std::atomic<size_t> made_since_poll_{0};

  Mutex out_mu_;
  std::deque<Outgoing> outbox_ PATRO_GUARDED_BY(out_mu_);
  // The open batch of oneway calls (sealed batches go to the outbox, in the order they were made).
  OnewayBatcher batcher_ PATRO_GUARDED_BY(out_mu_){
      {options_.oneway_batch, options_.oneway_batch_bytes, options_.oneway_delay},
      next_request_id_};

  bool stopping_ PATRO_GUARDED_BY(requests_.mutex()) = false;
  bool kicked_ PATRO_GUARDED_BY(requests_.mutex()) = false;  // the heartbeat thread has work
  CondVar heartbeat_cv_;  // with requests_.mutex(): wakes the heartbeat thread early
  // Set when the connection dies in the heartbeat thread itself (see the destructor).
  std::shared_ptr<std::atomic<bool>> heartbeat_gone_ = std::make_shared<std::atomic<bool>>(false);

  struct Batched {
    bool sealed = false;  // a batch was sealed: kick() sends it
    bool opened = false;  // a batch was opened: the heartbeat thread sends it after oneway_delay
  };
  /// Adds one oneway call to the open batch (opening or sealing batches as needed).
  Batched append_oneway(const ObjectId& id, wire::Op op, const Path& path, const ValueArray& args,
                        std::string_view name, uint64_t fence) PATRO_REQUIRES(out_mu_);
  static constexpr size_t kReleaseEarly = 256;  // queued releases that a new request sends first
  std::atomic<uint64_t> released_{0};
  /// Puts the dropped references into oneway batches (the heartbeat thread).
  void send_releases() PATRO_EXCLUDES(out_mu_);
  std::thread heartbeat_;
};

}  // namespace patro::detail
