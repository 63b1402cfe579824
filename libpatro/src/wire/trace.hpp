// The wire trace (PATRO_DEBUG=1, or the log level trace): clients and servers log every request and
// reply they send or take, one line each, as RMI_DEBUG=1 shows every message of a conversation.
// This is the rendering both sides share, so that a client's line and its server's line for the
// same request read alike; the format is README's "Wire trace". Nothing here runs unless
// wire_trace() (base/log.hpp) is true: the request path pays one branch when the trace is off.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "patro/options.hpp"

#include "reply_generated.h"
#include "request_generated.h"

namespace patro::detail {

/// How many characters of arguments, results or error text a trace line shows; longer ones are
/// cut and end in "...".
inline constexpr size_t kTraceWidth = 80;

/// What a request asks: "OP[ NAME] obj=OBJECT path=PATH" (OBJECT: 32 hex digits, the server's
/// id then the object's; PATH: ["key"][1]..., or - for the object itself). NAME and PATH are cut
/// at kTraceWidth characters.
std::string trace_target(const wire::Request& r);
/// Its arguments: "args=[...]", rendered like JSON (references as TYPE(OBJECT)PATH, a copied
/// scalar as \VALUE), at most kTraceWidth characters.
std::string trace_args(const wire::Request& r);
/// A reply's outcome and how long it took: "ok 0.123ms result=[...]", or "CODE 0.123ms
/// error=\"text\"" (CODE: the error's Errc name). An acknowledgement of a batch of oneway calls:
/// "ok 0.123ms failed=N" (and "first=\"text\"" when some failed).
/// Without took (a reply made after its request was taken), no time.
std::string trace_outcome(const wire::Reply* reply, std::optional<std::chrono::nanoseconds> took,
                          bool batch = false);
/// The same from a reply body, verified first (a bad one reads "bad_message").
std::string trace_outcome(const zmq::message_t& body, const Limits& limits,
                          std::optional<std::chrono::nanoseconds> took, bool batch = false);
/// A failure known by its text ("code: message", as patro::Error::what() reads): "CODE 0.123ms
/// error=\"message\"" (CODE: "error" when the text starts with no code's name).
std::string trace_failure(std::string_view text, std::chrono::nanoseconds took);
/// "0.123ms".
std::string trace_duration(std::chrono::nanoseconds took);
/// A client id (16 hex digits).
std::string trace_id(uint64_t id);

}  // namespace patro::detail
