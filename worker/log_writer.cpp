#include "log_writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>

namespace patro::worker {

namespace {
void write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(Errc::os_failure, std::string("cannot write the log: ") + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
}
}  // namespace

LogWriter::LogWriter(std::string path, LogOptions options)
    : path_(std::move(path)), options_(options) {
  open_file();
  writer_ = std::thread([this] { writer_main(); });
}

LogWriter::~LogWriter() {
  alive_->clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

void LogWriter::open_file() {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error(Errc::invalid_argument,
                "cannot open log file " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  written_ = ::fstat(fd_, &st) == 0 ? st.st_size : 0;
}

std::string LogWriter::format(const std::string& line, uint64_t client) const {
  std::string out;
  if (options_.prefix) {
    using namespace std::chrono;
    const auto now = system_clock::now();
    const std::time_t t = system_clock::to_time_t(now);
    const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %016llx ",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms), static_cast<unsigned long long>(client));
    out = buf;
  }
  // One line per write: embedded newlines would split it, so they are escaped.
  for (char c : line) {
    if (c == '\n') {
      out += "\\n";
    } else if (c != '\r') {
      out += c;
    }
  }
  if (!out.empty() && out.size() >= 2 && out.compare(out.size() - 2, 2, "\\n") == 0)
    out.resize(out.size() - 2);  // a trailing newline is the line's own end
  out += '\n';
  return out;
}

void LogWriter::append(std::string text, std::function<void()> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    buffer_ += text;
    if (done) acks_.push_back(std::move(done));
  }
  cv_.notify_all();
}

void LogWriter::write(const std::string& line, Deferred reply) {
  std::string text = format(line, reply.client_id());
  if (options_.sync == LogOptions::Sync::always) {
    append(std::move(text), [reply] { reply.resolve(true); });
  } else {
    append(std::move(text), {});
    reply.resolve(true);  // received and in order; on disk within the sync policy
  }
}

void LogWriter::write_many(const ValueArray& lines, Deferred reply) {
  std::string text;
  for (const Value& l : lines) text += format(l.as<std::string>(), reply.client_id());
  const int64_t n = static_cast<int64_t>(lines.size());
  if (options_.sync == LogOptions::Sync::always) {
    append(std::move(text), [reply, n] { reply.resolve(n); });
  } else {
    append(std::move(text), {});
    reply.resolve(n);
  }
}

void LogWriter::rotate_locked() {
  ::fsync(fd_);
  ::close(fd_);
  for (int i = options_.keep; i >= 1; --i) {
    const std::string from = i == 1 ? path_ : path_ + "." + std::to_string(i - 1);
    const std::string to = path_ + "." + std::to_string(i);
    std::rename(from.c_str(), to.c_str());
  }
  open_file();
}

void LogWriter::reopen() {
  {
    // As rotate: the buffer first, so every line written before the signal lands in the old file.
    std::unique_lock<std::mutex> lock(mu_);
    cv_.notify_all();
    for (int i = 0; i < 1000 && !buffer_.empty(); ++i) {
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lock.lock();
    }
  }
  std::lock_guard<std::mutex> io(io_mu_);
  const int old = fd_;
  const int64_t old_written = written_;
  try {
    open_file();
  } catch (...) {
    fd_ = old;
    written_ = old_written;
    throw;
  }
  ::fdatasync(old);
  ::close(old);
}

bool LogWriter::rotate() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    // Let the writer empty the buffer first, so no line straddles the rotation.
    cv_.notify_all();
    for (int i = 0; i < 1000 && !buffer_.empty(); ++i) {
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lock.lock();
    }
  }
  std::lock_guard<std::mutex> io(io_mu_);
  rotate_locked();
  return true;
}

