#include "log_writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <random>

#include "cli/values.hpp"

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
constexpr const char* kGenerationAttribute = "user.patro.generation";

// A file's generation: a random number in its extended attribute user.patro.generation, set the
// first time the writer opens it as the current file, which a rename keeps and a restart reads
// again (an inode number alone would not do: the next file created once a rotated one is removed
// may get the same). Where the file system keeps no user attributes, the inode number.
int64_t generation_of(int fd, const struct stat& st, bool assign) {
  char buf[32] = {};
  const ssize_t n = ::fgetxattr(fd, kGenerationAttribute, buf, sizeof buf - 1);
  if (n > 0) {
    char* end = nullptr;
    const long long v = std::strtoll(buf, &end, 10);
    if (end == buf + n && v > 0) return v;
  }
  if (assign && n < 0 && errno == ENODATA) {
    std::random_device rd;
    int64_t v = 0;
    while (v <= 0) v = static_cast<int64_t>(((static_cast<uint64_t>(rd()) << 32) ^ rd()) >> 2);
    const std::string text = std::to_string(v);
    if (::fsetxattr(fd, kGenerationAttribute, text.data(), text.size(), 0) == 0) return v;
  }
  return static_cast<int64_t>(st.st_ino);
}

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// A field's value in a text line: a string that needs no quoting as it is, anything else as
// compact JSON (a string with a space, quote, equals sign or control character quoted).
std::string field_text(const Value& v) {
  if (const std::string* s = v.if_string()) {
    const bool bare =
        !s->empty() && cli::is_utf8(*s) && std::none_of(s->begin(), s->end(), [](unsigned char c) {
          return c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f;
        });
    if (bare) return *s;
  }
  return cli::dump(cli::to_json(v));
}
}  // namespace

LogWriter::LogWriter(std::string path, LogOptions options)
    : path_(std::move(path)), options_(options), host_(host_name()) {
  open_rotated();
  try {
    open_file();
  } catch (...) {
    for (const Generation& g : files_) ::close(g.fd);
    throw;
  }
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
  for (const Generation& g : files_) ::close(g.fd);
}

void LogWriter::open_file() {
  // Read and write: followers read the current file through the same descriptor, so a line
  // written after a mv and before the SIGHUP (into the moved file) still reaches them.
  const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error(Errc::invalid_argument,
                "cannot open log file " + path_ + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(Errc::invalid_argument,
                "cannot stat log file " + path_ + ": " + std::strerror(err));
  }
  struct stat current {};
  if (fd_ >= 0 && ::fstat(fd_, &current) == 0 && current.st_ino == st.st_ino &&
      current.st_dev == st.st_dev) {
    ::close(fd);  // the same file (a SIGHUP with nothing moved): the same generation
  } else {
    files_.push_back(Generation{generation_of(fd, st, true), fd});
    fd_ = fd;
    trim_generations();
  }
  written_ = st.st_size;
}

void LogWriter::open_rotated() {
  for (int i = options_.keep; i >= 1; --i) {
    const std::string p = path_ + "." + std::to_string(i);
    const int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    const int64_t id =
        ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? generation_of(fd, st, false) : 0;
    const bool fresh = id != 0 && std::none_of(files_.begin(), files_.end(),
                                               [&](const Generation& g) { return g.id == id; });
    if (fresh)
      files_.push_back(Generation{id, fd});
    else
      ::close(fd);
  }
}

void LogWriter::trim_generations() {
  // The current file and `keep` older ones (at least one: the file rotated last, which a
  // follower may still be reading).
  const size_t held = static_cast<size_t>(std::max(options_.keep, 1)) + 1;
  while (files_.size() > held) {
    ::close(files_.front().fd);
    files_.pop_front();
  }
}

