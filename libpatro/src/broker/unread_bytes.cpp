#include "unread_bytes.hpp"

#include <linux/tcp.h>
#include <netinet/in.h>

#include <cstring>

namespace patro::detail {

size_t zmtp_frame_bytes(size_t payload, bool curve) noexcept {
  // CURVE: "\x07MESSAGE", an 8-byte nonce, a 16-byte MAC and a flags byte around the payload,
  // sent as a command frame. A frame's header: a flags byte and a 1-byte size up to 255, else an
  // 8-byte size.
  const size_t body = curve ? payload + 33 : payload;
  return body + (body <= 255 ? 2 : 9);
}

void UnreadBytes::seen_on(int fd) noexcept {
  if (fd == fd_) return;
  fd_ = fd;
  sent_ = acked_ = 0;
  peer_len_ = sizeof peer_;
  tcp_ = fd >= 0 && ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer_), &peer_len_) == 0 &&
         (peer_.ss_family == AF_INET || peer_.ss_family == AF_INET6);
  if (!tcp_) return;
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) tcp_ = false;
  // What the connection carried before our count began (its handshake, earlier messages).
  sent_ = acked_ = tcp_ ? info.tcpi_bytes_acked : 0;
}

void UnreadBytes::sent(const Multipart& m, size_t first, bool curve) noexcept {
  if (!tcp_) return;
  for (size_t i = first; i < m.size(); ++i) sent_ += zmtp_frame_bytes(m[i].size(), curve);
}

bool UnreadBytes::same_peer() const noexcept {
  sockaddr_storage now{};
  socklen_t len = sizeof now;
  return ::getpeername(fd_, reinterpret_cast<sockaddr*>(&now), &len) == 0 && len == peer_len_ &&
         std::memcmp(&now, &peer_, len) == 0;
}

bool UnreadBytes::refresh() noexcept {
  if (!tcp_) return false;
  tcp_info info{};
  socklen_t len = sizeof info;
  if (!same_peer() || ::getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
      info.tcpi_bytes_acked < acked_) {
    // Not our connection any more: nothing is known to be queued for the client now.
    tcp_ = false;
    sent_ = acked_ = 0;
    fd_ = -1;
    return false;
  }
  acked_ = info.tcpi_bytes_acked;
  return true;
}

bool UnreadBytes::over(uint64_t budget) noexcept {
  if (unread() <= budget) return false;
  return refresh() && unread() > budget;
}

}  // namespace patro::detail
