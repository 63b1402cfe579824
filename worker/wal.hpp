// A write-ahead log with group commit: records are appended by one writer thread, and each
// record's callback runs once an fdatasync covers it — one fsync for everything queued behind it.
// Records are framed as [length:4][crc32:4][payload]; replay stops at the first torn or corrupt
// record (a crash mid-write) and truncates the file there. Any thread may call append().
// Online compaction: the owner asks needs_compaction(live bytes) after an append and, if so, hands
// compact() a snapshot of its state; the writer thread finishes the records queued before it into
// the old file, then writes the snapshot to a new file, syncs it and renames it over the old one,
// and appends the later records there. The owner calls both under the lock that orders its
// appends, so the snapshot is exactly the state the earlier records produce.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace patro::worker {

struct WalOptions {
  /// Compact online when the log holds more than compact_ratio times the live state's records and
  /// more than compact_min_bytes. A ratio of 0 or less: only at start-up.
  double compact_ratio = 2.0;
  int64_t compact_min_bytes = 1 << 20;
};

class Wal {
 public:
  using Apply = std::function<void(std::string_view record)>;

  /// Opens (creating) the log at path and replays every intact record through apply.
  Wal(const std::string& path, const Apply& apply, WalOptions options = {});
  /// Writes what is queued, syncs, and stops the writer.
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  /// Queues a record; done (if any) runs on the writer thread once the record is on disk.
  void append(std::string record, std::function<void()> done = {});
  /// Replaces the log with these records, durably (write a new file, fsync, rename). For
  /// compaction; call before any append.
  void rewrite(const std::vector<std::string>& records);

  /// Whether the log, with what is queued, has grown past the compaction threshold for a state
  /// whose records take live_bytes (as framed_size counts them).
  bool needs_compaction(int64_t live_bytes);
  /// Replaces the log, in order with the appends around it, with these records (the state after
  /// every record appended so far). Call under the lock that orders the owner's appends.
  void compact(const std::vector<std::string>& records);
  /// The bytes a record takes in the log.
  static int64_t framed_size(std::string_view payload) {
    return static_cast<int64_t>(payload.size()) + 8;
  }
  /// The log's size, with what is queued.
  int64_t size();

  const std::string& path() const noexcept { return path_; }

 private:
  struct Entry {
    std::string data;
    std::function<void()> done;
    bool snapshot = false;  // data is a whole new log
  };
  void writer_main();
  void write_out(const std::string& all, std::vector<std::function<void()>>& acks);
  void switch_to(const std::string& snapshot);
  static std::string frame(std::string_view payload);

  std::string path_;
  int fd_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;
  bool stopping_ = false;
  const WalOptions options_;
  int64_t bytes_ = 0;  // the log's size once everything queued is written (under mu_)
  std::thread writer_;
};

}  // namespace patro::worker