std::string LogWriter::format(const std::string& line, uint64_t client,
                              const ValueHash* fields) const {
  if (options_.format == LogOptions::Format::json) {
    cli::Json j = cli::Json::object();
    j["ts"] = log_timestamp();
    j["host"] = host_;
    j["sender"] = hex16(client);
    std::string level = "info";
    ValueHash rest;
    if (fields) {
      rest = *fields;
      if (auto it = rest.find("level"); it != rest.end()) {
        level = *it->second.if_string();  // write_fields checked that it is one
        rest.erase(it);
      }
    }
    j["level"] = level;
    std::string text = line;  // a trailing newline is the line's own end, as in a text log
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    j["line"] = cli::to_json(Value(std::move(text)));
    if (!rest.empty()) j["fields"] = cli::to_json(Value(std::move(rest)));
    return cli::dump(j) + "\n";
  }
  std::string out;
  if (options_.prefix) out = log_timestamp() + " " + hex16(client) + " ";
  std::string text = line;
  if (fields)
    for (const auto& [k, v] : *fields) text += " " + k + "=" + field_text(v);
  // One line per write: embedded newlines would split it, so they are escaped.
  for (char c : text) {
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

void LogWriter::append_and_answer(std::string text, Deferred reply, Value answer) {
  if (options_.sync == LogOptions::Sync::always) {
    append(std::move(text), [reply, answer = std::move(answer)] { reply.resolve(answer); });
  } else {
    append(std::move(text), {});
    reply.resolve(std::move(answer));  // received and in order; on disk within the sync policy
  }
}

void LogWriter::write(const std::string& line, Deferred reply) {
  append_and_answer(format(line, reply.client_id()), reply, Value(true));
}

void LogWriter::write_fields(const std::string& line, const ValueHash& fields, Deferred reply) {
  if (auto it = fields.find("level"); it != fields.end() && !it->second.if_string())
    throw Error(
        Errc::invalid_argument,
        "write_fields: \"level\" is a string (such as \"warn\"), not " + it->second.to_string());
  append_and_answer(format(line, reply.client_id(), &fields), reply, Value(true));
}

void LogWriter::write_many(const ValueArray& lines, Deferred reply) {
  std::string text;
  for (const Value& l : lines) text += format(l.as<std::string>(), reply.client_id());
  append_and_answer(std::move(text), reply, Value(static_cast<int64_t>(lines.size())));
}

void LogWriter::rotate_locked() {
  // The old file stays open (a generation followers finish), whatever it is called now.
  ::fsync(fd_);
  if (options_.keep <= 0) ::unlink(path_.c_str());
  for (int i = options_.keep; i >= 1; --i) {
    const std::string from = i == 1 ? path_ : path_ + "." + std::to_string(i - 1);
    const std::string to = path_ + "." + std::to_string(i);
    std::rename(from.c_str(), to.c_str());
  }
  remove_past_keep_bytes();
  open_file();
}

void LogWriter::remove_past_keep_bytes() {
  if (options_.keep_bytes <= 0) return;
  // Newest first: once the total passes the bound, that file and every older one go.
  int64_t total = 0;
  for (int i = 1; i <= options_.keep; ++i) {
    const std::string p = path_ + "." + std::to_string(i);
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    total += st.st_size;
    if (i > 1 && total > options_.keep_bytes) ::unlink(p.c_str());
  }
}

void LogWriter::reopen() {
  wait_written();  // as rotate: every line written before the signal lands in the old file
  std::lock_guard<std::mutex> io(io_mu_);
  const int old = fd_;
  open_file();  // on failure nothing changed
  // A new file: the old one becomes an older generation, still open for its followers.
  if (fd_ != old) ::fdatasync(old);
}

void LogWriter::wait_written() {
  // Not only an empty buffer: the writer may have taken the last chunk and not yet written it
  // (it takes io_mu_ after it lets go of mu_), and then a rotation would land it in the new file.
  std::unique_lock<std::mutex> lock(mu_);
  cv_.notify_all();
  written_cv_.wait_for(lock, std::chrono::seconds(1),
                       [&] { return (buffer_.empty() && !writing_) || stopping_; });
}

bool LogWriter::rotate() {
  wait_written();  // so that no line straddles the rotation
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
      writing_ = !chunk.empty();
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
      acks.clear();  // those lines are not acknowledged
    }
    if (!chunk.empty()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        writing_ = false;
      }
      written_cv_.notify_all();
    }
    for (auto& a : acks) a();
    answer_followers(reread || !chunk.empty());
    if (reread || !chunk.empty()) push_subscribers();
  }
  std::lock_guard<std::mutex> io(io_mu_);
  ::fdatasync(fd_);
}

LogWriter::Position LogWriter::position_of(const Value& v) {
  if (const int64_t* offset = v.if_int()) return Position{{}, *offset};
  if (const ValueHash* h = v.if_hash()) {
    const auto g = h->find("generation");
    const auto o = h->find("offset");
    if (h->size() == 2 && g != h->end() && o != h->end() && g->second.if_int() &&
        o->second.if_int())
      return Position{*g->second.if_int(), *o->second.if_int()};
  }
  throw Error(Errc::invalid_argument,
              "a log position is a byte offset or {\"generation\": G, \"offset\": N} (from a "
              "reply's \"generation\" and \"next\"), not " +
                  v.to_string());
}

Value LogWriter::read(const Position& at, int64_t max_lines) {
  std::lock_guard<std::mutex> io(io_mu_);
  return read_locked(at, max_lines);
}

Value LogWriter::read_locked(const Position& at, int64_t max_lines) {
  size_t idx = files_.size() - 1;
  int64_t offset = std::max<int64_t>(at.offset, 0);
  bool skipped = false;
  if (at.generation) {
    const auto it = std::find_if(files_.begin(), files_.end(),
                                 [&](const Generation& g) { return g.id == *at.generation; });
    if (it == files_.end()) {
      // Gone (past what is kept, or moved away before a restart): the oldest file held is the
      // first whose lines the follower cannot have had.
      idx = 0;
      offset = 0;
      skipped = true;
    } else {
      idx = static_cast<size_t>(it - files_.begin());
    }
  }
  ValueArray lines;
  int64_t truncated = 0;
  for (;;) {
    const int fd = files_[idx].fd;
    struct stat st {};
    // Past the end of a file named by its generation: emptied in place (copytruncate).
    if (at.generation && ::fstat(fd, &st) == 0 && offset > st.st_size) offset = 0;
    offset = read_lines(fd, offset, max_lines, lines, truncated);
    // An older file with no whole line left is finished: nothing more is written to it (the
    // writer moved on under io_mu_, which we hold). A plain offset stays in the current file.
    if (!lines.empty() || !at.generation || idx + 1 >= files_.size()) break;
    ++idx;
    offset = 0;
  }
  Value out;
  out.set("lines", Value(std::move(lines)));
  out.set("next", offset);
  out.set("generation", files_[idx].id);
  if (truncated > 0) out.set("truncated", truncated);
  if (skipped) out.set("skipped", true);
  return out;
}

