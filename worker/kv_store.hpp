// A key-value hash and an atomic counter. With a write-ahead log, every acknowledged change
// survives a restart (kill -9 included): a change is acknowledged once it is on disk.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <patro/patro.hpp>

#include "wal.hpp"

namespace patro::worker {

class KvStore {
 public:
  explicit KvStore(const std::string& wal_path, WalOptions wal_options = {});
  static void register_class();

  Value get(const std::string& key);
  void set(const std::string& key, const Value& v, Deferred reply);
  void erase(const std::string& key, Deferred reply);
  bool exists(const std::string& key);
  ValueArray keys();
  int64_t size();

 private:
  std::vector<std::string> snapshot() const;  // requires mu_ (or start-up)
  void append(std::string record, int64_t live_change, std::function<void()> done);  // mu_
  std::mutex mu_;
  std::map<std::string, Value> items_;
  std::map<std::string, int64_t> record_bytes_;  // each key's set record, for compaction
  int64_t live_bytes_ = 0;                       // their sum
  std::unique_ptr<Wal> wal_;
};

class Counter {
 public:
  explicit Counter(const std::string& wal_path, WalOptions wal_options = {});
  static void register_class();

  void add(int64_t n, Deferred reply);
  int64_t get();
  void set(int64_t v, Deferred reply);
  /// Sets to desired if it holds expected; true if it did.
  void cas(int64_t expected, int64_t desired, Deferred reply);

 private:
  void commit(Deferred reply, Value answer);  // requires mu_
  std::mutex mu_;
  int64_t value_ = 0;
  std::unique_ptr<Wal> wal_;
};

}  // namespace patro::worker
