// Two channels for what goes wrong, never mixed (as KJ separates KJ_ASSERT from KJ_REQUIRE):
// - anything that came from the network, a file or a user is a typed patro::Error, thrown where
//   the input is checked (never an assertion);
// - a broken invariant of our own code (a downcast to the wrong node kind, a slot in a state it
//   cannot be in) is PATRO_ASSERT. It logs the expression and where it failed, then throws
//   Error(Errc::internal), which the server's per-request barrier turns into an error reply: one
//   request fails loudly, and a server that serves a cluster keeps serving the others.
#pragma once

namespace patro::detail {

[[noreturn]] void assertion_failed(const char* expression, const char* file, int line,
                                   const char* what);

}  // namespace patro::detail

/// PATRO_ASSERT(condition, "what it means"): an invariant of Patro's own code.
#define PATRO_ASSERT(condition, what)                                            \
  do {                                                                           \
    if (!(condition)) [[unlikely]]                                               \
      ::patro::detail::assertion_failed(#condition, __FILE__, __LINE__, (what)); \
  } while (false)
