// A reliable job queue (what Redis users build with BLMOVE, and SQS gives): a taken job is leased
// to its taker until acknowledged; a job not acknowledged within its time-to-run (the visibility
// timeout unless the push gave one), or whose taker's connection died, is delivered again.
// Jobs are taken by priority (lower first), first pushed first within a priority, also when
// delivered again; a push may delay its job. With max_deliveries, a job delivered that many times
// without an ack is buried (a dead letter): kept aside until kicked back. A detached lease
// (take_leased(…, detached=true), what `patro take` uses) does not end with its taker's connection,
// only with its own timeout, so that another process may acknowledge it. A blocking take waits on
// the server without a thread (patro::Deferred) and without polling. With a write-ahead log, jobs
// and leases survive a restart, and a push or ack is acknowledged only once it is on disk.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <patro/patro.hpp>

#include "push.hpp"
#include "wal.hpp"

namespace patro::worker {

class JobQueue {
 public:
  using Clock = std::chrono::steady_clock;
  /// How long a push's deduplication key is remembered (SQS's five minutes).
  static constexpr int64_t kDedupWindowMs = 5 * 60 * 1000;

  /// wal_path empty: in memory only. max_deliveries 0: never bury.
  JobQueue(std::string name, std::chrono::milliseconds visibility, const std::string& wal_path,
           WalOptions wal_options = {}, int64_t max_deliveries = 0);
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  /// Registers the class's methods with patro (once per process).
  static void register_class();

  /// options: null, or a hash of priority (lower first, default 0), delay_ms (ready after that),
  /// ttr_ms (its lease's length; default the visibility timeout) and dedup (a string: a push
  /// with the key of one in the last kDedupWindow answers that one's id and adds nothing; not
  /// for push_many). Answers the id.
  void push(const Value& job, const Value& options, Deferred reply);
  void push_many(const ValueArray& jobs, const Value& options, Deferred reply);
  /// [id, job, delivery], or null once timeout_ms passes with nothing to take.
  void take(int64_t timeout_ms, Deferred reply);
  /// Up to n of [id, job, delivery]; waits up to timeout_ms for the first.
  void take_many(int64_t n, int64_t timeout_ms, Deferred reply);
  /// take_many's jobs in one flat array, [id, job, delivery, id, job, delivery, …] (a batch
  /// without an array per job: cheaper to build, send and read on both sides).
  void take_flat(int64_t n, int64_t timeout_ms, Deferred reply);
  /// take() with a lease of lease_ms (<= 0: the visibility timeout); a detached lease survives its
  /// taker's connection and ends only by ack, nack or its timeout.
  void take_leased(int64_t timeout_ms, int64_t lease_ms, bool detached, Deferred reply);
  /// Server push (AMQP's basic.consume): jobs are leased to the caller's connection and sent to
  /// callback, a client's patro::Code called as callback([id, job, delivery]), as they come, at
  /// most prefetch (1..10000) unacknowledged at a time. Answers the consumer's token. It ends by
  /// cancel(token), with the caller's connection, or at a push that fails (its client is gone).
  void consume(const Value& callback, int64_t prefetch, Deferred reply);
  /// Ends a consumer; its jobs stay leased until acknowledged or their timeout. False if unknown.
  bool cancel(int64_t token);
  int64_t consumers();
  /// True if the delivery was the current lease of the job (so it is acknowledged exactly once).
  void ack(int64_t id, int64_t delivery, Deferred reply);
  /// pairs: [[id, delivery], …], or flat, [id, delivery, id, delivery, …] (as take_flat's ids
  /// and deliveries). Answers one bool per job, as ack.
  void ack_many(const ValueArray& pairs, Deferred reply);
  /// ack(id, delivery), then take(timeout_ms), in one call: answers the next job as take does.
  /// With a log, it is answered once the ack is on disk. A refused ack (the delivery no longer
  /// held the lease) changes nothing and does not stop the take; ack answers whether it was.
  void ack_take(int64_t id, int64_t delivery, int64_t timeout_ms, Deferred reply);
  bool nack(int64_t id, int64_t delivery);
  /// Restarts the lease's timer at its full length (beanstalkd's touch). Answers false if the
  /// delivery is not the job's current lease, true once the change is on disk (as each below).
  void touch(int64_t id, int64_t delivery, Deferred reply);
  /// Sets a leased job aside (a dead letter) until kicked. Answers as touch.
  void bury(int64_t id, int64_t delivery, Deferred reply);
  /// Up to n buried jobs as [id, job], oldest first, left buried.
  Value buried(int64_t n);
  /// Up to n buried jobs back to ready, oldest first, each with max_deliveries tries again.
  /// Answers how many.
  void kick(int64_t n, Deferred reply);
  /// {ready, delayed, leased, buried, oldest_ready_ms, pushed, acknowledged}.
  Value stats();
  int64_t size();
  int64_t leased();
  Value peek();
  /// The connection is gone: its leased jobs go back to the queue, in their places, its takes end.
  void client_gone(uint64_t client);

  const std::string& name() const noexcept { return name_; }

