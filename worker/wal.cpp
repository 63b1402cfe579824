#include "wal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <patro/error.hpp>

namespace patro::worker {

namespace {
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t crc(std::string_view s) {
  return static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}
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
constexpr uint32_t kMaxRecord = 64u << 20;
}  // namespace

std::string Wal::frame(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 8);
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, crc(payload));
  out.append(payload);
  return out;
}

Wal::Wal(const std::string& path, const Apply& apply, WalOptions options)
    : path_(path), options_(options) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot open", path);
  // Replay.
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot read", path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  size_t at = 0;
  while (at + 8 <= data.size()) {
    const uint32_t len = get_u32(data.data() + at);
    const uint32_t sum = get_u32(data.data() + at + 4);
    if (len > kMaxRecord || at + 8 + len > data.size()) break;
    const std::string_view payload(data.data() + at + 8, len);
    if (crc(payload) != sum) break;
    apply(payload);
    at += 8 + len;
  }
  if (at != data.size() && ::ftruncate(fd_, static_cast<off_t>(at)) != 0)
    fail("cannot truncate the torn tail of", path);
  if (::lseek(fd_, 0, SEEK_END) < 0) fail("cannot seek", path);
  bytes_ = static_cast<int64_t>(at);
  writer_ = std::thread([this] { writer_main(); });
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

void Wal::append(std::string record, std::function<void()> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ += framed_size(record);
    queue_.push_back(Entry{frame(record), std::move(done)});
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

void Wal::compact(const std::vector<std::string>& records) {
  std::string all;
  for (const auto& r : records) all += frame(r);
  {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_ = static_cast<int64_t>(all.size());
    queue_.push_back(Entry{std::move(all), {}, true});
  }
  cv_.notify_one();
}

void Wal::rewrite(const std::vector<std::string>& records) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string all;
  for (const auto& r : records) all += frame(r);
  switch_to(all);
  bytes_ = static_cast<int64_t>(all.size());
}

// Writes a whole new log beside the old one, syncs it, renames it over the old one and syncs the
// directory (so that a crash leaves the old log or the new one, never neither), then appends
// there. Runs on the writer thread, or before it starts.
void Wal::switch_to(const std::string& snapshot) {
  const std::string tmp = path_ + ".compact";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot open", tmp);
  try {
    write_all(fd, snapshot, tmp);
    if (::fsync(fd) != 0) fail("cannot sync", tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail("cannot replace", path_);
  }
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  ::close(fd_);
  fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) fail("cannot reopen", path_);
}

void Wal::write_out(const std::string& all, std::vector<std::function<void()>>& acks) {
  if (!all.empty()) {
    try {
      write_all(fd_, all, path_);
      if (::fdatasync(fd_) != 0) fail("cannot sync", path_);
    } catch (const Error& e) {
      // Nothing in the batch is acknowledged: its callers time out rather than being told a
      // lie. The log keeps going for later records.
      std::fprintf(stderr, "patro-worker: write-ahead log: %s\n", e.what());
      acks.clear();
      return;
    }
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
    std::vector<std::function<void()>> acks;
    for (auto& e : batch) {
      if (!e.snapshot) {
        all += e.data;
        if (e.done) acks.push_back(std::move(e.done));
        continue;
      }
      write_out(all, acks);  // the records before the snapshot, into the old log
      all.clear();
      try {
        switch_to(e.data);
      } catch (const Error& err) {
        // The old log still holds every record: keep appending there.
        std::fprintf(stderr, "patro-worker: write-ahead log compaction: %s\n", err.what());
      }
    }
    write_out(all, acks);
  }
}

}  // namespace patro::worker