void LogWriter::writer_main() {
  auto next_sync = std::chrono::steady_clock::now() + options_.sync_interval;
  bool dirty = false;
  for (;;) {
    std::string chunk;
    std::vector<std::function<void()>> acks;
    bool reread = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // A new follower wakes the writer too, so that its deadline (and a line written between
      // its first read and its parking) is seen: the wait ends at the earliest follower deadline.
      auto wake = [&] { return stopping_ || !buffer_.empty() || new_followers_; };
      std::optional<std::chrono::steady_clock::time_point> until;
      if (options_.sync == LogOptions::Sync::interval && dirty) until = next_sync;
      for (const Follower& f : followers_)
        if (!until || f.deadline < *until) until = f.deadline;
      if (until) {
        cv_.wait_until(lock, *until, wake);
      } else {
        cv_.wait(lock, wake);
      }
      if (buffer_.empty() && stopping_) break;
      chunk.swap(buffer_);
      acks.swap(acks_);
      reread = new_followers_;
      new_followers_ = false;
    }
    try {
      std::lock_guard<std::mutex> io(io_mu_);
      if (!chunk.empty()) {
        if (options_.rotate_bytes > 0 && written_ > 0 &&
            written_ + static_cast<int64_t>(chunk.size()) > options_.rotate_bytes)
          rotate_locked();
        write_all(fd_, chunk);
        written_ += static_cast<int64_t>(chunk.size());
        dirty = true;
      }
      const auto now = std::chrono::steady_clock::now();
      if (dirty && (options_.sync == LogOptions::Sync::always ||
                    (options_.sync == LogOptions::Sync::interval && now >= next_sync))) {
        ::fdatasync(fd_);
        dirty = false;
        next_sync = now + options_.sync_interval;
      }
    } catch (const Error& e) {
      std::fprintf(stderr, "patro-worker: log %s: %s\n", path_.c_str(), e.what());
      continue;  // those lines are not acknowledged
    }
    for (auto& a : acks) a();
    answer_followers(reread || !chunk.empty());
    if (reread || !chunk.empty()) push_subscribers();
  }
  std::lock_guard<std::mutex> io(io_mu_);
  ::fdatasync(fd_);
}

Value LogWriter::read(int64_t offset, int64_t max_lines) {
  std::lock_guard<std::mutex> io(io_mu_);
  return read_locked(offset, max_lines);
}

Value LogWriter::read_locked(int64_t offset, int64_t max_lines) {
  // Reads block by block until max_lines whole lines, or max_read_bytes of them, or the end of
  // what is written. A line longer than a block is read on to its end, never dropped (a line cut
  // at a block's end would otherwise hide every later line).
  constexpr size_t kBlock = 64 << 10;
  constexpr int64_t kPerLine = 16;  // a string's framing in the reply
  const int64_t cap = std::max<int64_t>(options_.max_read_bytes - kPerLine, 1);
  ValueArray lines;
  int64_t at = std::max<int64_t>(offset, 0);
  int64_t budget = cap + kPerLine;
  int64_t truncated = 0;
  const int rfd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (rfd >= 0) {
    std::string block(kBlock, '\0');
    std::string partial;     // the start of a line whose end is not read yet
    int64_t line_bytes = 0;  // that line's length so far (partial holds at most cap of it)
    int64_t file_at = at;
    bool done = false;
    while (!done && static_cast<int64_t>(lines.size()) < max_lines) {
      ssize_t n;
      do {
        n = ::pread(rfd, block.data(), kBlock, file_at);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) break;
      file_at += n;
      const size_t got = static_cast<size_t>(n);
      size_t start = 0;
      while (start < got && static_cast<int64_t>(lines.size()) < max_lines) {
        const void* nl = std::memchr(block.data() + start, '\n', got - start);
        const size_t end =
            nl ? static_cast<size_t>(static_cast<const char*>(nl) - block.data()) : got;
        const size_t room =
            static_cast<size_t>(cap) - std::min(partial.size(), static_cast<size_t>(cap));
        partial.append(block, start, std::min(end - start, room));
        line_bytes += static_cast<int64_t>(end - start);
        if (nl == nullptr) break;
        const int64_t cost = std::min(line_bytes, cap) + kPerLine;
        if (cost > budget && !lines.empty()) {  // the next reply takes it
          done = true;
          break;
        }
        if (line_bytes > cap) ++truncated;  // longer than any reply may carry: cut to what fits
        lines.push_back(std::move(partial));
        partial.clear();
        budget -= cost;
        at += line_bytes + 1;
        line_bytes = 0;
        start = end + 1;
      }
    }
    ::close(rfd);
  }
  Value out;
  out.set("lines", Value(std::move(lines)));
  out.set("next", at);
  if (truncated > 0) out.set("truncated", truncated);
  return out;
}

void LogWriter::follow(int64_t offset, int64_t max_lines, int64_t timeout_ms, Deferred reply) {
  Value now = read(offset, max_lines);
  if (!now["lines"].if_array()->empty() || timeout_ms <= 0) {
    reply.resolve(now);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    followers_.push_back(
        Follower{offset, max_lines,
                 std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(std::min<int64_t>(timeout_ms, 3600000)),
                 reply});
    new_followers_ = true;
  }
  cv_.notify_all();
}