 private:
  struct Job {
    Value body;
    int64_t priority = 0;
    std::chrono::milliseconds ttr{0};  // 0: the visibility timeout
    int64_t deliveries = 0;            // leases since its push (or its kick)
    Clock::time_point pushed;          // (or when replayed): for the oldest ready age
    Clock::time_point ready_at;        // while delayed: its key in delayed_
  };
  struct Options {
    int64_t priority = 0;
    std::chrono::milliseconds delay{0}, ttr{0};
    std::string dedup;  // empty: none
  };
  struct Lease {
    int64_t delivery;
    uint64_t client;  // 0: held by no connection (detached, or from before a restart)
    Clock::time_point deadline;
    int64_t consumer;  // the consumer it was pushed to (0: a take)
    std::chrono::milliseconds length;
  };
  /// How a take leases what it gets.
  struct Terms {
    std::chrono::milliseconds lease;  // 0: the job's time-to-run
    bool detached = false;
    bool flat = false;  // a list answered as take_flat's
  };
  struct Taker {
    Deferred reply;
    int64_t max;  // 0: take (one, not a list); n: take_many
    Clock::time_point deadline;
    Terms terms;
  };

  struct Consumer {
    int64_t token;
    uint64_t client;
    Proxy callback;
    int64_t prefetch;
    int64_t leased = 0;  // pushed and not yet acknowledged, nacked or timed out
  };
  struct Push {
    int64_t token;
    Proxy callback;
    Value item;
  };

  static Options options_of(const Value& options, const char* method);
  Value push_record(int64_t id, const Job& job, int64_t ready_at_wall) const;
  int64_t add_job(const Value& body, const Options& o);  // requires mu_; the id, queued
  void unready(int64_t id);  // requires mu_: out of ready, delayed and buried
  void take_with(int64_t n, int64_t timeout_ms, Terms terms, Deferred reply);
  void take_locked(int64_t n, int64_t timeout_ms, Terms terms,
                   const Deferred& reply);    // requires mu_
  bool settle(int64_t id, int64_t delivery);  // requires mu_: acks, if the lease is delivery's
  void lease_ended(const Lease& lease);       // requires mu_
  void send_pushes(std::deque<Push> pushes);
  void drop_consumer(int64_t token, const std::string& why);
  // Leases job id (out of ready_ already); answers the delivery.
  int64_t lease_one(int64_t id, uint64_t client, const Terms& terms,
                    Clock::time_point now);      // requires mu_
  Value job_item(int64_t id, int64_t delivery);  // requires mu_: [id, job, delivery]
  // Leases the first ready job onto out: [id, job, delivery] as one element, or its three
  // flat (terms.flat).
  void lease_next(ValueArray& out, uint64_t client, const Terms& terms,
                  Clock::time_point now);  // requires mu_
  // Leases up to max(n, 1) ready jobs: n 0, the one (or null); else the list, as terms say.
  Value take_ready(int64_t n, uint64_t client, const Terms& terms);  // requires mu_
  void feed_takers();                                                // requires mu_
  void requeue(int64_t id);                                          // requires mu_
  void timer_main();
  void log(const Value& record, std::function<void()> done = {});  // requires mu_
  void log(const Value& record, std::string bytes,
           std::function<void()> done = {});  // bytes: encoded
  void replay(std::string_view record);
  std::vector<std::string> snapshot();                  // requires mu_ (or start-up)
  void count_live(const Value& record, int64_t bytes);  // requires mu_ (or start-up)

  const std::string name_;
  const std::chrono::milliseconds visibility_;
  const int64_t max_deliveries_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t next_id_ = 1;
  int64_t next_delivery_ = 1;
  std::unordered_map<int64_t, Job> jobs_;
  // (priority, id): lower priority first, then first pushed (also when delivered again).
  std::set<std::pair<int64_t, int64_t>> ready_;
  std::set<std::pair<Clock::time_point, int64_t>> delayed_;  // until ready
  std::set<int64_t> buried_;
  int64_t pushed_total_ = 0, acked_total_ = 0;
  // Deduplication keys (SQS FIFO's): key -> [id, wall-clock ms of its push], for kDedupWindow;
  // dedup_order_ in push order, which is expiry order.
  std::unordered_map<std::string, std::pair<int64_t, int64_t>> dedup_;
  std::deque<std::pair<int64_t, std::string>> dedup_order_;
  void remember_key(const std::string& key, int64_t id, int64_t wall);  // requires mu_
  void forget_old_keys();                                               // requires mu_
  std::unordered_map<int64_t, Lease> leases_;
  // Each lease's deadline (a touched lease's old one stays, and is skipped when it comes up).
  // Most come in order (now + the same length) and go at the end of deadlines_in_order_; one
  // before its end (a shorter lease after a longer one, a replayed one) goes in lease_deadlines_.
  std::deque<std::pair<Clock::time_point, int64_t>> deadlines_in_order_;
  std::multimap<Clock::time_point, int64_t> lease_deadlines_;
  void add_deadline(Clock::time_point when, int64_t id);  // requires mu_
  // The soonest of both, and its removal.
  std::optional<std::pair<Clock::time_point, int64_t>> first_deadline() const;  // requires mu_
  void pop_deadline();                                                          // requires mu_
  std::deque<Taker> takers_;
  // When the timer thread wakes next (max: when told); a lease due before it wakes it.
  Clock::time_point timer_wake_ = Clock::time_point::min();
  std::vector<Consumer> consumers_;
  size_t next_consumer_ = 0;  // whose turn it is
  int64_t next_token_ = 1;
  std::deque<Push> pushes_;  // sent by the timer thread, outside mu_
  std::shared_ptr<PushGuard<JobQueue>> alive_ = std::make_shared<PushGuard<JobQueue>>(this);
  bool stopping_ = false;
  std::unordered_map<int64_t, int64_t> push_bytes_;  // each job's push record, for compaction
  int64_t live_bytes_ = 0;                           // their sum
  std::unique_ptr<Wal> wal_;
  std::thread timer_;
};

}  // namespace patro::worker
