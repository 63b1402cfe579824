// Prints libpatro's view of the wire's constants as JSON, read by test_wire.py, which compares it
// with the Python client's: the error codes with their names and kinds (errc_name, error_kind),
// the commands a header frame may carry (parse_header, command_name) and every operation's row
// (op_info). It asks the functions the library runs, over every number, not the generated rows.
#include <cstdint>
#include <cstdio>
#include <string>

#include "op_table.hpp"
#include "patro/error.hpp"
#include "wire.hpp"

namespace {

using namespace patro;

const char* kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::failed:
      return "failed";
    case ErrorKind::overloaded:
      return "overloaded";
    case ErrorKind::disconnected:
      return "disconnected";
    case ErrorKind::unimplemented:
      return "unimplemented";
  }
  return "?";
}

const char* handler_name(detail::OpHandler h) {
  switch (h) {
    case detail::OpHandler::unknown:
      return "unknown";
    case detail::OpHandler::element:
      return "element";
    case detail::OpHandler::container:
      return "container";
    case detail::OpHandler::served:
      return "served";
    case detail::OpHandler::lock:
      return "lock";
    case detail::OpHandler::life:
      return "life";
  }
  return "?";
}

const char* flag(bool b) {
  return b ? "true" : "false";
}

}  // namespace

int main() {
  std::string sep;
  std::printf("{\"errors\": [");
  for (int code = 0; code <= 65535; ++code) {
    const auto c = static_cast<Errc>(code);
    if (std::string(errc_name(c)) == "unknown_error") continue;
    std::printf("%s[%d, \"%s\", \"%s\"]", sep.c_str(), code, errc_name(c),
                kind_name(error_kind(c)));
    sep = ", ";
  }
  sep.clear();
  std::printf("],\n \"commands\": [");
  for (int value = 0; value <= 255; ++value) {
    const uint8_t h[4] = {'P', 'T', detail::kWireVersion, static_cast<uint8_t>(value)};
    const auto c = detail::parse_header(zmq::message_t(h, sizeof h));
    if (!c) continue;
    std::printf("%s[%d, \"%s\"]", sep.c_str(), value, detail::command_name(*c));
    sep = ", ";
  }
  sep.clear();
  std::printf("],\n \"ops\": [");
  for (int value = 0; value <= 255; ++value) {
    const detail::OpInfo& row = detail::op_info(static_cast<wire::Op>(value));
    if (!row.known()) continue;
    std::printf("%s[%d, \"%s\", \"%s\", %s, %s, %s]", sep.c_str(), value, row.name,
                handler_name(row.handler), flag(row.idempotent), flag(row.mutating),
                flag(row.oneway));
    sep = ", ";
  }
  std::printf("]}\n");
  return 0;
}
