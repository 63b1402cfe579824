// A client connection's request table: the requests in flight (one Slot each, by request id),
// their deadlines, and the rules that decide what becomes of a request whose answer is late or
// lost — resend it, after which backoff, or fail it, with which error. It holds no socket and
// reads no clock: the time is passed in, and the decisions come back (the slots to resend, in
// their order); the Connection does the socket work. Any thread may use it; one mutex guards it,
// the last in the connection's lock order (see connection.hpp).
//
// The exactly-once rules (ClientOptions::retry): a request keeps its frames until its answer
// comes, and a copy sent again carries the same request id, so the server's reply cache answers a
// copy that already ran. A request is resent when its answer may have been lost (the broker
// restarted or was silent, a direct connection died: resend_all, lost_direct), and after a
// backoff when the broker had no route for it or its server went away and it is idempotent
// (retry_later). It fails at its deadline (timeout; the broker's no-route answer where no copy
// can have run), when no route appears within twice the broker's window (server_unavailable), or
// when its server went away and it is not idempotent (outcome_unknown).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mutex.hpp"
#include "patro/options.hpp"
#include "reply_refs.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

/// One request in flight, and its answer once it came. Guarded by its table's mutex.
struct Slot {
  using Clock = std::chrono::steady_clock;
  uint64_t request_id = 0;
  uint64_t server = 0;
  wire::Op op = wire::Op::Get;
  Clock::time_point deadline;
  bool done = false;
  uint32_t oneway_calls = 0;  // a batch of oneway calls: the answer is their acknowledgement
  Errc error = Errc::ok;
  std::string error_text;
  zmq::message_t body;
  std::vector<std::function<void()>> callbacks;  // run once done, with no lock held
  // Resending (set before the slot is published, then only read): the request as sent; a
  // control request (to the broker) goes again as it was, a request gets an [attempt] frame.
  Multipart frames;
  bool control = false;
  // Resending state, guarded by the table's mutex.
  uint32_t attempts = 1;
  bool maybe_ran = false;  // a copy was lost on its way: it may have run
  // A copy went directly and its connection died with it (lost_direct): the process that may
  // have run it is most likely gone, and a process that replaces it does not know it.
  bool lost_direct = false;
  Clock::time_point retry_at = Clock::time_point::max();  // a resend waits for this
  Clock::time_point no_route_since = Clock::time_point::max();
  std::chrono::milliseconds backoff{0};
  // Which way its latest copy went (set by the holder of the connection's socket turn).
  bool sent = false;
  bool sent_direct = false;
  // Its deadline was made earlier (Future::expire_after): at it, a CANCEL follows the timeout.
  bool cancel_on_timeout = false;
  // The wire trace (set before the slot is published, then only read): when the request was
  // made, and what it asks ("OP obj=… path=…"; "calls=N" for a batch; empty: not traced).
  Clock::time_point started;
  std::string traced;
  // The references its reply brings (reply_refs.hpp): held once, however often it is read; let go
  // of as the slot ends if it was never read. Null for a reply that brings none (a control
  // request's, a oneway batch's acknowledgement) or a table that releases nothing.
  std::shared_ptr<const ReplyRelease> reply_release;
  Mutex refs_mu;  // a reading of the reply (any thread that reads the Future)
  ReplyHolds result_holds PATRO_GUARDED_BY(refs_mu), changed_holds PATRO_GUARDED_BY(refs_mu);

  Slot() = default;
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() PATRO_NO_TSA;
};
using SlotPtr = std::shared_ptr<Slot>;

/// The broker's timing as the connection knows it now (its Welcome may change it).
struct RetryTiming {
  /// How long the broker may be silent: a request with no route for twice this gives up.
  std::chrono::milliseconds broker_window{0};
  /// The longest backoff between resends (the heartbeat interval).
  std::chrono::milliseconds max_backoff{0};
};

class PATRO_PRIVATE RequestTable {
 public:
  using Clock = std::chrono::steady_clock;

  /// retry: ClientOptions::retry (requests keep their frames to be resent); retry_backoff: the
  /// first backoff; limits: for reading a oneway batch's acknowledgement; reply_release: where the
  /// references of a reply nobody reads go (null: nowhere, they stay held until the client is
  /// gone).
  RequestTable(bool retry, std::chrono::milliseconds retry_backoff, const Limits& limits,
               std::shared_ptr<const ReplyRelease> reply_release = nullptr)
      : retry_(retry),
        retry_backoff_(retry_backoff),
        limits_(limits),
        reply_release_(std::move(reply_release)) {}
  RequestTable(const RequestTable&) = delete;
  RequestTable& operator=(const RequestTable&) = delete;

