// A failed system call as an error: Errc::os_failure with the call and errno's text, so that an
// operator reads "eventfd: Too many open files" where a bug (Errc::internal) is not the cause.
#pragma once

#include <string>
#include <system_error>

#include "patro/error.hpp"

namespace patro::detail {

/// The error of a system call that failed with error_number (errno, read right after the call:
/// building the message may change errno).
inline Error os_failure(const std::string& what, int error_number) {
  return Error(Errc::os_failure, what + ": " + std::generic_category().message(error_number));
}

}  // namespace patro::detail
