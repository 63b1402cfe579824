// Sending and receiving multipart ZeroMQ messages. The one place where messages cross between
// threads through libzmq, which ThreadSanitizer cannot see into: annotated here, once.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "patro/options.hpp"

namespace patro::detail {

using Multipart = std::vector<zmq::message_t>;

/// Every socket Patro opens is made here, with the limits applied: high-water marks, the largest
/// frame (Limits::socket_message_cap), linger 0 (closing paths set Limits::close_linger where a
/// last message matters), and ZMQ_ROUTER_MANDATORY on routers so a dead peer is seen.
zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type, const Limits& limits);

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

/// Polls one socket for input for up to timeout; true if a message is ready.
bool poll_in(zmq::socket_t& s, std::chrono::milliseconds timeout);

}  // namespace patro::detail
