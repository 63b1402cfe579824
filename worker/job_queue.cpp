#include "job_queue.hpp"

#include <algorithm>

namespace patro::worker {

namespace {
// The longest lease a take may ask for: a week.
constexpr int64_t kMaxLeaseMs = 7LL * 24 * 3600 * 1000;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

JobQueue::JobQueue(std::string name, std::chrono::milliseconds visibility,
                   const std::string& wal_path, WalOptions wal_options)
    : name_(std::move(name)), visibility_(visibility) {
  if (!wal_path.empty()) {
    wal_ = std::make_unique<Wal>(
        wal_path, [this](std::string_view r) { replay(r); }, wal_options);
    wal_->rewrite(snapshot());  // compaction at start-up: the log becomes the current state
  }
  timer_ = std::thread([this] { timer_main(); });
}

JobQueue::~JobQueue() {
  alive_->clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  wal_.reset();
}

void JobQueue::replay(std::string_view record) {
  const Value r = decode(record);
  count_live(r, Wal::framed_size(record));
  const std::string op = r[0].as<std::string>();
  const int64_t id = r[1].as<int64_t>();
  next_id_ = std::max(next_id_, id + 1);
  if (op == "push") {
    jobs_[id] = r[2];
    ready_.insert(id);
  } else if (op == "lease") {
    if (!jobs_.count(id)) return;
    ready_.erase(id);
    const int64_t delivery = r[2].as<int64_t>();
    next_delivery_ = std::max(next_delivery_, delivery + 1);
    const auto left =
        std::chrono::milliseconds(std::max<int64_t>(r[3].as<int64_t>() - wall_ms(), 0));
    const auto deadline = Clock::now() + left;
    leases_[id] = Lease{delivery, 0, deadline, 0};  // its taker's connection did not survive
    lease_deadlines_.emplace(deadline, id);
  } else if (op == "ack") {
    jobs_.erase(id);
    leases_.erase(id);
    ready_.erase(id);
  } else if (op == "requeue") {
    if (leases_.erase(id) && jobs_.count(id)) ready_.insert(id);
  }
}

// The current state as log records: the jobs, then the leases among them.
std::vector<std::string> JobQueue::snapshot() {
  std::vector<std::string> records;
  std::vector<int64_t> ids;
  for (const auto& [id, job] : jobs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  const auto now = Clock::now();
  const int64_t wall = wall_ms();
  for (int64_t id : ids) records.push_back(encode(Value::array({"push", id, jobs_[id]})));
  for (const auto& [id, lease] : leases_) {
    const int64_t left =
        std::chrono::duration_cast<std::chrono::milliseconds>(lease.deadline - now).count();
    records.push_back(encode(Value::array({"lease", id, lease.delivery, wall + left})));
  }
  return records;
}

void JobQueue::count_live(const Value& record, int64_t bytes) {
  const std::string op = record[0].as<std::string>();
  const int64_t id = record[1].as<int64_t>();
  if (op == "push") {
    live_bytes_ += bytes - push_bytes_[id];
    push_bytes_[id] = bytes;
  } else if (op == "ack") {
    auto it = push_bytes_.find(id);
    if (it != push_bytes_.end()) {
      live_bytes_ -= it->second;
      push_bytes_.erase(it);
    }
  }
}

void JobQueue::log(const Value& record, std::function<void()> done) {
  log(record, wal_ ? encode(record) : std::string(), std::move(done));
}

void JobQueue::log(const Value& record, std::string bytes, std::function<void()> done) {
  if (wal_) {
    count_live(record, Wal::framed_size(bytes));
    wal_->append(std::move(bytes), std::move(done));
    // Online compaction; the state already holds this record's change. A lease record is
    // about 32 bytes.
    if (wal_->needs_compaction(live_bytes_ + 32 * static_cast<int64_t>(leases_.size())))
      wal_->compact(snapshot());
  } else if (done) {
    done();
  }
}

Value JobQueue::lease_one(int64_t id, uint64_t client, const Terms& terms) {
  const int64_t delivery = next_delivery_++;
  const auto deadline = Clock::now() + terms.lease;
  leases_[id] = Lease{delivery, terms.detached ? 0 : client, deadline, 0};
  lease_deadlines_.emplace(deadline, id);
  // The record is the same for both kinds: after a restart no lease has a connection.
  if (wal_) log(Value::array({"lease", id, delivery, wall_ms() + terms.lease.count()}));
  cv_.notify_all();  // the timer may need to wake earlier
  return Value::array({id, jobs_[id], delivery});
}

void JobQueue::feed_takers() {
  while (!takers_.empty() && !ready_.empty()) {
    Taker t = std::move(takers_.front());
    takers_.pop_front();
    if (t.reply.done()) continue;
    ValueArray got;
    const int64_t n = std::max<int64_t>(t.max, 1);
    while (static_cast<int64_t>(got.size()) < n && !ready_.empty()) {
      const int64_t id = *ready_.begin();
      ready_.erase(ready_.begin());
      got.push_back(lease_one(id, t.reply.client_id(), t.terms));
    }
    t.reply.resolve(t.max == 0 ? got.front() : Value(got));
  }
  // Then the consumers, one job each in turn, while one has room.
  for (size_t idle = 0; !ready_.empty() && idle < consumers_.size();) {
    Consumer& c = consumers_[next_consumer_ % consumers_.size()];
    next_consumer_ = (next_consumer_ + 1) % consumers_.size();
    if (c.leased >= c.prefetch) {
      ++idle;
      continue;
    }
    idle = 0;
    const int64_t id = *ready_.begin();
    ready_.erase(ready_.begin());
    Value item = lease_one(id, c.client, Terms{visibility_, false});
    leases_[id].consumer = c.token;
    ++c.leased;
    pushes_.push_back(Push{c.token, c.callback, std::move(item)});
  }
  if (!pushes_.empty()) cv_.notify_all();
}

void JobQueue::lease_ended(const Lease& lease) {
  if (lease.consumer == 0) return;
  for (Consumer& c : consumers_)
    if (c.token == lease.consumer && c.leased > 0) --c.leased;
}

void JobQueue::consume(const Value& callback, int64_t prefetch, Deferred reply) {
  if (prefetch < 1 || prefetch > 10000)
    throw Error(Errc::invalid_argument,
                "consume: prefetch must be 1 to 10000, not " + std::to_string(prefetch));
  Proxy cb = push_target(callback, "consume", "it is called with [id, job, delivery] for each job");
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t token = next_token_++;
  consumers_.push_back(Consumer{token, reply.client_id(), std::move(cb), prefetch});
  reply.resolve(token);
  feed_takers();
}

bool JobQueue::cancel(int64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto before = consumers_.size();
  std::erase_if(consumers_, [&](const Consumer& c) { return c.token == token; });
  return consumers_.size() != before;
}

int64_t JobQueue::consumers() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(consumers_.size());
}

void JobQueue::drop_consumer(int64_t token, const std::string& why) {
  if (cancel(token))
    write_log(LogLevel::info, "worker",
              "queue " + name_ + ": consumer " + std::to_string(token) +
                  " dropped, a push to it failed: " + why);
}

void JobQueue::send_pushes(std::deque<Push> pushes) {
  for (Push& p : pushes) {
    try {
      // One answered call each: a push that fails (the client is gone) ends its consumer, and
      // its lease runs out and the job is delivered again.
      p.callback.async_call("", std::move(p.item))
          .then([alive = alive_, token = p.token](const Future<Value>& f) {
            try {
              (void)f.get();
            } catch (const std::exception& e) {
              alive->with([&](JobQueue& q) { q.drop_consumer(token, e.what()); });
            }
          });
    } catch (const std::exception& e) {
      drop_consumer(p.token, e.what());
    }
  }
}

void JobQueue::requeue(int64_t id) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  lease_ended(it->second);
  leases_.erase(it);
  ready_.insert(id);  // back in its place by id: redelivery keeps push order
  log(Value::array({"requeue", id}));
}

void JobQueue::push(const Value& job, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t id = next_id_;
  const Value record = Value::array({"push", id, job});
  std::string bytes;
  if (wal_) {
    bytes = encode(record);
    wal_->check_size(bytes.size());  // before the job is queued: a refused push leaves no trace
  }
  ++next_id_;
  jobs_[id] = job;
  ready_.insert(id);
  log(record, std::move(bytes), [reply, id] { reply.resolve(id); });
  feed_takers();
}

void JobQueue::push_many(const ValueArray& jobs, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  // Every record checked before any job is queued: the batch is taken whole or not at all.
  std::vector<std::string> records;
  if (wal_) {
    for (size_t k = 0; k < jobs.size(); ++k) {
      records.push_back(
          encode(Value::array({"push", next_id_ + static_cast<int64_t>(k), jobs[k]})));
      wal_->check_size(records.back().size());
    }
  }
  ValueArray ids;
  for (size_t k = 0; k < jobs.size(); ++k) {
    const Value& job = jobs[k];
    const int64_t id = next_id_++;
    jobs_[id] = job;
    ready_.insert(id);
    ids.push_back(id);
    std::string bytes = wal_ ? std::move(records[k]) : std::string();
    // One acknowledgment, after the last record is on disk (the log keeps order).
    if (k + 1 == jobs.size())
      log(Value::array({"push", id, job}), std::move(bytes),
          [reply, ids] { reply.resolve(Value(ids)); });
    else
      log(Value::array({"push", id, job}), std::move(bytes));
  }
  if (jobs.empty()) reply.resolve(Value(ValueArray{}));
  feed_takers();
}

void JobQueue::take(int64_t timeout_ms, Deferred reply) {
  take_with(0, timeout_ms, Terms{visibility_}, reply);
}

void JobQueue::take_many(int64_t n, int64_t timeout_ms, Deferred reply) {
  take_with(n, timeout_ms, Terms{visibility_}, reply);
}

void JobQueue::take_leased(int64_t timeout_ms, int64_t lease_ms, bool detached, Deferred reply) {
  const auto lease =
      lease_ms > 0 ? std::chrono::milliseconds(std::min(lease_ms, kMaxLeaseMs)) : visibility_;
  take_with(0, timeout_ms, Terms{lease, detached}, reply);
}

void JobQueue::take_with(int64_t n, int64_t timeout_ms, Terms terms, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ready_.empty() || timeout_ms <= 0) {
    ValueArray got;
    const int64_t want = std::max<int64_t>(n, 1);
    while (static_cast<int64_t>(got.size()) < want && !ready_.empty()) {
      const int64_t id = *ready_.begin();
      ready_.erase(ready_.begin());
      got.push_back(lease_one(id, reply.client_id(), terms));
    }
    if (n == 0)
      reply.resolve(got.empty() ? Value() : got.front());
    else
      reply.resolve(Value(got));
    return;
  }
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(std::min<int64_t>(timeout_ms, 24LL * 3600 * 1000));
  takers_.push_back(Taker{reply, n, deadline, terms});
  cv_.notify_all();
}

