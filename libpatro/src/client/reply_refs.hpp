// The references a reply brings. The server counts each one once for the client that it sent the
// reply to, and the client lets go of each once (a Release): so a reply's references are held once
// however many times it is read (a Future may be read again, and called on once answered), and a
// reply that nobody ever reads (a Future dropped unread) lets go of them at its slot's end instead
// of leaving them to the server until the client disconnects.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include <zmq.hpp>

#include "patro/export.hpp"
#include "patro/options.hpp"

namespace patro::detail {

class ReleaseQueue;

/// What a connection's slots share to let go of an unread reply's references.
class ReplyRelease {
 public:
  virtual ~ReplyRelease() = default;
  /// Queues a release of each reference in the parts of reply named (its results, its changed
  /// arguments) when it is an OK reply. Never throws (it runs as a slot ends).
  virtual void release_unread(const zmq::message_t& reply, bool results,
                              bool changed) const noexcept = 0;
};
/// Releases into queue (the connection's, shared with every hold it made), reading replies by
/// limits.
PATRO_PRIVATE std::shared_ptr<const ReplyRelease> reply_release(std::shared_ptr<ReleaseQueue> queue,
                                                                const Limits& limits);

/// The holds of one part of a reply, made the first time it is read and shared by every reading
/// after: the n-th reference read is held by the n-th hold.
class ReplyHolds {
 public:
  /// Starts a reading.
  void start() noexcept { next_ = 0; }
  /// The hold of the next reference of this reading; make() makes it where none was made yet.
  template <class Make>
  std::shared_ptr<const void> next(Make make) {
    if (next_ == holds_.size()) holds_.push_back(make());
    return holds_[next_++];
  }
  /// A reading ended (done or failed): its references are held now, not released at the end.
  void read() noexcept { read_ = true; }
  bool was_read() const noexcept { return read_; }

 private:
  std::vector<std::shared_ptr<const void>> holds_;
  size_t next_ = 0;
  bool read_ = false;
};

}  // namespace patro::detail
