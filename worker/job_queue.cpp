#include "job_queue.hpp"

#include <algorithm>
#include <cstdint>

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
                   const std::string& wal_path, WalOptions wal_options, int64_t max_deliveries)
    : name_(std::move(name)), visibility_(visibility), max_deliveries_(max_deliveries) {
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

// The log's records (payloads are encoded Values):
//   ["push", id, job]                  a job, ready, with the default options (as before 0.2)
//   ["push", id, job, {priority, ttr, at, deliveries, buried}]  with what is not the default:
//                                      at is when a delayed job is ready (wall-clock ms)
//   ["lease", id, delivery, deadline]  a lease (deadline in wall-clock ms), one more delivery
//   ["lease", id, delivery, deadline, deliveries, length]  the same, or a touch of it
//   ["requeue", id] ["ack", id] ["bury", id] ["kick", id]
//   ["totals", 0, pushed, acknowledged]  the totals before the records after it
//   ["dedup", id, key, t]              a deduplication key of a push at t (wall-clock ms)
// (a push's options may also hold dedup and t).
// A record an older worker wrote is one of these (the short push and lease forms). An older
// worker reads the new forms' fields it knows and skips totals, bury and kick (its verify calls
// those damage): going back to one keeps the jobs, not their options or burials.
void JobQueue::replay(std::string_view record) {
  const Value r = decode(record);
  count_live(r, Wal::framed_size(record));
  const std::string op = r[0].as<std::string>();
  const int64_t id = r[1].as<int64_t>();
  next_id_ = std::max(next_id_, id + 1);
  if (op == "dedup") {
    remember_key(r[2].as<std::string>(), id, r[3].as<int64_t>());
    return;
  }
  if (op == "totals") {
    pushed_total_ = r[2].as<int64_t>();
    acked_total_ = r[3].as<int64_t>();
    return;
  }
  if (op == "push") {
    unready(id);  // (a log has one push per id; this keeps a second from leaving traces)
    Job& job = jobs_[id];
    job.body = r[2];
    job.pushed = Clock::now();
    ++pushed_total_;
    const ValueHash* o = r.size() > 3 ? r[3].if_hash() : nullptr;
    const auto field = [o](const char* key) -> int64_t {
      if (o == nullptr) return 0;
      auto it = o->find(key);
      return it == o->end() || it->second.is_null() ? 0 : it->second.as<int64_t>();
    };
    if (o != nullptr && o->count("dedup"))
      remember_key(o->at("dedup").as<std::string>(), id, field("t"));
    job.priority = field("priority");
    job.ttr = std::chrono::milliseconds(field("ttr"));
    job.deliveries = field("deliveries");
    const int64_t wait = field("at") - wall_ms();
    if (field("buried") != 0)
      buried_.insert(id);
    else if (wait > 0)
      delayed_.emplace(job.ready_at = Clock::now() + std::chrono::milliseconds(wait), id);
    else
      ready_.emplace(job.priority, id);
    return;
  }
  auto job = jobs_.find(id);
  if (op == "ack") {
    if (job != jobs_.end()) {
      unready(id);
      jobs_.erase(job);
      ++acked_total_;
    }
    leases_.erase(id);
    return;
  }
  if (job == jobs_.end()) return;
  if (op == "lease") {
    unready(id);
    const int64_t delivery = r[2].as<int64_t>();
    next_delivery_ = std::max(next_delivery_, delivery + 1);
    const auto left =
        std::chrono::milliseconds(std::max<int64_t>(r[3].as<int64_t>() - wall_ms(), 0));
    const auto deadline = Clock::now() + left;
    if (r.size() > 5) {
      job->second.deliveries = r[4].as<int64_t>();
    } else {
      ++job->second.deliveries;
    }
    const auto length = r.size() > 5
                            ? std::chrono::milliseconds(r[5].as<int64_t>())
                            : (job->second.ttr.count() > 0 ? job->second.ttr : visibility_);
    // Its taker's connection did not survive.
    leases_[id] = Lease{delivery, 0, deadline, 0, length};
    add_deadline(deadline, id);
  } else if (op == "requeue") {
    if (leases_.erase(id)) ready_.emplace(job->second.priority, id);
  } else if (op == "bury") {
    leases_.erase(id);
    unready(id);
    buried_.insert(id);
  } else if (op == "kick") {
    if (buried_.erase(id)) {
      job->second.deliveries = 0;
      ready_.emplace(job->second.priority, id);
    }
  }
}

// A job's push record: the short form when every option is the default.
Value JobQueue::push_record(int64_t id, const Job& job, int64_t ready_at_wall) const {
  ValueHash o;
  if (job.priority != 0) o["priority"] = job.priority;
  if (job.ttr.count() > 0) o["ttr"] = static_cast<int64_t>(job.ttr.count());
  if (ready_at_wall > 0) o["at"] = ready_at_wall;
  if (job.deliveries > 0) o["deliveries"] = job.deliveries;
  if (buried_.count(id)) o["buried"] = int64_t{1};
  if (o.empty()) return Value::array({"push", id, job.body});
  return Value::array({"push", id, job.body, Value(std::move(o))});
}

// The current state as log records: the totals, the jobs, then the leases among them.
std::vector<std::string> JobQueue::snapshot() {
  std::vector<std::string> records;
  std::vector<int64_t> ids;
  for (const auto& [id, job] : jobs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  const auto now = Clock::now();
  const int64_t wall = wall_ms();
  const auto wall_of = [&](Clock::time_point t) {
    return wall + std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count();
  };
  // Replaying the pushes below counts them again.
  records.push_back(encode(Value::array(
      {"totals", int64_t{0}, pushed_total_ - static_cast<int64_t>(ids.size()), acked_total_})));
  forget_old_keys();
  for (const auto& [t, key] : dedup_order_)
    records.push_back(encode(Value::array({"dedup", dedup_[key].first, key, t})));
  std::unordered_map<int64_t, int64_t> ready_at;
  for (const auto& [when, id] : delayed_) ready_at[id] = std::max<int64_t>(wall_of(when), 1);
  for (int64_t id : ids) {
    auto at = ready_at.find(id);
    records.push_back(encode(push_record(id, jobs_[id], at == ready_at.end() ? 0 : at->second)));
  }
  for (const auto& [id, lease] : leases_) {
    records.push_back(
        encode(Value::array({"lease", id, lease.delivery, wall_of(lease.deadline),
                             jobs_[id].deliveries, static_cast<int64_t>(lease.length.count())})));
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

int64_t JobQueue::lease_one(int64_t id, uint64_t client, const Terms& terms,
                            Clock::time_point now) {
  const int64_t delivery = next_delivery_++;
  Job& job = jobs_[id];
  ++job.deliveries;
  const auto length = terms.lease.count() > 0 ? terms.lease
                      : job.ttr.count() > 0   ? job.ttr
                                              : visibility_;
  const auto deadline = now + length;
  leases_.insert_or_assign(id, Lease{delivery, terms.detached ? 0 : client, deadline, 0, length});
  add_deadline(deadline, id);
  // The record is the same for both kinds: after a restart no lease has a connection.
  if (wal_)
    log(Value::array({"lease", id, delivery, wall_ms() + length.count(), job.deliveries,
                      static_cast<int64_t>(length.count())}));
  if (deadline < timer_wake_) {  // the timer sleeps past it: wake it (once, not for every job)
    timer_wake_ = deadline;
    cv_.notify_all();
  }
  return delivery;
}

Value JobQueue::job_item(int64_t id, int64_t delivery) {
  // Built in place: Value::array's initializer list would copy the body twice.
  ValueArray item;
  item.reserve(3);
  item.emplace_back(id);
  item.push_back(jobs_[id].body);
  item.emplace_back(delivery);
  return Value(std::move(item));
}

void JobQueue::lease_next(ValueArray& out, uint64_t client, const Terms& terms,
                          Clock::time_point now) {
  const int64_t id = ready_.begin()->second;
  ready_.erase(ready_.begin());
  const int64_t delivery = lease_one(id, client, terms, now);
  if (!terms.flat) {
    out.push_back(job_item(id, delivery));
    return;
  }
  out.emplace_back(id);
  out.push_back(jobs_[id].body);
  out.emplace_back(delivery);
}

void JobQueue::add_deadline(Clock::time_point when, int64_t id) {
  if (deadlines_in_order_.empty() || when >= deadlines_in_order_.back().first)
    deadlines_in_order_.emplace_back(when, id);  // the usual case: no allocation, no tree
  else
    lease_deadlines_.emplace(when, id);
}

std::optional<std::pair<JobQueue::Clock::time_point, int64_t>> JobQueue::first_deadline() const {
  const bool in_order = !deadlines_in_order_.empty();
  const bool other = !lease_deadlines_.empty();
  if (in_order && (!other || deadlines_in_order_.front().first <= lease_deadlines_.begin()->first))
    return deadlines_in_order_.front();
  if (other) return *lease_deadlines_.begin();
  return std::nullopt;
}

void JobQueue::pop_deadline() {
  if (!deadlines_in_order_.empty() &&
      (lease_deadlines_.empty() ||
       deadlines_in_order_.front().first <= lease_deadlines_.begin()->first))
    deadlines_in_order_.pop_front();
  else if (!lease_deadlines_.empty())
    lease_deadlines_.erase(lease_deadlines_.begin());
}

Value JobQueue::take_ready(int64_t n, uint64_t client, const Terms& terms) {
  const size_t want = static_cast<size_t>(std::max<int64_t>(n, 1));
  const size_t count = std::min(want, ready_.size());
  ValueArray got;
  got.reserve(terms.flat ? 3 * count : count);
  const auto now = Clock::now();  // one reading for the batch
  for (size_t k = 0; k < count; ++k) lease_next(got, client, terms, now);
  if (n == 0) return got.empty() ? Value() : std::move(got.front());
  return Value(std::move(got));
}

void JobQueue::feed_takers() {
  while (!takers_.empty() && !ready_.empty()) {
    Taker t = std::move(takers_.front());
    takers_.pop_front();
    if (t.reply.done()) continue;
    t.reply.resolve(take_ready(t.max, t.reply.client_id(), t.terms));
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
    const int64_t id = ready_.begin()->second;
    ready_.erase(ready_.begin());
    const int64_t delivery =
        lease_one(id, c.client, Terms{std::chrono::milliseconds(0), false}, Clock::now());
    Value item = job_item(id, delivery);
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
  Job& job = jobs_[id];
  if (max_deliveries_ > 0 && job.deliveries >= max_deliveries_) {
    buried_.insert(id);
    log(Value::array({"bury", id}));
    write_log(LogLevel::info, "worker",
              "queue " + name_ + ": job " + std::to_string(id) + " buried after " +
                  std::to_string(job.deliveries) + " deliveries");
    return;
  }
  ready_.emplace(job.priority, id);  // back in its place by id: redelivery keeps push order
  log(Value::array({"requeue", id}));
}

void JobQueue::remember_key(const std::string& key, int64_t id, int64_t wall) {
  if (wall_ms() - wall >= kDedupWindowMs) return;
  dedup_[key] = {id, wall};
  dedup_order_.emplace_back(wall, key);
}

void JobQueue::forget_old_keys() {
  const int64_t now = wall_ms();
  while (!dedup_order_.empty() && now - dedup_order_.front().first >= kDedupWindowMs) {
    auto it = dedup_.find(dedup_order_.front().second);
    // Only if no later push took the key over.
    if (it != dedup_.end() && it->second.second == dedup_order_.front().first) dedup_.erase(it);
    dedup_order_.pop_front();
  }
}

void JobQueue::unready(int64_t id) {
  auto job = jobs_.find(id);
  if (job == jobs_.end()) return;
  ready_.erase({job->second.priority, id});
  delayed_.erase({job->second.ready_at, id});
  buried_.erase(id);
}

JobQueue::Options JobQueue::options_of(const Value& options, const char* method) {
  Options o;
  if (options.is_null()) return o;
  const ValueHash* h = options.if_hash();
  const std::string m = method;
  if (h == nullptr)
    throw Error(Errc::invalid_argument,
                m + ": options must be a hash of priority, delay_ms and ttr_ms, not " +
                    options.to_string());
  for (const auto& [key, v] : *h) {
    if (key == "dedup") {
      const std::string* k = v.if_string();
      if (k == nullptr || k->empty() || k->size() > 1024)
        throw Error(Errc::invalid_argument,
                    m + ": dedup must be a string of 1 to 1024 bytes, not " + v.to_string());
      o.dedup = *k;
      continue;
    }
    const int64_t* n = v.if_int();
    if (n == nullptr && !v.is_null())
      throw Error(Errc::invalid_argument,
                  m + ": option " + key + " must be an integer, not " + v.to_string());
    const int64_t x = n ? *n : 0;
    if (key == "priority") {
      o.priority = x;
    } else if (key == "delay_ms") {
      if (x < 0 || x > kMaxLeaseMs * 52)
        throw Error(Errc::invalid_argument,
                    m + ": delay_ms must be 0 to a year in ms, not " + std::to_string(x));
      o.delay = std::chrono::milliseconds(x);
    } else if (key == "ttr_ms") {
      if (x < 0 || x > kMaxLeaseMs)
        throw Error(
            Errc::invalid_argument,
            m + ": ttr_ms must be 0 (the queue's visibility timeout) to a week in ms, not " +
                std::to_string(x));
      o.ttr = std::chrono::milliseconds(x);
    } else {
      throw Error(Errc::invalid_argument,
                  m + ": unknown option " + key + " (priority, delay_ms, ttr_ms, dedup)");
    }
  }
  return o;
}

int64_t JobQueue::add_job(const Value& body, const Options& o) {
  const int64_t id = next_id_++;
  Job& job = jobs_[id];
  job.body = body;
  job.priority = o.priority;
  job.ttr = o.ttr;
  job.pushed = Clock::now();
  ++pushed_total_;
  if (o.delay.count() > 0) {
    delayed_.emplace(job.ready_at = job.pushed + o.delay, id);
    cv_.notify_all();  // the timer may need to wake earlier
  } else {
    ready_.emplace(o.priority, id);
  }
  return id;
}

void JobQueue::push(const Value& body, const Value& options, Deferred reply) {
  const Options o = options_of(options, "push");
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t wall = wall_ms();
  if (!o.dedup.empty()) {
    forget_old_keys();
    auto seen = dedup_.find(o.dedup);
    if (seen != dedup_.end()) {
      // The first push's id, once its record is on disk (the log keeps order).
      const int64_t first = seen->second.first;
      return log(Value::array({"ack", int64_t{0}}), [reply, first] { reply.resolve(first); });
    }
  }
  const int64_t id = next_id_;
  std::string bytes;
  if (wal_) {
    Job job{body, o.priority, o.ttr, 0, {}, {}};
    Value record = push_record(id, job, o.delay.count() > 0 ? wall + o.delay.count() : 0);
    if (!o.dedup.empty()) {
      ValueArray r = *record.if_array();
      ValueHash h = r.size() > 3 ? *r[3].if_hash() : ValueHash{};
      h["dedup"] = o.dedup;
      h["t"] = wall;
      if (r.size() > 3)
        r[3] = Value(std::move(h));
      else
        r.push_back(Value(std::move(h)));
      record = Value(std::move(r));
    }
    bytes = encode(record);
    wal_->check_size(bytes.size());  // before the job is queued: a refused push leaves no trace
  }
  if (!o.dedup.empty()) remember_key(o.dedup, id, wall);
  add_job(body, o);
  log(Value::array({"push", id}), std::move(bytes), [reply, id] { reply.resolve(id); });
  feed_takers();
}

void JobQueue::push_many(const ValueArray& jobs, const Value& options, Deferred reply) {
  const Options o = options_of(options, "push_many");
  if (!o.dedup.empty())
    throw Error(Errc::invalid_argument, "push_many: dedup is one job's key: push each job");
  std::lock_guard<std::mutex> lock(mu_);
  // Every record checked before any job is queued: the batch is taken whole or not at all.
  std::vector<std::string> records;
  if (wal_) {
    const int64_t at = o.delay.count() > 0 ? wall_ms() + o.delay.count() : 0;
    for (size_t k = 0; k < jobs.size(); ++k) {
      Job job{jobs[k], o.priority, o.ttr, 0, {}, {}};
      records.push_back(encode(push_record(next_id_ + static_cast<int64_t>(k), job, at)));
      wal_->check_size(records.back().size());
    }
  }
  ValueArray ids;
  ids.reserve(jobs.size());
  for (size_t k = 0; k < jobs.size(); ++k) {
    const int64_t id = add_job(jobs[k], o);
    ids.push_back(id);
    if (!wal_) continue;  // answered below, with no record built
    std::string bytes = wal_ ? std::move(records[k]) : std::string();
    // One acknowledgment, after the last record is on disk (the log keeps order).
    if (k + 1 == jobs.size())
      log(Value::array({"push", id}), std::move(bytes),
          [reply, ids] { reply.resolve(Value(ids)); });
    else
      log(Value::array({"push", id}), std::move(bytes));
  }
  if (jobs.empty() || !wal_) reply.resolve(Value(std::move(ids)));
  feed_takers();
}

void JobQueue::take(int64_t timeout_ms, Deferred reply) {
  take_with(0, timeout_ms, Terms{std::chrono::milliseconds(0)}, reply);
}

void JobQueue::take_many(int64_t n, int64_t timeout_ms, Deferred reply) {
  take_with(n, timeout_ms, Terms{std::chrono::milliseconds(0)}, reply);
}

void JobQueue::take_flat(int64_t n, int64_t timeout_ms, Deferred reply) {
  take_with(n, timeout_ms, Terms{std::chrono::milliseconds(0), false, true}, reply);
}

void JobQueue::take_leased(int64_t timeout_ms, int64_t lease_ms, bool detached, Deferred reply) {
  // lease_ms <= 0: the job's time-to-run (the visibility timeout unless its push gave one).
  const auto lease = std::chrono::milliseconds(lease_ms > 0 ? std::min(lease_ms, kMaxLeaseMs) : 0);
  take_with(0, timeout_ms, Terms{lease, detached}, reply);
}

void JobQueue::take_with(int64_t n, int64_t timeout_ms, Terms terms, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  take_locked(n, timeout_ms, terms, reply);
}

void JobQueue::take_locked(int64_t n, int64_t timeout_ms, Terms terms, const Deferred& reply) {
  if (!ready_.empty() || timeout_ms <= 0) {
    reply.resolve(take_ready(n, reply.client_id(), terms));
    return;
  }
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(std::min<int64_t>(timeout_ms, 24LL * 3600 * 1000));
  takers_.push_back(Taker{reply, n, deadline, terms});
  cv_.notify_all();
}

bool JobQueue::settle(int64_t id, int64_t delivery) {
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.delivery != delivery) return false;
  lease_ended(it->second);
  leases_.erase(it);
  jobs_.erase(id);
  ++acked_total_;
  return true;
}

void JobQueue::ack_take(int64_t id, int64_t delivery, int64_t timeout_ms, Deferred reply) {
  const Terms terms{std::chrono::milliseconds(0)};
  std::unique_lock<std::mutex> lock(mu_);
  const bool acked = settle(id, delivery);
  if (!acked || !wal_) {
    // Nothing to wait for: the take as take() does it (a refused ack changed nothing).
    take_locked(0, timeout_ms, terms, reply);
    feed_takers();  // a consumer may have room now
    return;
  }
  if (!ready_.empty() || timeout_ms <= 0) {
    // The job leased now, answered once the ack's record is on disk (after the lease's: the
    // log keeps order).
    Value item;
    if (!ready_.empty()) {
      item = take_ready(0, reply.client_id(), terms);
    }
    log(Value::array({"ack", id}), [reply, item = std::move(item)] { reply.resolve(item); });
    feed_takers();
    return;
  }
  // Nothing ready: the take waits only once the ack is on disk, so that no job (pushed while
  // the record is being written) is answered before the ack is durable.
  // TODO(cleanup): a caller whose connection goes while the record is written still becomes a
  // taker then; a job it gets stays leased to the gone connection until its time-to-run.
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  log(Value::array({"ack", id}), [alive = alive_, reply, deadline, terms] {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    alive->with([&](JobQueue& q) {
      std::lock_guard<std::mutex> relock(q.mu_);
      q.take_locked(0, std::max<int64_t>(left, 0), terms, reply);
    });
  });
  feed_takers();
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
  ++acked_total_;
  if (wal_)
    log(Value::array({"ack", id}), [reply] { reply.resolve(true); });
  else
    reply.resolve(true);  // (no record to build: without a log it would be thrown away)
  feed_takers();          // a consumer may have room now
}

void JobQueue::ack_many(const ValueArray& pairs, Deferred reply) {
  // Flat ([id, delivery, id, delivery, …]) when the first element is not a pair.
  const bool flat = !pairs.empty() && pairs.front().if_array() == nullptr;
  if (flat && pairs.size() % 2 != 0)
    throw Error(Errc::invalid_argument,
                "ack_many: a flat list holds an id and a delivery for each job, not " +
                    std::to_string(pairs.size()) + " values");
  std::lock_guard<std::mutex> lock(mu_);
  ValueArray results;
  results.reserve(flat ? pairs.size() / 2 : pairs.size());
  for (size_t k = 0; k < pairs.size(); k += flat ? 2 : 1) {
    const int64_t id = (flat ? pairs[k] : pairs[k][0]).as<int64_t>();
    const int64_t delivery = (flat ? pairs[k + 1] : pairs[k][1]).as<int64_t>();
    auto it = leases_.find(id);
    const bool ok = it != leases_.end() && it->second.delivery == delivery;
    results.push_back(ok);
    if (!ok) continue;
    lease_ended(it->second);
    leases_.erase(it);
    jobs_.erase(id);
    ++acked_total_;
    if (wal_) log(Value::array({"ack", id}));
  }
  if (wal_)
    log(Value::array({"ack", int64_t{0}}),
        [reply, answer = Value(std::move(results))] { reply.resolve(answer); });
  else
    reply.resolve(Value(std::move(results)));
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

void JobQueue::touch(int64_t id, int64_t delivery, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.delivery != delivery) return reply.resolve(false);
  Lease& lease = it->second;
  lease.deadline = Clock::now() + lease.length;
  add_deadline(lease.deadline, id);  // the old entry no longer matches: skipped
  log(Value::array({"lease", id, delivery, wall_ms() + lease.length.count(), jobs_[id].deliveries,
                    static_cast<int64_t>(lease.length.count())}),
      [reply] { reply.resolve(true); });
}

void JobQueue::bury(int64_t id, int64_t delivery, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.delivery != delivery) return reply.resolve(false);
  lease_ended(it->second);
  leases_.erase(it);
  buried_.insert(id);
  log(Value::array({"bury", id}), [reply] { reply.resolve(true); });
  feed_takers();  // a consumer may have room now
}

namespace {
int64_t count_of(int64_t n, const char* method) {
  if (n < 1 || n > 10000)
    throw Error(Errc::invalid_argument,
                std::string(method) + ": n must be 1 to 10000, not " + std::to_string(n));
  return n;
}
}  // namespace

Value JobQueue::buried(int64_t n) {
  count_of(n, "buried");
  std::lock_guard<std::mutex> lock(mu_);
  ValueArray out;
  for (auto it = buried_.begin(); it != buried_.end() && static_cast<int64_t>(out.size()) < n; ++it)
    out.push_back(Value::array({*it, jobs_[*it].body}));
  return Value(std::move(out));
}

void JobQueue::kick(int64_t n, Deferred reply) {
  count_of(n, "kick");
  std::lock_guard<std::mutex> lock(mu_);
  int64_t kicked = 0;
  while (kicked < n && !buried_.empty()) {
    const int64_t id = *buried_.begin();
    buried_.erase(buried_.begin());
    Job& job = jobs_[id];
    job.deliveries = 0;
    ready_.emplace(job.priority, id);
    ++kicked;
    // One answer, once the last record is on disk (the log keeps order).
    if (kicked == n || buried_.empty())
      log(Value::array({"kick", id}), [reply, kicked] { reply.resolve(kicked); });
    else
      log(Value::array({"kick", id}));
  }
  if (kicked == 0) reply.resolve(int64_t{0});
  feed_takers();
}

Value JobQueue::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  auto oldest = now;
  // The oldest is the lowest id (ids follow push times, replayed ones too): the first of each
  // priority, so this looks at one job per priority, not every job.
  for (auto it = ready_.begin(); it != ready_.end();) {
    oldest = std::min(oldest, jobs_[it->second].pushed);
    if (it->first == INT64_MAX) break;
    it = ready_.lower_bound({it->first + 1, INT64_MIN});
  }
  ValueHash h;
  h["ready"] = static_cast<int64_t>(ready_.size());
  h["delayed"] = static_cast<int64_t>(delayed_.size());
  h["leased"] = static_cast<int64_t>(leases_.size());
  h["buried"] = static_cast<int64_t>(buried_.size());
  h["oldest_ready_ms"] = static_cast<int64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now - oldest).count());
  h["pushed"] = pushed_total_;
  h["acknowledged"] = acked_total_;
  return Value(std::move(h));
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
  return ready_.empty() ? Value() : jobs_[ready_.begin()->second].body;
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
    for (auto soonest = first_deadline(); soonest && soonest->first <= now;
         soonest = first_deadline()) {
      const auto [when, id] = *soonest;
      pop_deadline();
      auto it = leases_.find(id);
      if (it != leases_.end() && it->second.deadline == when) requeue(id);
    }
    // Delayed jobs whose time came.
    while (!delayed_.empty() && delayed_.begin()->first <= now) {
      const int64_t id = delayed_.begin()->second;
      delayed_.erase(delayed_.begin());
      ready_.emplace(jobs_[id].priority, id);
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
    if (const auto soonest = first_deadline()) next = std::min(next, soonest->first);
    if (!delayed_.empty()) next = std::min(next, delayed_.begin()->first);
    timer_wake_ = next;
    if (next == Clock::time_point::max())
      cv_.wait(lock);
    else
      cv_.wait_until(lock, next);
  }
}

