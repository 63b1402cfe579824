// A reliable job queue (what Redis users build with BLMOVE, and SQS gives): a taken job is leased
// to its taker until acknowledged; a job not acknowledged within the visibility timeout, or whose
// taker's connection died, is delivered again. A detached lease (take_leased(…, detached=true),
// what `patro take` uses) does not end with its taker's connection, only with its own timeout, so
// that another process may acknowledge it. A blocking take waits on the server without a
// thread (patro::Deferred) and without polling. With a write-ahead log, jobs and leases survive a
// restart, and a push or ack is acknowledged only once it is on disk.
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

  /// wal_path empty: in memory only.
  JobQueue(std::string name, std::chrono::milliseconds visibility, const std::string& wal_path,
           WalOptions wal_options = {});
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  /// Registers the class's methods with patro (once per process).
  static void register_class();

  void push(const Value& job, Deferred reply);
  void push_many(const ValueArray& jobs, Deferred reply);
  /// [id, job, delivery], or null once timeout_ms passes with nothing to take.
  void take(int64_t timeout_ms, Deferred reply);
  /// Up to n of [id, job, delivery]; waits up to timeout_ms for the first.
  void take_many(int64_t n, int64_t timeout_ms, Deferred reply);
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
  void ack_many(const ValueArray& pairs, Deferred reply);
  bool nack(int64_t id, int64_t delivery);
  int64_t size();
  int64_t leased();
  Value peek();
  /// The connection is gone: its leased jobs go back to the queue, in their places, its takes end.
  void client_gone(uint64_t client);

  const std::string& name() const noexcept { return name_; }

 private:
  struct Lease {
    int64_t delivery;
    uint64_t client;  // 0: held by no connection (detached, or from before a restart)
    Clock::time_point deadline;
    int64_t consumer;  // the consumer it was pushed to (0: a take)
  };
  /// How a take leases what it gets.
  struct Terms {
    std::chrono::milliseconds lease;
    bool detached = false;
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

  void take_with(int64_t n, int64_t timeout_ms, Terms terms, Deferred reply);
  void lease_ended(const Lease& lease);  // requires mu_
  void send_pushes(std::deque<Push> pushes);
  void drop_consumer(int64_t token, const std::string& why);
  Value lease_one(int64_t id, uint64_t client, const Terms& terms);  // requires mu_
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
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t next_id_ = 1;
  int64_t next_delivery_ = 1;
  std::unordered_map<int64_t, Value> jobs_;
  std::set<int64_t> ready_;  // by id: first pushed, first taken (also when delivered again)
  std::unordered_map<int64_t, Lease> leases_;
  std::multimap<Clock::time_point, int64_t> lease_deadlines_;
  std::deque<Taker> takers_;
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
