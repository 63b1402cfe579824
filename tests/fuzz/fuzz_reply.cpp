// Fuzz target: a REPLY body, verified and decoded as the client decodes it.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const zmq::message_t f = patro::fuzz::frame_of(data, size);
  patro::detail::AlignedScratch scratch;
  const auto* r = patro::detail::verified_reply(f, patro::Limits{}, scratch);
  if (r == nullptr) return 0;
  try {
    for (const patro::Value& v :
         patro::detail::decode_values(r->results(), patro::fuzz::any_reference))
      patro::fuzz::touch(v);
    if (r->changed_args() != nullptr)
      for (const auto* c : *r->changed_args())
        patro::fuzz::touch(patro::detail::decode_value(c->value(), patro::fuzz::any_reference));
  } catch (const patro::Error&) {
  }
  if (r->error_text() != nullptr) (void)r->error_text()->str();
  if (r->error_type() != nullptr) (void)r->error_type()->str();
  return 0;
}