  /// The table's mutex: held to wait on a condition of the table (the queries below) and by the
  /// waiters' condition variable. Last in the connection's lock order.
  Mutex& mutex() PATRO_TSA(lock_returned(mu_)) { return mu_; }

  /// Registers a slot for request_id. frames: the request as it goes out, kept (sharing the
  /// bodies' buffers) to resend it when retries are on (null: never resent).
  SlotPtr add(uint64_t request_id, uint64_t server, wire::Op op, Clock::time_point started,
              Clock::time_point deadline, const Multipart* frames, bool control,
              uint32_t oneway_calls = 0) PATRO_EXCLUDES(mu_);

  // Queries for waiters, under the mutex.
  size_t in_flight() const PATRO_REQUIRES(mu_) { return slots_.size(); }
  size_t oneway_unacked() const PATRO_REQUIRES(mu_) { return oneway_unacked_; }
  size_t callbacks_waiting() const PATRO_REQUIRES(mu_) { return callbacks_waiting_; }
  /// Whether answered slots wait for take_ready (their callbacks to run).
  bool has_ready() const PATRO_REQUIRES(mu_) { return !ready_.empty(); }
  /// The oneway calls that failed on the server since the last time.
  uint64_t take_oneway_failed() PATRO_REQUIRES(mu_) { return std::exchange(oneway_failed_, 0); }

  /// What the table counted since it was made (patro::Client::stats).
  struct Counts {
    uint64_t requests = 0;        // requests added (a batch of oneway calls is one; control aside)
    uint64_t replies = 0;         // their answers that came, through the broker or directly
    uint64_t direct_replies = 0;  // of which straight from their server (the direct path)
    size_t in_flight = 0;         // slots waiting for their answer now, control ones too
  };
  Counts counts() PATRO_EXCLUDES(mu_);

  /// An answer from the broker (via "broker") or a direct connection ("direct") for request_id:
  /// completes its slot. False: no such slot (late: its caller gave up; the references it brings
  /// are let go of).
  bool answer(uint64_t request_id, zmq::message_t body, Clock::time_point now, const char* via)
      PATRO_EXCLUDES(mu_);
  /// The broker had no route for request_id (body: its error reply): it surely did not run, unless
  /// `ran` (the broker held its reply back: it ran, and a resend gets its answer from the
  /// server's reply cache). It is resent after a backoff (retries on), or answered with body.
  /// One lost with its direct connection (lost_direct) that is not idempotent fails with
  /// outcome_unknown instead: its process is most likely gone, and sent on it would reach a
  /// process that replaces it, whose reply cache does not know it. False: no slot waits for it.
  bool no_route(uint64_t request_id, zmq::message_t body, bool ran, Clock::time_point now,
                const RetryTiming& timing) PATRO_EXCLUDES(mu_);
  /// Completes the slots whose deadline passed (see time_out); whether there were any.
  bool expire(Clock::time_point now) PATRO_EXCLUDES(mu_) { return expire(now, nullptr, nullptr); }
  /// The same, also giving the slots timed out that want a CANCEL (cancel_on_timeout) and the
  /// earliest deadline left (time_point::max() if none).
  bool expire(Clock::time_point now, std::vector<SlotPtr>* cancel, Clock::time_point* next)
      PATRO_EXCLUDES(mu_);
  /// Makes the slot's deadline `deadline` if that is earlier, and has a CANCEL follow its timeout;
  /// whether the slot is still unanswered.
  bool shorten(const SlotPtr& slot, Clock::time_point deadline) PATRO_EXCLUDES(mu_);
  /// The caller cancelled the slot: completes it with Errc::cancelled, if it is not answered yet
  /// (whether it was not). Its answer, if one comes, is then dropped, and it is never resent.
  bool cancel(const SlotPtr& slot, Clock::time_point now) PATRO_EXCLUDES(mu_);
  /// Completes one slot at its deadline, if it is not answered yet.
  /// Whether it timed out now and wants a CANCEL (cancel_on_timeout).
  bool time_out(const SlotPtr& slot, Clock::time_point now) PATRO_EXCLUDES(mu_);
  /// Fails the slots with why (a direct connection that failed): outcome_unknown where a copy may
  /// have run and the op is not idempotent, server_unavailable otherwise.
  void fail(const std::vector<SlotPtr>& slots, const std::string& why, Clock::time_point now)
      PATRO_EXCLUDES(mu_);
  /// Fails every request in flight (to server, if given) with code; a server that went away
  /// (server_unavailable): an idempotent request is resent after a backoff instead, and one that
  /// is not fails with outcome_unknown. only, if given: of server's requests sent through the
  /// broker, just these ids (SERVER_DOWN's list); those sent directly all the same, and so those
  /// lost with a direct connection and resent through the broker (lost_direct).
  void fail_pending(Errc code, const std::string& text, std::optional<uint64_t> server,
                    Clock::time_point now, const RetryTiming& timing,
                    const std::vector<uint64_t>* only = nullptr) PATRO_EXCLUDES(mu_);
  /// A request the broker could not route (its body: that answer), or whose server went away:
  /// schedules a resend after a backoff, or completes it with that answer if it may not wait.
  void retry_later(const SlotPtr& slot, Clock::time_point now, const RetryTiming& timing)
      PATRO_REQUIRES(mu_);

