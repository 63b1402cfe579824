// Small helpers for asserting on Patro errors in tests.
#pragma once

#include <patro/error.hpp>

namespace patro::test {

/// The patro::Error f throws, or an Error with code ok when it throws none.
template <class F>
patro::Error error_of(F&& f) {
  try {
    f();
  } catch (const patro::Error& e) {
    return e;
  }
  return patro::Error(patro::Errc::ok, "no error");
}

}  // namespace patro::test
