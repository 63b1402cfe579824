// Fuzz target: a Batch body (oneway calls), verified and each request decoded.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const zmq::message_t f = patro::fuzz::frame_of(data, size);
  (void)patro::detail::is_batch(f);
  patro::detail::AlignedScratch scratch;
  const auto* b = patro::detail::verified_batch(f, patro::Limits{}, scratch);
  if (b == nullptr || b->requests() == nullptr) return 0;
  for (const auto* r : *b->requests()) patro::fuzz::walk_request(*r);
  return 0;
}
