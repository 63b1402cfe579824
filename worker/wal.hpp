// A write-ahead log with group commit: records are appended by one writer thread, and each
// record's callback runs once an fdatasync covers it — one fsync for everything queued behind it.
// Records are framed as [length:4][crc32:4][payload]; replay stops at the first torn or corrupt
// record (a crash mid-write) and truncates the file there. Any thread may call append().
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

class Wal {
 public:
  using Apply = std::function<void(std::string_view record)>;

  /// Opens (creating) the log at path and replays every intact record through apply.
  Wal(const std::string& path, const Apply& apply);
  /// Writes what is queued, syncs, and stops the writer.
  ~Wal();
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  /// Queues a record; done (if any) runs on the writer thread once the record is on disk.
  void append(std::string record, std::function<void()> done = {});
  /// Replaces the log with these records, durably (write a new file, fsync, rename). For
  /// compaction; call before any append.
  void rewrite(const std::vector<std::string>& records);

  const std::string& path() const noexcept { return path_; }

 private:
  void writer_main();
  static std::string frame(std::string_view payload);

  std::string path_;
  int fd_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::function<void()>>> queue_;
  bool stopping_ = false;
  std::thread writer_;
};

}  // namespace patro::worker
