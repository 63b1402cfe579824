#include "patro/error.hpp"

#include "wire_constants.hpp"

namespace patro {

// Errc is written out in the public header for its readers; its numbers are schemas/wire.json's.
// These fail the build when a code differs, and the switches below (no default: -Wswitch) when
// the header has a code that wire.json lacks.
#define PATRO_ERRC_CHECK(name, code, kind, text)      \
  static_assert(static_cast<int>(Errc::name) == code, \
                "patro::Errc::" #name " differs from schemas/wire.json");
PATRO_ERRC_ROWS(PATRO_ERRC_CHECK)
#undef PATRO_ERRC_CHECK

const char* errc_name(Errc code) noexcept {
  switch (code) {
#define PATRO_ERRC_NAME(name, code, kind, text) \
  case Errc::name:                              \
    return #name;
    PATRO_ERRC_ROWS(PATRO_ERRC_NAME)
#undef PATRO_ERRC_NAME
  }
  return "unknown_error";
}

ErrorKind error_kind(Errc code) noexcept {
  switch (code) {
#define PATRO_ERRC_KIND(name, code, kind, text) \
  case Errc::name:                              \
    return ErrorKind::kind;
    PATRO_ERRC_ROWS(PATRO_ERRC_KIND)
#undef PATRO_ERRC_KIND
  }
  return ErrorKind::failed;
}

Error::Error(Errc code, const std::string& message)
    : std::runtime_error(std::string(errc_name(code)) + ": " + message), code_(code) {}

}  // namespace patro
