#include "wal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <patro/error.hpp>
#include <patro/logging.hpp>

namespace patro::worker {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw Error(Errc::os_failure, what + " " + path + ": " + std::strerror(errno));
}

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
}

std::string read_all(int fd, const std::string& path) {
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot read", path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

// Opens a log file without following a symbolic link: a link planted at PATH must not have its
// target truncated or overwritten.
int open_no_follow(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0 && errno == ELOOP)
    throw Error(Errc::invalid_argument,
                "write-ahead log " + path +
                    " is a symbolic link; it is not followed (its target is left alone): "
                    "replace it with the file itself");
  if (fd < 0) fail("cannot open", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(Errc::invalid_argument, "write-ahead log " + path + " is not a regular file");
  }
  return fd;
}

// Makes a rename or a new file in path's directory durable.
void sync_directory_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) fail("cannot open the directory", dir);
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  errno = err;
  if (rc != 0) fail("cannot sync the directory", dir);
}

std::string utc_stamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

std::string Wal::whole_log(const std::vector<std::string>& records) {
  std::string all = wal_format::file_header();
  uint64_t sequence = 1;
  for (const auto& r : records) all += wal_format::frame(sequence++, r);
  return all;
}

Wal::Wal(const std::string& path, const Apply& apply, WalOptions options)
    : path_(path), options_(options) {
  fd_ = open_no_follow(path, O_RDWR | O_CREAT | O_APPEND);
  try {
    const std::string data = read_all(fd_, path);
    std::vector<std::string> legacy;  // format 0's records, written again in format 1
    const bool maybe_legacy = data.compare(0, 8, "PATROWAL") != 0;
    const wal_format::Scan scan =
        wal_format::scan(data, [&](std::string_view record, size_t /*offset*/) {
          apply(record);
          if (maybe_legacy) legacy.emplace_back(record);
        });
    const std::string where = "write-ahead log " + path + " at offset " +
                              std::to_string(scan.problem_at) + ": " + scan.what;
    if (scan.version > wal_format::kVersion)  // a later patro-worker's: never cut as damage
      throw Error(Errc::unsupported, where + "; it is left as it is (--repair does not apply)");
    if (scan.problem == wal_format::Problem::corrupt) {
      if (!options.repair)
        throw Error(Errc::bad_message,
                    where + "; it is damaged and left as it is (patro-worker verify checks a " +
                        "data directory; --repair keeps the file as " + path +
                        ".corrupt-TIME and cuts the log there, losing the " +
                        std::to_string(data.size() - scan.problem_at) + " bytes from there on)");
      repair_at(data, scan.good_end);
      write_log(LogLevel::warn, "worker",
                where + "; --repair: the original is kept beside it, and the " +
                    std::to_string(data.size() - scan.good_end) + " bytes from offset " +
                    std::to_string(scan.good_end) + " on are cut");
    } else if (scan.problem == wal_format::Problem::torn_tail) {
      write_log(LogLevel::warn, "worker",
                "write-ahead log " + path + ": a torn tail, the incomplete last write of a " +
                    "crash, cut at offset " + std::to_string(scan.good_end) + " (" +
                    std::to_string(data.size() - scan.good_end) + " bytes: " + scan.what + ")");
    }
    file_size_ = static_cast<int64_t>(scan.good_end);
    if (scan.format == wal_format::Format::legacy && file_size_ > 0) {
      write_log(LogLevel::info, "worker",
                "write-ahead log " + path + ": format 0, written again in format " +
                    std::to_string(wal_format::kVersion));
      rewrite(legacy);
    } else if (file_size_ == 0) {
      // New (or an incomplete header cut): the header first, the file's name made durable.
      if (!data.empty() && ::ftruncate(fd_, 0) != 0) fail("cannot truncate", path);
      const std::string header = wal_format::file_header();
      write_all(fd_, header, path);
      if (::fsync(fd_) != 0) fail("cannot sync", path);
      sync_directory_of(path);
      file_size_ = static_cast<int64_t>(header.size());
    } else if (file_size_ != static_cast<int64_t>(data.size())) {
      if (::ftruncate(fd_, file_size_) != 0) fail("cannot cut the torn tail of", path);
      if (::fsync(fd_) != 0) fail("cannot sync", path);
    }
    next_sequence_ =
        scan.format == wal_format::Format::legacy ? next_sequence_ : scan.next_sequence;
  } catch (...) {
    ::close(fd_);
    throw;
  }
  bytes_ = file_size_;
  writer_ = std::thread([this] { writer_main(); });
}

// Keeps the damaged file as PATH.corrupt-TIME (a copy, synced), then cuts the log at good_end.
void Wal::repair_at(const std::string& data, size_t good_end) {
  const std::string base = path_ + ".corrupt-" + utc_stamp();
  std::string copy = base;
  int fd = -1;
  for (int i = 2; fd < 0; ++i) {
    fd = ::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd < 0 && (errno != EEXIST || i > 100)) fail("cannot create", copy);
    if (fd < 0) copy = base + "-" + std::to_string(i);
  }
  try {
    write_all(fd, data, copy);
    if (::fsync(fd) != 0) fail("cannot sync", copy);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  sync_directory_of(copy);
  write_log(LogLevel::warn, "worker", "write-ahead log " + path_ + ": kept as " + copy);
  if (::ftruncate(fd_, static_cast<off_t>(good_end)) != 0) fail("cannot cut", path_);
  if (::fsync(fd_) != 0) fail("cannot sync", path_);
}

