// Sending and receiving multipart ZeroMQ messages. The one place where messages cross between
// threads through libzmq, which ThreadSanitizer cannot see into: annotated here, once.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "patro/options.hpp"

namespace patro::detail {

using Multipart = std::vector<zmq::message_t>;

/// The size of the routing ids make_socket gives DEALERs: a leading 'p' (a ZeroMQ generated id
/// starts with a zero byte, a lane's routing markers with 0xff) and 8 random bytes.
inline constexpr size_t kRoutingIdSize = 9;

/// Every socket Patro opens is made here, with the limits applied: high-water marks, the largest
/// frame (Limits::socket_message_cap), linger 0 (closing paths set Limits::close_linger where a
/// last message matters), and ZMQ_ROUTER_MANDATORY on routers so a dead peer is seen.
///
/// A DEALER gets a routing id of its own: 'p' and 8 random bytes (kRoutingIdSize). The ids a
/// ROUTER generates are not unique across processes: libzmq draws them from rand() unseeded, so
/// every broker process hands out the same sequence, in the order peers connect. A reply routed
/// by a broker's id before it restarted then reached whichever client the restarted broker gave
/// that id, and a client waiting on the same request id took it as its own (a call answered
/// without running). Routers take over an id on reconnection (ZMQ_ROUTER_HANDOVER), so a peer
/// whose TCP connection broke and came back is not refused while its old pipe lingers.
zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, const Limits& limits);

/// CURVE on a socket made by make_socket, before it binds or connects.
/// The serving side (the broker's ports): its key pair, and the ZAP domain its handler checks.
void set_curve_server(zmq::socket_t& s, const CurveKeyPair& keys, const std::string& zap_domain);
/// A ZAP request (RFC 27: [version][request id][domain][address][identity][mechanism]
/// [credentials...]), for the handlers that answer libzmq on inproc://zeromq.zap.01: the CURVE
/// client key it carries, as Z85 (empty if none), and its answer on the handler's REP socket
/// (200 with `user` as the connection's User-Id when ok, 400 with `text` otherwise).
std::string zap_curve_key(const Multipart& request);
void zap_answer(zmq::socket_t& rep, Multipart& request, bool ok, const std::string& text,
                const std::string& user);
/// The connecting side: the broker's public key and this side's pair (options.enabled() only).
void set_curve_client(zmq::socket_t& s, const CurveOptions& options, const CurveKeyPair& keys);
/// The CURVE settings a connecting side uses: the broker key given, else $PATRO_BROKER_KEY's (Z85
/// or a file); with one, the key pair given, else $PATRO_CURVE_KEY's, else a fresh one.
CurveOptions resolve_curve(const CurveOptions& options);

/// A PAIR socket that receives s's events (a ZeroMQ socket monitor for the ZMQ_EVENT_* bits in
/// events). Throws Error (os_failure) if libzmq refuses. The monitor runs until
/// zmq_socket_monitor(s, nullptr, 0) or s closes.
zmq::socket_t monitor_socket(zmq::context_t& ctx, zmq::socket_t& s, int events);

/// Watches the handshake of one connecting socket with its peer (a ZeroMQ socket monitor), so a
/// refused key or a mismatched mechanism is a clear error at once rather than a silent timeout.
/// Made before the socket connects; wait() after. The socket must outlive the watch.
class HandshakeWatch {
 public:
  HandshakeWatch(zmq::context_t& ctx, zmq::socket_t& s);
  ~HandshakeWatch();
  HandshakeWatch(const HandshakeWatch&) = delete;
  HandshakeWatch& operator=(const HandshakeWatch&) = delete;
  /// Waits up to timeout for the handshake to end. Empty: it succeeded (or nothing was heard in
  /// time: the caller's own timeout then tells). Otherwise why it failed, for an error message.
  std::optional<std::string> wait(std::chrono::milliseconds timeout, bool curve);

 private:
  zmq::socket_t* watched_;
  zmq::socket_t events_;
};

/// Watches a connected socket for a lost connection (its peer closed or reset it, as the kernel
/// does for a killed process), so a client with several brokers moves on at once rather than
/// after the heartbeat window. Poll handle() for input, then ask disconnected(). The socket must
/// outlive the watch.
class DisconnectWatch {
 public:
  DisconnectWatch(zmq::context_t& ctx, zmq::socket_t& s);
  ~DisconnectWatch();
  DisconnectWatch(const DisconnectWatch&) = delete;
  DisconnectWatch& operator=(const DisconnectWatch&) = delete;
  void* handle() noexcept { return events_.handle(); }
  /// Reads the events queued; whether one says the connection was lost.
  bool disconnected();

 private:
  zmq::socket_t* watched_;
  zmq::socket_t events_;
};

/// Receives one whole multipart message. With dontwait, false when none is queued.
/// Throws zmq::error_t for socket errors other than EAGAIN/EINTR.
bool recv_multipart(zmq::socket_t& s, Multipart& out, bool dontwait = false);

/// Sends the frames (moved out). Returns false if the message could not be queued (peer gone
/// with ZMQ_ROUTER_MANDATORY, or would block with dontwait).
bool send_multipart(zmq::socket_t& s, Multipart& frames, bool dontwait = true);

/// ThreadSanitizer cannot see that a request runs after the client sent it, nor that its reply
/// arrives after it ran: the order goes through libzmq and the broker. Where client and server
/// share a process (tests, an embedded broker) the sender marks the message by its request id
/// before sending it, and the receiver takes the mark when it arrives. No-ops without
/// ThreadSanitizer.
void annotate_sent(uint64_t request_id) noexcept;
void annotate_received(uint64_t request_id) noexcept;

/// A metadata property of a received message (zmq_msg_gets: "User-Id", "Socket-Type" ...), copied;
/// empty when the message has none. libzmq's I/O thread wrote that text before it queued the
/// message, a hand-off ThreadSanitizer cannot see in an uninstrumented libzmq: the read is hidden
/// from it here, and no view into the metadata outlives it.
std::string message_property(const zmq::message_t& m, const char* name);

/// Polls one socket for input for up to timeout; true if a message is ready.
bool poll_in(zmq::socket_t& s, std::chrono::milliseconds timeout);

}  // namespace patro::detail