void JobQueue::ack(int64_t id, int64_t delivery, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.delivery != delivery) {
    reply.resolve(false);  // not leased, or leased again since: someone else owns it now
    return;
  }
  lease_ended(it->second);
  leases_.erase(it);
  jobs_.erase(id);
  log(Value::array({"ack", id}), [reply] { reply.resolve(true); });
  feed_takers();  // a consumer may have room now
}

void JobQueue::ack_many(const ValueArray& pairs, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  ValueArray results;
  for (const Value& p : pairs) {
    const int64_t id = p[0].as<int64_t>();
    const int64_t delivery = p[1].as<int64_t>();
    auto it = leases_.find(id);
    const bool ok = it != leases_.end() && it->second.delivery == delivery;
    results.push_back(ok);
    if (!ok) continue;
    lease_ended(it->second);
    leases_.erase(it);
    jobs_.erase(id);
    log(Value::array({"ack", id}));
  }
  log(Value::array({"ack", int64_t{0}}), [reply, results] { reply.resolve(Value(results)); });
  feed_takers();
}

bool JobQueue::nack(int64_t id, int64_t delivery) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.delivery != delivery) return false;
  requeue(id);
  feed_takers();
  return true;
}

int64_t JobQueue::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(ready_.size());
}

int64_t JobQueue::leased() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(leases_.size());
}

