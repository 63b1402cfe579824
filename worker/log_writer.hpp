// A log writer: many clients append lines into one file. Each line lands whole, in the order the
// writer received it (one writer thread, one buffer). Text lines, optionally prefixed with the
// time and the sender, or JSON lines (one object per line: ts, host, sender, level, line, fields).
// Rotation on request and on size. A sync policy the reply honours: under "always" a line is
// acknowledged only once fdatasync has covered it (group commit: one sync for all lines queued
// behind it); "interval" syncs every N ms; "never" leaves it to the kernel.
//
// Each file the writer has written to is a generation, named by a random number kept in the file's
// extended attribute user.patro.generation (which a rename keeps and a restart reads again; the
// inode number where the file system keeps no such attribute). A read or follow position names the
// generation as well as the byte offset, so a follower survives a rotation (rotate, or mv +
// SIGHUP): it finishes the old file (still open here, whatever it is called now) and goes on at
// the new one's start, whole lines only. The writer keeps the current file and up to `keep` older
// ones open.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
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
  bool prefix = false;  // "2026-11-21T12:00:00.123Z 1a2b3c4d5e6f7081 " before each line
  // text: the line as written (write_fields appends " key=value" pairs); json: one object per
  // line, {"ts", "host", "sender", "level", "line"} and "fields" from write_fields.
  enum class Format { text, json };
  Format format = Format::text;
  int64_t rotate_bytes = 0;  // rotate when the file would grow past this; 0: never
  // Rotated files kept: PATH.1 .. PATH.keep (0: none; a follower still finishes the one file
  // rotated last, held open). Also how many older generations stay open for followers.
  int keep = 5;
  // And at most this many bytes of them (0: no bound by bytes): after a rotation the oldest
  // rotated files are removed until the rest total at most this; PATH.1, the file just rotated,
  // always stays (else a rotation would remove what it rotated).
  int64_t keep_bytes = 0;
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
  /// A line with fields (a hash): in a JSON log they are the object's "fields", and a string
  /// "level" among them is its "level" (else "info"); in a text log they follow the line as
  /// key=value pairs. Throws Error (invalid_argument) for a "level" that is not a string.
  void write_fields(const std::string& line, const ValueHash& fields, Deferred reply);
  /// Rotates now: PATH becomes PATH.1 (older ones shift up), a new PATH starts.
  bool rotate();
  /// Reopens PATH by name (SIGHUP after logrotate moved the file away): lines written from now
  /// on go to the file now at PATH, created if missing. Throws Error if it cannot be opened (the
  /// old file is kept).
  void reopen();
  /// Where a read starts: a byte offset in the file of a generation; no generation (a plain
  /// offset, as older clients send): the current file, which it never leaves.
  struct Position {
    std::optional<int64_t> generation;
    int64_t offset = 0;
  };
  /// A position as a client sends it: an integer offset, or {"generation": G, "offset": N}.
  /// Throws Error (invalid_argument) for anything else.
  static Position position_of(const Value& v);
  /// {"lines": [...], "next": offset, "generation": G} from the position (what is written so far):
  /// whole lines only, at most max_lines and max_read_bytes of them, at least one if there is one.
  /// With a generation, a file that has no whole line left after the offset and is no longer the
  /// current one is finished: the read goes on at the next generation's start (an offset past a
  /// file's end, where copytruncate emptied it, starts it again from 0). A generation no longer
  /// held starts the oldest held from 0, with "skipped": true (lines may be missing).
  Value read(const Position& at, int64_t max_lines);
  Value read(int64_t offset, int64_t max_lines) { return read(Position{{}, offset}, max_lines); }
  /// As read, but waits up to timeout_ms for a line past the position; answers with no lines when
  /// timeout_ms passes without one.
  void follow(const Position& at, int64_t max_lines, int64_t timeout_ms, Deferred reply);
  /// Server push: follow without asking again. callback, a client's patro::Code, is called with
  /// what follow answers ({"lines", "next", "generation"}) each time lines past the position are
  /// written, one call at a time (the next once it has answered), across rotations. Answers the
  /// subscription's token. It ends by unsubscribe(token) or at a push that fails (its client is
  /// gone).
  int64_t subscribe(const Position& at, const Value& callback);
  bool unsubscribe(int64_t token);
  int64_t size();
  const std::string& path() const noexcept { return path_; }

 private:
  // A file written to, open for reading (the current one: for writing too).
  struct Generation {
    int64_t id;  // see generation_of in the source
    int fd;
  };
  struct Follower {
    Position at;
    int64_t max_lines;
    std::chrono::steady_clock::time_point deadline;
    Deferred reply;
  };
  struct Subscriber {
    int64_t token;
    Proxy callback;
    Position at;
    bool in_flight = false;  // a push not yet answered
  };
  /// Pushes what is new to each subscriber with no push in flight (the writer thread).
  void push_subscribers();
  /// A push answered: ok, the subscriber may have the next; otherwise it is dropped.
  void pushed(int64_t token, const std::string& failure);
  std::string format(const std::string& line, uint64_t client,
                     const ValueHash* fields = nullptr) const;
  // Acknowledges once on disk under sync "always", else at once.
  void append_and_answer(std::string text, Deferred reply, Value answer);
  void append(std::string text, std::function<void()> done);
  void writer_main();
  // Opens PATH (created if missing) as the current generation; requires io_mu_ (or the
  // constructor). Throws Error if it cannot be opened.
  void open_file();
  // Opens PATH.keep .. PATH.1 as the older generations, where they exist (a restart after
  // rotations: followers from before it finish them).
  void open_rotated();
  // Closes the oldest generations beyond what is kept open; requires io_mu_.
  void trim_generations();
  void rotate_locked();  // requires io_mu_
  // Removes the oldest rotated files past options_.keep_bytes (PATH.1 stays).
  void remove_past_keep_bytes();
  // Waits (up to a second) until the writer has written every line appended so far.
  void wait_written();
  // Answers followers that have lines (re-reading only when reread) or whose deadline passed.
  void answer_followers(bool reread);
  Value read_locked(const Position& at, int64_t max_lines);  // requires io_mu_
  // Whole lines of fd from offset (see read): appends them to lines; answers the offset after
  // the last one and adds to truncated the lines cut to max_read_bytes.
  int64_t read_lines(int fd, int64_t offset, int64_t max_lines, ValueArray& lines,
                     int64_t& truncated) const;

  const std::string path_;
  const LogOptions options_;
  const std::string host_;  // this host's name, in JSON lines
  std::mutex mu_;           // the buffer and the followers
  std::condition_variable cv_;
  std::condition_variable written_cv_;  // the writer wrote what it took from the buffer
  std::string buffer_;
  std::vector<std::function<void()>> acks_;  // answered after the buffer is written (and synced)
  std::deque<Follower> followers_;
  bool new_followers_ = false;  // the writer thread has not looked at every follower yet
  std::vector<Subscriber> subscribers_;
  int64_t next_token_ = 1;
  std::shared_ptr<PushGuard<LogWriter>> alive_ = std::make_shared<PushGuard<LogWriter>>(this);
  bool stopping_ = false;
  bool writing_ = false;  // the writer took a chunk from the buffer and has not written it yet
  std::mutex io_mu_;      // the file
  int fd_ = -1;           // the current generation's (files_.back().fd)
  std::deque<Generation> files_;  // oldest first; the last is the current file
  int64_t written_ = 0;
  std::thread writer_;
};

}  // namespace patro::worker