void JobQueue::register_class() {
  patro::Class<JobQueue>("Patro::Queue")
      // push(job [, options]), push_many(jobs [, options]): options as JobQueue::push takes.
      .method("push",
              [](JobQueue& q, Args& a, Deferred d) {
                if (a.size() > 2) throw Error(Errc::invalid_argument, "push: job [, options]");
                q.push(a[0], a.size() > 1 ? a[1] : Value(), d);
              })
      .method("push_many",
              [](JobQueue& q, Args& a, Deferred d) {
                if (a.size() > 2)
                  throw Error(Errc::invalid_argument, "push_many: jobs [, options]");
                const ValueArray* jobs = a[0].if_array();
                if (jobs == nullptr)
                  throw Error(Errc::type_mismatch,
                              "push_many: jobs must be an array, not " + a[0].to_string());
                q.push_many(*jobs, a.size() > 1 ? a[1] : Value(), d);
              })
      .method("take", [](JobQueue& q, int64_t timeout_ms, Deferred d) { q.take(timeout_ms, d); })
      .method("take_leased", [](JobQueue& q, int64_t timeout_ms, int64_t lease_ms, bool detached,
                                Deferred d) { q.take_leased(timeout_ms, lease_ms, detached, d); })
      .method("take_many", [](JobQueue& q, int64_t n, int64_t timeout_ms,
                              Deferred d) { q.take_many(std::max<int64_t>(n, 1), timeout_ms, d); })
      .method("take_flat", [](JobQueue& q, int64_t n, int64_t timeout_ms,
                              Deferred d) { q.take_flat(std::max<int64_t>(n, 1), timeout_ms, d); })
      .method("ack",
              [](JobQueue& q, int64_t id, int64_t delivery, Deferred d) { q.ack(id, delivery, d); })
      .method("ack_take", [](JobQueue& q, int64_t id, int64_t delivery, int64_t timeout_ms,
                             Deferred d) { q.ack_take(id, delivery, timeout_ms, d); })
      .method("ack_many",
              [](JobQueue& q, const Value& pairs, Deferred d) {
                // Read in place (a ValueArray parameter would copy the pairs).
                const ValueArray* a = pairs.if_array();
                if (a == nullptr)
                  throw Error(
                      Errc::type_mismatch,
                      "ack_many: pairs must be an array of [id, delivery] (or flat: id, delivery, "
                      "…), not " +
                          pairs.to_string());
                q.ack_many(*a, d);
              })
      .method("consume", [](JobQueue& q, Value callback, int64_t prefetch,
                            Deferred d) { q.consume(callback, prefetch, d); })
      .method("cancel", [](JobQueue& q, int64_t token) { return q.cancel(token); })
      .method("consumers", [](JobQueue& q) { return q.consumers(); })
      .method("nack",
              [](JobQueue& q, int64_t id, int64_t delivery) { return q.nack(id, delivery); })
      .method("touch", [](JobQueue& q, int64_t id, int64_t delivery,
                          Deferred d) { q.touch(id, delivery, d); })
      .method("bury", [](JobQueue& q, int64_t id, int64_t delivery,
                         Deferred d) { q.bury(id, delivery, d); })
      .method("buried", [](JobQueue& q, int64_t n) { return q.buried(n); })
      .method("kick", [](JobQueue& q, int64_t n, Deferred d) { q.kick(n, d); })
      .method("stats", [](JobQueue& q) { return q.stats(); })
      .method("size", [](JobQueue& q) { return q.size(); })
      .method("leased", [](JobQueue& q) { return q.leased(); })
      .method("peek", [](JobQueue& q) { return q.peek(); });
}

}  // namespace patro::worker
