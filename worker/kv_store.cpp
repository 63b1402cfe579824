#include "kv_store.hpp"

namespace patro::worker {

// --- KvStore ---

KvStore::KvStore(const std::string& wal_path, WalOptions wal_options) {
  if (wal_path.empty()) return;
  wal_ = std::make_unique<Wal>(
      wal_path,
      [this](std::string_view r) {
        const Value rec = decode(r);
        const std::string key = rec[1].as<std::string>();
        int64_t& bytes = record_bytes_[key];
        live_bytes_ -= bytes;
        if (rec[0] == "set") {
          items_[key] = rec[2];
          bytes = Wal::framed_size(r);
          live_bytes_ += bytes;
        } else {
          items_.erase(key);
          record_bytes_.erase(key);
        }
      },
      wal_options);
  wal_->rewrite(snapshot());  // compaction at start-up: the log becomes the current state
}

std::vector<std::string> KvStore::snapshot() const {
  std::vector<std::string> records;
  for (const auto& [k, v] : items_) records.push_back(encode(Value::array({"set", k, v})));
  return records;
}

void KvStore::append(std::string record, int64_t live_change, std::function<void()> done) {
  live_bytes_ += live_change;
  wal_->append(std::move(record), std::move(done));
  if (wal_->needs_compaction(live_bytes_)) wal_->compact(snapshot());
}

Value KvStore::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = items_.find(key);
  return it == items_.end() ? Value() : it->second;
}

void KvStore::set(const std::string& key, const Value& v, Deferred reply) {
  std::string record;
  if (wal_) {
    // Refused before anything changes if the log would not take it (a value that reuses one
    // sub-table many times encodes far larger than the message that carried it).
    record = encode(Value::array({"set", key, v}));
    wal_->check_size(record.size());
  }
  std::lock_guard<std::mutex> lock(mu_);
  items_[key] = v;
  if (wal_) {
    int64_t& bytes = record_bytes_[key];
    const int64_t old = bytes;
    bytes = Wal::framed_size(record);
    append(std::move(record), bytes - old, [reply] { reply.resolve(Value()); });
  } else {
    reply.resolve(Value());
  }
}

void KvStore::erase(const std::string& key, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = items_.find(key);
  Value old = it == items_.end() ? Value() : it->second;
  if (it != items_.end()) items_.erase(it);
  if (wal_) {
    int64_t change = 0;
    if (auto b = record_bytes_.find(key); b != record_bytes_.end()) {
      change = -b->second;
      record_bytes_.erase(b);
    }
    append(encode(Value::array({"erase", key})), change, [reply, old] { reply.resolve(old); });
  } else {
    reply.resolve(old);
  }
}

bool KvStore::exists(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  return items_.count(key) > 0;
}

ValueArray KvStore::keys() {
  std::lock_guard<std::mutex> lock(mu_);
  ValueArray out;
  for (const auto& [k, v] : items_) out.push_back(k);
  return out;
}

int64_t KvStore::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(items_.size());
}

void KvStore::register_class() {
  patro::Class<KvStore>("Patro::Hash")
      .method("get", [](KvStore& s, std::string k) { return s.get(k); })
      .method("set", [](KvStore& s, std::string k, Value v, Deferred d) { s.set(k, v, d); })
      .method("erase", [](KvStore& s, std::string k, Deferred d) { s.erase(k, d); })
      .method("exists", [](KvStore& s, std::string k) { return s.exists(k); })
      .method("keys", [](KvStore& s) { return List(s.keys()); })
      .method("size", [](KvStore& s) { return s.size(); });
}

// --- Counter ---

Counter::Counter(const std::string& wal_path, WalOptions wal_options) {
  if (wal_path.empty()) return;
  wal_ = std::make_unique<Wal>(
      wal_path, [this](std::string_view r) { value_ = decode(r).as<int64_t>(); }, wal_options);
  wal_->rewrite({encode(Value(value_))});
}

void Counter::commit(Deferred reply, Value answer) {
  if (!wal_) return reply.resolve(answer);
  std::string record = encode(Value(value_));
  const int64_t live = Wal::framed_size(record);  // the state is one record
  wal_->append(std::move(record), [reply, answer] { reply.resolve(answer); });
  if (wal_->needs_compaction(live)) wal_->compact({encode(Value(value_))});
}

void Counter::add(int64_t n, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  value_ += n;
  commit(reply, value_);
}

int64_t Counter::get() {
  std::lock_guard<std::mutex> lock(mu_);
  return value_;
}

void Counter::set(int64_t v, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  value_ = v;
  commit(reply, Value());
}

void Counter::cas(int64_t expected, int64_t desired, Deferred reply) {
  std::lock_guard<std::mutex> lock(mu_);
  if (value_ != expected) {
    reply.resolve(false);
    return;
  }
  value_ = desired;
  commit(reply, true);
}

void Counter::register_class() {
  patro::Class<Counter>("Patro::Counter")
      .method("add", [](Counter& c, int64_t n, Deferred d) { c.add(n, d); })
      .method("get", [](Counter& c) { return c.get(); })
      .method("set", [](Counter& c, int64_t v, Deferred d) { c.set(v, d); })
      .method("cas", [](Counter& c, int64_t e, int64_t n, Deferred d) { c.cas(e, n, d); });
}

}  // namespace patro::worker
