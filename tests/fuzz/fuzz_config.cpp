// Fuzz target: config text (Config::parse), and a stored value (patro::decode).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_common.hpp"
#include "patro/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const patro::Config c = patro::Config::parse(text);
    // What parse accepted must print and parse back to the same config.
    const patro::Config again = patro::Config::parse(c.to_string());
    if (again.to_string() != c.to_string()) __builtin_trap();
  } catch (const patro::Error&) {
  }
  try {
    patro::fuzz::touch(patro::decode(text));
  } catch (const patro::Error&) {
  }
  return 0;
}