Wal::~Wal() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void Wal::check_size(size_t record_bytes) const {
  const auto limit = static_cast<size_t>(
      std::min<int64_t>(options_.max_record_bytes, int64_t{wal_format::kMaxPayload}));
  if (record_bytes > limit)
    throw Error(Errc::message_too_large, "the change takes " + std::to_string(record_bytes) +
                                             " bytes in the write-ahead log " + path_ +
                                             ", over its limit of " + std::to_string(limit) +
                                             " bytes per record; it was not made");
}

void Wal::append(std::string record, std::function<void()> done) {
  check_size(record.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ += framed_size(record);
    queue_.push_back(Entry{std::move(record), std::move(done), {}, false});
  }
  cv_.notify_one();
}

bool Wal::needs_compaction(int64_t live_bytes) {
  if (options_.compact_ratio <= 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_ > options_.compact_min_bytes &&
         static_cast<double>(bytes_) > options_.compact_ratio * static_cast<double>(live_bytes);
}

int64_t Wal::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

void Wal::compact(std::vector<std::string> records) {
  int64_t total = static_cast<int64_t>(wal_format::kFileHeaderSize);
  for (const auto& r : records) total += framed_size(r);
  {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ = total;
    queue_.push_back(Entry{{}, {}, std::move(records), true});
  }
  cv_.notify_one();
}

void Wal::rewrite(const std::vector<std::string>& records) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string all = whole_log(records);
  switch_to(all);
  next_sequence_ = records.size() + 1;
  bytes_ = file_size_;
}

// Writes a whole new log beside the old one, syncs it, renames it over the old one and syncs the
// directory (so that a crash leaves the old log or the new one, never neither), then appends
// there. Runs on the writer thread, or before it starts, or while it waits with nothing queued.
void Wal::switch_to(const std::string& content) {
  const std::string tmp = path_ + ".compact";
  // A leftover of a crash mid-compaction (or anything planted there) goes; O_EXCL then creates
  // the file itself, never a link's target.
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) fail("cannot remove", tmp);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) fail("cannot create", tmp);
  try {
    write_all(fd, content, tmp);
    if (::fsync(fd) != 0) fail("cannot sync", tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    errno = err;
    fail("cannot replace", path_);
  }
  // From here the new file is the log, whatever fails.
  ::close(fd_);
  fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
  if (fd_ < 0) {
    broken_ = true;
    fail("cannot reopen", path_);
  }
  file_size_ = static_cast<int64_t>(content.size());
  try {
    sync_directory_of(path_);
  } catch (const Error& e) {
    write_log(LogLevel::error, "worker", std::string("write-ahead log: ") + e.what());
  }
}

void Wal::write_out(const std::string& all, uint64_t first_sequence,
                    std::vector<std::function<void()>>& acks) {
  if (all.empty() && acks.empty()) return;
  try {
    if (broken_) throw Error(Errc::os_failure, "an earlier write failed and could not be undone");
    if (!all.empty()) {
      try {
        write_all(fd_, all, path_);
        if (::fdatasync(fd_) != 0) fail("cannot sync", path_);
        file_size_ += static_cast<int64_t>(all.size());
      } catch (const Error&) {
        // Undo what part of the batch reached the file, so that later records follow the last
        // good one (a partial record in the middle would read as damage at the next start).
        if (::ftruncate(fd_, file_size_) != 0) broken_ = true;
        next_sequence_ = first_sequence;
        throw;
      }
    }
  } catch (const Error& e) {
    // Nothing in the batch is acknowledged: its callers time out rather than being told a lie.
    write_log(LogLevel::error, "worker",
              std::string("write-ahead log ") + path_ + ": " + e.what() +
                  " (the changes of this batch are not acknowledged)");
    acks.clear();
    return;
  }
  for (auto& done : acks)
    if (done) done();
  acks.clear();
}

void Wal::writer_main() {
  for (;;) {
    std::deque<Entry> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty() && stopping_) return;
      batch.swap(queue_);
    }
    std::string all;
    uint64_t first = next_sequence_;
    std::vector<std::function<void()>> acks;
    for (auto& e : batch) {
      if (!e.is_snapshot) {
        all += wal_format::frame(next_sequence_++, e.record);
        if (e.done) acks.push_back(std::move(e.done));
        continue;
      }
      write_out(all, first, acks);  // the records before the snapshot, into the old log
      all.clear();
      if (broken_) continue;
      try {
        switch_to(whole_log(e.snapshot));
        next_sequence_ = e.snapshot.size() + 1;
      } catch (const Error& err) {
        // The old log still holds every record: keep appending there.
        write_log(LogLevel::error, "worker",
                  std::string("write-ahead log compaction: ") + err.what());
      }
      first = next_sequence_;
    }
    write_out(all, first, acks);
  }
}

}  // namespace patro::worker