  // The resend decisions: the slots to send again through the broker, in the order they were
  // made (by request id), with their resend timers cleared. Each may have run (maybe_ran).
  /// The broker restarted, came back or was replaced: every resendable request not sent directly.
  std::vector<SlotPtr> take_all_for_resend() PATRO_EXCLUDES(mu_);
  /// The requests whose backoff ran out by now.
  std::vector<SlotPtr> take_due(Clock::time_point now) PATRO_EXCLUDES(mu_);
  /// The earliest resend waiting for its backoff (max: none); read without the lock.
  Clock::time_point next_retry() const noexcept {
    return Clock::time_point(Clock::duration(next_retry_.load()));
  }
  /// The copy about to be sent again: its attempt number.
  uint32_t next_attempt(const SlotPtr& slot) PATRO_EXCLUDES(mu_);

  // The direct path.
  /// Whether a request to server sent through the broker is still in flight.
  bool brokered_in_flight(uint64_t server) PATRO_EXCLUDES(mu_);
  /// How many requests sent directly to server are in flight.
  size_t direct_in_flight(uint64_t server) PATRO_EXCLUDES(mu_);
  /// The direct connection to server died: the requests in flight on it, in their order, marked
  /// as having maybe run, their resend timers cleared.
  std::vector<SlotPtr> lost_direct(uint64_t server) PATRO_EXCLUDES(mu_);

  // Callbacks.
  /// Adds f to run once slot is answered; false (f untouched): it is answered already.
  bool add_callback(const SlotPtr& slot, std::function<void()>& f) PATRO_REQUIRES(mu_);
  /// The answered slots with callbacks to run, each once.
  std::vector<SlotPtr> take_ready() PATRO_REQUIRES(mu_);
  /// Runs the callbacks of slots take_ready gave; the caller holds no lock.
  static void run_callbacks(const std::vector<SlotPtr>& ready);

 private:
  /// Marks a slot answered, drops it, settles a batch's credit, queues its callbacks. via: where
  /// its answer came from, for the wire trace ("local": made here, a timeout or a failure).
  void complete(const SlotPtr& slot, Clock::time_point now, const char* via = "local")
      PATRO_REQUIRES(mu_);
  /// Its caller stopped waiting for the slot (a timeout, a cancel), and its answer may still come.
  void given_up(const Slot& slot) PATRO_REQUIRES(mu_);

  const bool retry_;
  const std::chrono::milliseconds retry_backoff_;
  const Limits limits_;
  Mutex mu_;
  std::unordered_map<uint64_t, SlotPtr> slots_ PATRO_GUARDED_BY(mu_);
  std::vector<SlotPtr> ready_ PATRO_GUARDED_BY(mu_);    // answered, callbacks to run
  size_t callbacks_waiting_ PATRO_GUARDED_BY(mu_) = 0;  // slots with callbacks, unanswered
  size_t oneway_unacked_ PATRO_GUARDED_BY(mu_) = 0;
  uint64_t oneway_failed_ PATRO_GUARDED_BY(mu_) = 0;
  Counts counts_ PATRO_GUARDED_BY(mu_);                      // in_flight aside
  const std::shared_ptr<const ReplyRelease> reply_release_;  // the slots' (see Slot)
  // The requests given up on whose answer may bring references (given_up): such an answer, when
  // it comes late, lets go of them. The newest kGivenUp; older ones are forgotten (what their
  // answers bring stays with the server until the client is gone).
  static constexpr size_t kGivenUp = 1024;
  std::deque<uint64_t> given_up_ PATRO_GUARDED_BY(mu_);  // oldest first
  // The earliest resend waiting for its backoff (ticks of Clock; max: none), read without a lock.
  std::atomic<Clock::rep> next_retry_{std::numeric_limits<Clock::rep>::max()};
};

}  // namespace patro::detail
