// Whether a string can be a broker's client endpoint: a usage error is told at once
// (Errc::invalid_argument), not after the connect timeout as an unreachable broker. The Python
// client's endpoint_problem() checks the same.
#pragma once

#include <optional>
#include <string>

namespace patro::detail {

/// Why endpoint cannot be a broker's client endpoint, or nullopt: no transport ("nonsense"), a
/// tcp endpoint without a host and a port from 1 to 65535, tcp://*:PORT (binding's spelling), an
/// inproc endpoint (only sockets of this process's own ZeroMQ context answer there). ZeroMQ's
/// connect refuses the rest of what cannot work (an unknown transport, an ipc path too long) at
/// once too: is_usage_errno() tells those.
std::optional<std::string> endpoint_problem(const std::string& endpoint);

/// zmq_connect's errors that no retry or wait can cure (EINVAL, EPROTONOSUPPORT, ENAMETOOLONG,
/// ENOCOMPATPROTO).
bool is_usage_errno(int error_number);

/// The error for a broker endpoint that cannot work: "'E' is not a broker endpoint: why (one
/// looks like tcp://HOST:PORT or ipc:///PATH)".
std::string bad_endpoint(const std::string& endpoint, const std::string& why);

}  // namespace patro::detail
