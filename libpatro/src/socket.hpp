// Sending and receiving multipart ZeroMQ messages. The one place where messages cross between
// threads through libzmq, which ThreadSanitizer cannot see into: annotated here, once.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <optional>
#include <vector>

namespace patro::detail {

using Multipart = std::vector<zmq::message_t>;

/// Receives one whole multipart message. With dontwait, false when none is queued.
/// Throws zmq::error_t for socket errors other than EAGAIN/EINTR.
bool recv_multipart(zmq::socket_t& s, Multipart& out, bool dontwait = false);

/// Sends the frames (moved out). Returns false if the message could not be queued (peer gone
/// with ZMQ_ROUTER_MANDATORY, or would block with dontwait).
bool send_multipart(zmq::socket_t& s, Multipart& frames, bool dontwait = true);

/// Polls one socket for input for up to timeout; true if a message is ready.
bool poll_in(zmq::socket_t& s, std::chrono::milliseconds timeout);

}  // namespace patro::detail
