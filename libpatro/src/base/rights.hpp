// Rights per client key (README "Security"): what an allow-list line says after the key, as the
// broker hands it to servers (wire: the rights frame of CLIENT_AT and KEY_RIGHTS, the same text
// as the line's).
#pragma once

#include <string_view>

#include "patro/curve.hpp"
#include "patro/error.hpp"

namespace patro::detail {

/// The rights an allow-list line writes after its key ("names=jobs*,kv read-only"; empty:
/// everything), with no key. Throws Error(invalid_argument) saying what is wrong.
AllowEntry rights_from_text(std::string_view text);

/// An Error's text without the "code: " that what() starts with, to wrap it in another message.
inline std::string_view error_message(const Error& e) {
  const std::string_view w = e.what();
  const auto colon = w.find(": ");
  return colon == std::string_view::npos ? w : w.substr(colon + 2);
}

}  // namespace patro::detail