int64_t LogWriter::read_lines(int fd, int64_t offset, int64_t max_lines, ValueArray& lines,
                              int64_t& truncated) const {
  // Reads block by block until max_lines whole lines, or max_read_bytes of them, or the end of
  // what is written. A line longer than a block is read on to its end, never dropped (a line cut
  // at a block's end would otherwise hide every later line).
  constexpr size_t kBlock = 64 << 10;
  constexpr int64_t kPerLine = 16;  // a string's framing in the reply
  const int64_t cap = std::max<int64_t>(options_.max_read_bytes - kPerLine, 1);
  int64_t at = std::max<int64_t>(offset, 0);
  int64_t budget = cap + kPerLine;
  std::string block(kBlock, '\0');
  std::string partial;     // the start of a line whose end is not read yet
  int64_t line_bytes = 0;  // that line's length so far (partial holds at most cap of it)
  int64_t file_at = at;
  bool done = false;
  while (!done && static_cast<int64_t>(lines.size()) < max_lines) {
    ssize_t n;
    do {
      n = ::pread(fd, block.data(), kBlock, file_at);
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
  return at;
}

void LogWriter::follow(const Position& at, int64_t max_lines, int64_t timeout_ms, Deferred reply) {
  Value now = read(at, max_lines);
  if (!now["lines"].if_array()->empty() || timeout_ms <= 0) {
    reply.resolve(now);
    return;
  }
  // Parked where the read ended: past the older files it finished, if it named a generation.
  const Position parked =
      at.generation ? Position{now["generation"].as<int64_t>(), now["next"].as<int64_t>()} : at;
  {
    std::lock_guard<std::mutex> lock(mu_);
    followers_.push_back(
        Follower{parked, max_lines,
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
    Value got = reread || expired ? read(f.at, f.max_lines) : Value();
    if (got.is_null() || (got["lines"].if_array()->empty() && !expired)) {
      still.push_back(std::move(f));
    } else {
      f.reply.resolve(got);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& f : still) followers_.push_back(std::move(f));
}

int64_t LogWriter::subscribe(const Position& at, const Value& callback) {
  Proxy cb = push_target(callback, "subscribe",
                         "it is called with {\"lines\", \"next\", \"generation\"} as follow "
                         "answers");
  // A plain offset is in the current file: named by its generation from here on, so the
  // subscription follows the log across rotations.
  Position start = at;
  start.offset = std::max<int64_t>(start.offset, 0);
  if (!start.generation) {
    std::lock_guard<std::mutex> io(io_mu_);
    start.generation = files_.back().id;
  }
  int64_t token;
  {
    std::lock_guard<std::mutex> lock(mu_);
    token = next_token_++;
    subscribers_.push_back(Subscriber{token, std::move(cb), start});
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
  std::vector<std::pair<int64_t, Position>> due;  // token, position
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Subscriber& s : subscribers_)
      if (!s.in_flight) due.emplace_back(s.token, s.at);
  }
  for (const auto& entry : due) {
    const int64_t token = entry.first;  // captured below, which clang 14 refuses for a binding
    Value got = read(entry.second, 1000);
    if (got["lines"].if_array()->empty()) continue;
    std::optional<Proxy> cb;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = std::find_if(subscribers_.begin(), subscribers_.end(),
                             [&](const Subscriber& s) { return s.token == token; });
      if (it == subscribers_.end()) continue;  // unsubscribed meanwhile
      it->in_flight = true;
      it->at = Position{got["generation"].as<int64_t>(), got["next"].as<int64_t>()};
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
      .method("write_fields", [](LogWriter& l, std::string line, ValueHash fields,
                                 Deferred d) { l.write_fields(line, fields, d); })
      .method("rotate", [](LogWriter& l) { return l.rotate(); })
      .method("read", [](LogWriter& l, Value at,
                         int64_t max_lines) { return l.read(position_of(at), max_lines); })
      .method("follow", [](LogWriter& l, Value at, int64_t timeout_ms,
                           Deferred d) { l.follow(position_of(at), 1000, timeout_ms, d); })
      .method("subscribe", [](LogWriter& l, Value at,
                              Value callback) { return l.subscribe(position_of(at), callback); })
      .method("unsubscribe", [](LogWriter& l, int64_t token) { return l.unsubscribe(token); })
      .method("size", [](LogWriter& l) { return l.size(); })
      .method("path", [](LogWriter& l) { return l.path(); });
}

}  // namespace patro::worker