Value JobQueue::peek() {
  std::lock_guard<std::mutex> lock(mu_);
  return ready_.empty() ? Value() : jobs_[*ready_.begin()];
}

void JobQueue::client_gone(uint64_t client) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> ids;
  for (const auto& [id, lease] : leases_)
    if (lease.client == client && client != 0) ids.push_back(id);
  for (int64_t id : ids) requeue(id);
  takers_.erase(std::remove_if(takers_.begin(), takers_.end(),
                               [&](const Taker& t) { return t.reply.client_id() == client; }),
                takers_.end());
  std::erase_if(consumers_, [&](const Consumer& c) { return c.client == client; });
  feed_takers();
}

void JobQueue::timer_main() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (!pushes_.empty()) {
      std::deque<Push> pushes;
      pushes.swap(pushes_);
      lock.unlock();
      send_pushes(std::move(pushes));
      lock.lock();
      continue;
    }
    const auto now = Clock::now();
    // Leases past their visibility timeout: delivered again.
    while (!lease_deadlines_.empty() && lease_deadlines_.begin()->first <= now) {
      const int64_t id = lease_deadlines_.begin()->second;
      const auto when = lease_deadlines_.begin()->first;
      lease_deadlines_.erase(lease_deadlines_.begin());
      auto it = leases_.find(id);
      if (it != leases_.end() && it->second.deadline == when) requeue(id);
    }
    // Takes that waited long enough: answered with nothing.
    auto next = Clock::time_point::max();
    for (auto it = takers_.begin(); it != takers_.end();) {
      if (it->deadline <= now) {
        it->reply.resolve(it->max == 0 ? Value() : Value(ValueArray{}));
        it = takers_.erase(it);
      } else {
        next = std::min(next, it->deadline);
        ++it;
      }
    }
    feed_takers();
    if (!lease_deadlines_.empty()) next = std::min(next, lease_deadlines_.begin()->first);
    if (next == Clock::time_point::max())
      cv_.wait(lock);
    else
      cv_.wait_until(lock, next);
  }
}

