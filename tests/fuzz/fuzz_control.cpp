// Fuzz target: a Control body (hello, welcome, register, lookup, broker info), verified and read
// field by field as the broker, servers and clients read it.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using patro::fuzz::walk_binding;
  const zmq::message_t f = patro::fuzz::frame_of(data, size);
  patro::detail::AlignedScratch scratch;
  const auto* c = patro::detail::verified_control(f, patro::Limits{}, scratch);
  if (c == nullptr) return 0;
  if (const auto* r = c->body_as_Register(); r != nullptr && r->names() != nullptr)
    for (const auto* b : *r->names()) walk_binding(b);
  if (const auto* l = c->body_as_Lookup(); l != nullptr && l->name() != nullptr)
    (void)l->name()->str();
  if (const auto* lr = c->body_as_LookupReply()) walk_binding(lr->binding());
  if (const auto* rd = c->body_as_Registered(); rd != nullptr && rd->client_endpoint() != nullptr)
    (void)rd->client_endpoint()->str();
  if (const auto* bi = c->body_as_BrokerInfoReply()) {
    if (bi->names() != nullptr)
      for (const auto* b : *bi->names()) walk_binding(b);
    if (bi->servers() != nullptr)
      for (const auto* s : *bi->servers()) (void)s->server_id();
  }
  return 0;
}
