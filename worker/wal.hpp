// A write-ahead log with group commit: records are appended by one writer thread, and each
// record's callback runs once an fdatasync covers it — one fsync for everything queued behind it.
// The bytes on disk are wal_format's: a header with the format version, then records with a
// magic, a sequence number and a checksum that covers the length. Opening replays every record.
// A torn tail (the incomplete last write of a crash) is cut with a warning naming the file, the
// offset and the bytes; damage anywhere else stops the open with an error naming the file and the
// offset, and changes nothing, unless WalOptions::repair, which keeps the original as
// PATH.corrupt-TIME and then cuts the log there. A file of format 0 (no header) is read and
// written again in the current format. A symbolic link is never followed. Any thread may call
// append().
// Online compaction: the owner asks needs_compaction(live bytes) after an append and, if so, hands
// compact() a snapshot of its state; the writer thread finishes the records queued before it into
// the old file, then writes the snapshot to a new file, syncs it, renames it over the old one,
// syncs the directory, and appends the later records there. The owner calls both under the lock
// that orders its appends, so the snapshot is exactly the state the earlier records produce.
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

#include "wal_format.hpp"

namespace patro::worker {

struct WalOptions {
  /// Compact online when the log holds more than compact_ratio times the live state's records and
  /// more than compact_min_bytes. A ratio of 0 or less: only at start-up.
  double compact_ratio = 2.0;
  int64_t compact_min_bytes = 1 << 20;
  /// The largest record append() takes; a bigger one is refused with Errc::message_too_large
  /// (and its change not made). At most wal_format::kMaxPayload.
  int64_t max_record_bytes = 16 << 20;  // Limits::max_message_size: what one message may carry
  /// On damage: keep the file as PATH.corrupt-TIME, cut the log at the damage and go on (the
  /// records after it are lost), rather than refusing to open.
  bool repair = false;
};

class Wal {
 public:
  using Apply = std::function<void(std::string_view record)>;

  /// Opens (creating) the log at path and replays every intact record through apply. Throws
  /// patro::Error on damage (see above), a symbolic link, or an I/O error.
  Wal(const std::string& path, const Apply& apply, WalOptions options = {});
  /// Writes what is queued, syncs, and stops the writer.
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  /// Throws Errc::message_too_large if a record of this many bytes would be refused: for an
  /// owner to ask before it changes its state.
  void check_size(size_t record_bytes) const;
  /// Queues a record; done (if any) runs on the writer thread once the record is on disk. Throws
  /// as check_size does.
  void append(std::string record, std::function<void()> done = {});
  /// Replaces the log with these records, durably (write a new file, fsync, rename). For
  /// compaction; call before any append.
  void rewrite(const std::vector<std::string>& records);

  /// Whether the log, with what is queued, has grown past the compaction threshold for a state
  /// whose records take live_bytes (as framed_size counts them).
  bool needs_compaction(int64_t live_bytes);
  /// Replaces the log, in order with the appends around it, with these records (the state after
  /// every record appended so far). Call under the lock that orders the owner's appends.
  void compact(std::vector<std::string> records);
  /// The bytes a record takes in the log.
  static int64_t framed_size(std::string_view payload) {
    return wal_format::framed_size(payload.size());
  }
  /// The log's size, with what is queued.
  int64_t size();

  const std::string& path() const noexcept { return path_; }

 private:
  struct Entry {
    std::string record;
    std::function<void()> done;
    std::vector<std::string> snapshot;  // for compaction: the whole new log's records
    bool is_snapshot = false;
  };
  void writer_main();
  void write_out(const std::string& all, uint64_t first_sequence,
                 std::vector<std::function<void()>>& acks);
  // Replaces the file with these bytes (a whole log) and appends there from now on.
  void switch_to(const std::string& content);
  static std::string whole_log(const std::vector<std::string>& records);
  void repair_at(const std::string& data, size_t offset);

  const std::string path_;
  int fd_ = -1;                 // the writer thread's, or the constructor's and rewrite()'s
  int64_t file_size_ = 0;       // what fd_ holds, synced or not (same owner)
  uint64_t next_sequence_ = 1;  // the next record's (same owner)
  bool broken_ = false;         // a failed write could not be undone: nothing more is acknowledged
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;
  bool stopping_ = false;
  const WalOptions options_;
  int64_t bytes_ = 0;  // the log's size once everything queued is written (under mu_)
  std::thread writer_;
};

}  // namespace patro::worker
