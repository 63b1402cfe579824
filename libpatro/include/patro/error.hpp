// Patro's errors: everything that came from the network, a file or a user is reported as a
// patro::Error with a code. Codes are classified so callers can decide what to retry.
#pragma once

#include <stdexcept>
#include <string>

#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// Error codes. The numeric values travel on the wire; never renumber. They are kept in
/// schemas/wire.json, which the Python client reads too; the build checks this list against it.
enum class Errc : int {
  ok = 0,
  timeout = 1,             ///< no answer by the call's deadline
  broker_unreachable = 2,  ///< nothing answers at the broker address, or it went silent
  server_unavailable = 3,  ///< the server owning the object is not registered (died, or never was)
  disconnected = 4,        ///< the connection was closed
  outcome_unknown = 5,  ///< the server died mid-call; a non-idempotent call may or may not have run
  bad_config = 6,       ///< a config that cannot be parsed or names no broker
  unknown_object = 7,   ///< no such object on its server
  unknown_method = 8,
  type_mismatch = 9,  ///< e.g. indexing into a string, pushing onto a hash, as<int>() of "x"
  index_out_of_range = 10,
  invalid_argument = 11,
  bad_message = 12,  ///< a malformed or truncated message
  message_too_large = 13,
  not_callable = 14,
  remote_exception = 15,  ///< served code threw (see patro::RemoteError)
  unsupported = 16,
  overloaded = 17,      ///< a limit on in-flight work was reached; retry later
  internal = 18,        ///< a bug: something that cannot happen did (os_failure names the system's)
  not_found = 19,       ///< a name unknown to the broker's registry
  fenced = 20,          ///< the call carried a fencing token older than the newest lock grant
  not_authorized = 21,  ///< the broker refused this peer's CURVE key, or the CURVE handshake failed
  name_taken = 22,      ///< a name is registered by another live server
  os_failure = 23,  ///< a system call failed (eventfd, fork, pipe, a file...); the text has errno's
  cancelled = 24,   ///< the caller cancelled the call (Future::cancel): see future.hpp
  // The outcomes of lock operations (SyncResult::error; SyncError names the same numbers).
  lock_timeout = 1001,      ///< a lock or wait not granted (or notified) in time
  not_held = 1002,          ///< unlock, wait or notify without holding the lock
  steal_refused = 1003,     ///< the server does not allow stealing (steal_lock_ok is off)
  stolen = 1004,            ///< unlock after the lock was stolen: ok with count 0 ("0 but true")
  too_many_waiters = 1005,  ///< the server's limit on parked lock requests was reached
  deep_recursion = 1111,    ///< the lock is stacked as deep as the server allows
};

/// How a caller may react to an error (the classification of KJ's exceptions).
enum class ErrorKind {
  failed,        ///< the request is wrong or failed; retrying the same thing fails again
  overloaded,    ///< try again later
  disconnected,  ///< a peer went away; reconnecting or failing over may help
  unimplemented  ///< the peer does not support this
};

/// The name of a code, such as "type_mismatch".
const char* errc_name(Errc code) noexcept;
/// The classification of a code.
ErrorKind error_kind(Errc code) noexcept;

/// An error with a code and a message that says what went wrong.
class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message);
  Errc code() const noexcept { return code_; }
  ErrorKind kind() const noexcept { return error_kind(code_); }

 private:
  Errc code_;
};

/// An error raised by served code or by a server-side operation: an exception a served method or
/// callable threw (type() is its C++ type, such as "std::runtime_error"), or a failed system call
/// of a served file handle (type() is "std::system_error"). error_number() is the errno the
/// server-side operation set (Perl's $!), or 0.
class RemoteError : public Error {
 public:
  RemoteError(Errc code, const std::string& message, std::string type, int error_number = 0)
      : Error(code, message), type_(std::move(type)), error_number_(error_number) {}
  const std::string& type() const noexcept { return type_; }
  int error_number() const noexcept { return error_number_; }

 private:
  std::string type_;
  int error_number_;
};

}  // namespace patro
PATRO_PUBLIC_END
