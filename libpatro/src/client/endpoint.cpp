#include "endpoint.hpp"

#include <zmq.h>

#include <cerrno>
#include <charconv>

namespace patro::detail {

std::optional<std::string> endpoint_problem(const std::string& endpoint) {
  const auto sep = endpoint.find("://");
  if (sep == std::string::npos || sep == 0) return "it names no transport";
  const std::string transport = endpoint.substr(0, sep);
  const std::string address = endpoint.substr(sep + 3);
  if (transport == "inproc")
    return "inproc:// reaches sockets of this process's own ZeroMQ context, never a broker";
  if (transport == "tcp") {
    const auto colon = address.rfind(':');
    const std::string host = colon == std::string::npos ? "" : address.substr(0, colon);
    const std::string port = colon == std::string::npos ? "" : address.substr(colon + 1);
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() ||
        value == 0 || value > 65535)
      return "a tcp endpoint is tcp://HOST:PORT, with a port from 1 to 65535";
    if (host == "*") return "tcp://*:PORT is for binding; a client names the broker's host";
  }
  return std::nullopt;
}

bool is_usage_errno(int error_number) {
  return error_number == EINVAL || error_number == EPROTONOSUPPORT ||
         error_number == ENAMETOOLONG || error_number == ENOCOMPATPROTO;
}

std::string bad_endpoint(const std::string& endpoint, const std::string& why) {
  return "'" + endpoint + "' is not a broker endpoint: " + why +
         " (one looks like tcp://HOST:PORT or ipc:///PATH)";
}

}  // namespace patro::detail