void LogWriter::answer_followers(bool reread) {
  std::deque<Follower> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(followers_);
  }
  if (waiting.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  std::deque<Follower> still;
  for (auto& f : waiting) {
    const bool expired = f.deadline <= now;
    Value got = reread || expired ? read(f.offset, f.max_lines) : Value();
    if (got.is_null() || (got["lines"].if_array()->empty() && !expired)) {
      still.push_back(std::move(f));
    } else {
      f.reply.resolve(got);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& f : still) followers_.push_back(std::move(f));
}

int64_t LogWriter::subscribe(int64_t offset, const Value& callback) {
  Proxy cb = push_target(callback, "subscribe",
                         "it is called with {\"lines\", \"next\"} as follow answers");
  int64_t token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    token = next_token_++;
    subscribers_.push_back(Subscriber{token, std::move(cb), std::max<int64_t>(offset, 0)});
    new_followers_ = true;  // the writer looks at once: lines may be there already
  }
  cv_.notify_all();
  return token;
}

bool LogWriter::unsubscribe(int64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto before = subscribers_.size();
  std::erase_if(subscribers_, [&](const Subscriber& s) { return s.token == token; });
  return subscribers_.size() != before;
}

void LogWriter::push_subscribers() {
  std::vector<std::pair<int64_t, int64_t>> due;  // token, offset
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Subscriber& s : subscribers_)
      if (!s.in_flight) due.emplace_back(s.token, s.offset);
  }
  for (const auto& entry : due) {
    const int64_t token = entry.first;  // captured below, which clang 14 refuses for a binding
    const int64_t offset = entry.second;
    Value got = read(offset, 1000);
    if (got["lines"].if_array()->empty()) continue;
    std::optional<Proxy> cb;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = std::find_if(subscribers_.begin(), subscribers_.end(),
                             [&](const Subscriber& s) { return s.token == token; });
      if (it == subscribers_.end()) continue;  // unsubscribed meanwhile
      it->in_flight = true;
      it->offset = got["next"].as<int64_t>();
      cb = it->callback;
    }
    try {
      cb->async_call("", std::move(got)).then([alive = alive_, token](const Future<Value>& f) {
        std::string failure;
        try {
          (void)f.get();
        } catch (const std::exception& e) {
          failure = e.what();
          if (failure.empty()) failure = "failed";
        }
        alive->with([&](LogWriter& w) { w.pushed(token, failure); });
      });
    } catch (const std::exception& e) {
      pushed(token, e.what());
    }
  }
}

void LogWriter::pushed(int64_t token, const std::string& failure) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find_if(subscribers_.begin(), subscribers_.end(),
                           [&](const Subscriber& s) { return s.token == token; });
    if (it == subscribers_.end()) return;
    if (!failure.empty()) {
      subscribers_.erase(it);
    } else {
      it->in_flight = false;
      new_followers_ = true;  // lines written meanwhile go out now
    }
  }
  if (!failure.empty())
    write_log(LogLevel::info, "worker",
              "log " + path_ + ": subscriber " + std::to_string(token) +
                  " dropped, a push to it failed: " + failure);
  cv_.notify_all();
}

int64_t LogWriter::size() {
  std::lock_guard<std::mutex> io(io_mu_);
  return written_;
}

void LogWriter::register_class() {
  patro::Class<LogWriter>("Patro::Log")
      .method("write", [](LogWriter& l, std::string line, Deferred d) { l.write(line, d); })
      .method("print", [](LogWriter& l, std::string line, Deferred d) { l.write(line, d); })
      .method("write_many",
              [](LogWriter& l, ValueArray lines, Deferred d) { l.write_many(lines, d); })
      .method("rotate", [](LogWriter& l) { return l.rotate(); })
      .method("read", [](LogWriter& l, int64_t offset,
                         int64_t max_lines) { return l.read(offset, max_lines); })
      .method("follow", [](LogWriter& l, int64_t offset, int64_t timeout_ms,
                           Deferred d) { l.follow(offset, 1000, timeout_ms, d); })
      .method("subscribe", [](LogWriter& l, int64_t offset,
                              Value callback) { return l.subscribe(offset, callback); })
      .method("unsubscribe", [](LogWriter& l, int64_t token) { return l.unsubscribe(token); })
      .method("size", [](LogWriter& l) { return l.size(); })
      .method("path", [](LogWriter& l) { return l.path(); });
}

}  // namespace patro::worker