void JobQueue::register_class() {
  patro::Class<JobQueue>("Patro::Queue")
      .method("push", [](JobQueue& q, Value job, Deferred d) { q.push(job, d); })
      .method("push_many", [](JobQueue& q, ValueArray jobs, Deferred d) { q.push_many(jobs, d); })
      .method("take", [](JobQueue& q, int64_t timeout_ms, Deferred d) { q.take(timeout_ms, d); })
      .method("take_leased", [](JobQueue& q, int64_t timeout_ms, int64_t lease_ms, bool detached,
                                Deferred d) { q.take_leased(timeout_ms, lease_ms, detached, d); })
      .method("take_many", [](JobQueue& q, int64_t n, int64_t timeout_ms,
                              Deferred d) { q.take_many(std::max<int64_t>(n, 1), timeout_ms, d); })
      .method("ack",
              [](JobQueue& q, int64_t id, int64_t delivery, Deferred d) { q.ack(id, delivery, d); })
      .method("ack_many", [](JobQueue& q, ValueArray pairs, Deferred d) { q.ack_many(pairs, d); })
      .method("consume", [](JobQueue& q, Value callback, int64_t prefetch,
                            Deferred d) { q.consume(callback, prefetch, d); })
      .method("cancel", [](JobQueue& q, int64_t token) { return q.cancel(token); })
      .method("consumers", [](JobQueue& q) { return q.consumers(); })
      .method("nack",
              [](JobQueue& q, int64_t id, int64_t delivery) { return q.nack(id, delivery); })
      .method("size", [](JobQueue& q) { return q.size(); })
      .method("leased", [](JobQueue& q) { return q.leased(); })
      .method("peek", [](JobQueue& q) { return q.peek(); });
}

}  // namespace patro::worker
