// Fuzz target: a REQUEST body, verified and decoded as the server decodes it.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const zmq::message_t f = patro::fuzz::frame_of(data, size);
  patro::detail::AlignedScratch scratch;
  if (const auto* r = patro::detail::verified_request(f, patro::Limits{}, scratch))
    patro::fuzz::walk_request(*r);
  return 0;
}
