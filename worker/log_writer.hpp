// A log writer: many clients append lines into one file. Each line lands whole, in the order the
// writer received it (one writer thread, one buffer). Optional prefix with the time and the
// sender. Rotation on request and on size. A sync policy the reply honours: under "always" a
// line is acknowledged only once fdatasync has covered it (group commit: one sync for all lines
// queued behind it); "interval" syncs every N ms; "never" leaves it to the kernel.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "push.hpp"

namespace patro::worker {

struct LogOptions {
  enum class Sync { always, interval, never };
  Sync sync = Sync::never;
  std::chrono::milliseconds sync_interval{100};
  bool prefix = false;       // "2026-11-21T12:00:00.123Z 1a2b3c4d5e6f7081 " before each line
  int64_t rotate_bytes = 0;  // rotate when the file would grow past this; 0: never
  int keep = 5;              // rotated files kept: PATH.1 .. PATH.keep
  // The most bytes of lines one read or follow reply carries: the reply must fit the message
  // limit (Limits::max_message_size), less room for its framing (about 270 bytes). A line longer
  // than this comes back cut to it, counted in "truncated": one written by something else, or
  // one within a few hundred bytes of the limit (a write request's framing is a little smaller
  // than a read reply's).
  int64_t max_read_bytes = static_cast<int64_t>(Limits{}.max_message_size) - 512;
};

class LogWriter {
 public:
  LogWriter(std::string path, LogOptions options);
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  static void register_class();

  void write(const std::string& line, Deferred reply);
  void write_many(const ValueArray& lines, Deferred reply);
  /// Rotates now: PATH becomes PATH.1 (older ones shift up), a new PATH starts.
  bool rotate();
  /// Reopens PATH by name (SIGHUP after logrotate moved the file away): lines written from now
  /// on go to the file now at PATH, created if missing. Throws Error if it cannot be opened (the
  /// old file is kept).
  void reopen();
  /// {"lines": [...], "next": offset} from offset in the current file (what is written so far):
  /// whole lines only, at most max_lines and max_read_bytes of them, at least one if there is one.
  Value read(int64_t offset, int64_t max_lines);
  /// As read, but waits up to timeout_ms for a line past offset; answers with no lines when
  /// timeout_ms passes without one.
  void follow(int64_t offset, int64_t max_lines, int64_t timeout_ms, Deferred reply);
  /// Server push: follow without asking again. callback, a client's patro::Code, is called with
  /// what follow answers ({"lines", "next"}) each time lines past offset are written, one call at a
  /// time (the next once it has answered). Answers the subscription's token. It ends by
  /// unsubscribe(token) or at a push that fails (its client is gone).
  int64_t subscribe(int64_t offset, const Value& callback);
  bool unsubscribe(int64_t token);
  int64_t size();
  const std::string& path() const noexcept { return path_; }

 private:
  struct Follower {
    int64_t offset, max_lines;
    std::chrono::steady_clock::time_point deadline;
    Deferred reply;
  };
  struct Subscriber {
    int64_t token;
    Proxy callback;
    int64_t offset;
    bool in_flight = false;  // a push not yet answered
  };
  /// Pushes what is new to each subscriber with no push in flight (the writer thread).
  void push_subscribers();
  /// A push answered: ok, the subscriber may have the next; otherwise it is dropped.
  void pushed(int64_t token, const std::string& failure);
  std::string format(const std::string& line, uint64_t client) const;
  void append(std::string text, std::function<void()> done);
  void writer_main();
  void open_file();
  void rotate_locked();  // requires io_mu_
  // Answers followers that have lines (re-reading only when reread) or whose deadline passed.
  void answer_followers(bool reread);
  Value read_locked(int64_t offset, int64_t max_lines);  // requires io_mu_

  const std::string path_;
  const LogOptions options_;
  std::mutex mu_;  // the buffer and the followers
  std::condition_variable cv_;
  std::string buffer_;
  std::vector<std::function<void()>> acks_;  // answered after the buffer is written (and synced)
  std::deque<Follower> followers_;
  bool new_followers_ = false;  // the writer thread has not looked at every follower yet
  std::vector<Subscriber> subscribers_;
  int64_t next_token_ = 1;
  std::shared_ptr<PushGuard<LogWriter>> alive_ = std::make_shared<PushGuard<LogWriter>>(this);
  bool stopping_ = false;
  std::mutex io_mu_;  // the file
  int fd_ = -1;
  int64_t written_ = 0;
  std::thread writer_;
};

}  // namespace patro::worker
