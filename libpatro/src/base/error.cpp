#include "patro/error.hpp"

namespace patro {

const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::ok:
      return "ok";
    case Errc::timeout:
      return "timeout";
    case Errc::broker_unreachable:
      return "broker_unreachable";
    case Errc::server_unavailable:
      return "server_unavailable";
    case Errc::disconnected:
      return "disconnected";
    case Errc::outcome_unknown:
      return "outcome_unknown";
    case Errc::bad_config:
      return "bad_config";
    case Errc::unknown_object:
      return "unknown_object";
    case Errc::unknown_method:
      return "unknown_method";
    case Errc::type_mismatch:
      return "type_mismatch";
    case Errc::index_out_of_range:
      return "index_out_of_range";
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::bad_message:
      return "bad_message";
    case Errc::message_too_large:
      return "message_too_large";
    case Errc::not_callable:
      return "not_callable";
    case Errc::remote_exception:
      return "remote_exception";
    case Errc::unsupported:
      return "unsupported";
    case Errc::overloaded:
      return "overloaded";
    case Errc::internal:
      return "internal";
    case Errc::not_found:
      return "not_found";
    case Errc::fenced:
      return "fenced";
    case Errc::not_authorized:
      return "not_authorized";
    case Errc::name_taken:
      return "name_taken";
    case Errc::lock_timeout:
      return "lock_timeout";
    case Errc::not_held:
      return "not_held";
    case Errc::steal_refused:
      return "steal_refused";
    case Errc::stolen:
      return "stolen";
    case Errc::too_many_waiters:
      return "too_many_waiters";
    case Errc::deep_recursion:
      return "deep_recursion";
  }
  return "unknown_error";
}

ErrorKind error_kind(Errc code) noexcept {
  switch (code) {
    case Errc::timeout:
    case Errc::broker_unreachable:
    case Errc::server_unavailable:
    case Errc::disconnected:
    case Errc::outcome_unknown:
      return ErrorKind::disconnected;
    case Errc::overloaded:
    case Errc::too_many_waiters:
      return ErrorKind::overloaded;
    case Errc::unsupported:
    case Errc::unknown_method:
      return ErrorKind::unimplemented;
    default:
      return ErrorKind::failed;
  }
}

Error::Error(Errc code, const std::string& message)
    : std::runtime_error(std::string(errc_name(code)) + ": " + message), code_(code) {}

}  // namespace patro
