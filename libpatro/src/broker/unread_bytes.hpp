// What the broker has sent one client and the client's TCP has not yet acknowledged: replies
// waiting in libzmq's queue for that peer and in the kernel's send buffer
// (BrokerOptions::max_client_unread). libzmq 4.3 shows no queue's fill, so the count is ours:
// every byte we hand libzmq for the client's connection, framed as ZMTP 3 frames it (and boxed as
// CURVE's MESSAGE command boxes it), less what the kernel reports acknowledged on that connection
// (TCP_INFO's tcpi_bytes_acked). The kernel is asked only when our count alone passes the budget.
// What a peer's TCP acknowledged has left the broker, whatever the peer does with it, so a client
// cannot talk its way past the budget. Off TCP (ipc://) nothing is counted.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

#include "socket.hpp"

namespace patro::detail {

/// The bytes one ZMTP 3 frame of `payload` bytes takes on the wire, boxed under CURVE.
size_t zmtp_frame_bytes(size_t payload, bool curve) noexcept;

class UnreadBytes {
 public:
  /// A message from the client came through the connection `fd` (ZMQ_SRCFD; -1: unknown). A new
  /// connection starts the count again: what was queued for the old one went with it.
  void seen_on(int fd) noexcept;
  /// A message goes to the client: frames [first, end) of m (the routing frame excluded).
  void sent(const Multipart& m, size_t first, bool curve) noexcept;
  /// Whether more than `budget` bytes sent to the client are not yet acknowledged by its TCP.
  bool over(uint64_t budget) noexcept;
  /// Sent and not acknowledged, as last known (0 off TCP).
  uint64_t unread() const noexcept { return sent_ > acked_ ? sent_ - acked_ : 0; }

 private:
  // Asks the kernel what the connection acknowledged; false off TCP. A descriptor that now
  // serves another connection (libzmq closed ours and reused the number) starts the count again.
  bool refresh() noexcept;
  bool same_peer() const noexcept;

  int fd_ = -1;
  bool tcp_ = false;
  sockaddr_storage peer_{};
  socklen_t peer_len_ = 0;
  uint64_t sent_ = 0;   // on this connection, by our count
  uint64_t acked_ = 0;  // by the kernel's, when last asked
};

}  // namespace patro::detail
