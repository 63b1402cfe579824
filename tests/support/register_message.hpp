// A REGISTER as a server's lane sends it on the broker's back end (docs/WIRE.md), for tests that
// speak the wire with raw sockets.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "wire.hpp"

namespace patro::test {

/// The header frame and the Control body of a REGISTER: lane `lane` of `lanes` of server
/// server_id (incarnation), binding each name to object `object` of type type_name, with a
/// restart proof if `proof` is not empty.
inline detail::Multipart register_message(uint64_t server_id, uint32_t lane, uint32_t lanes,
                                          uint64_t incarnation,
                                          const std::vector<std::string>& names, uint64_t object,
                                          const std::string& type_name = "Patro::Queue",
                                          const std::string& proof = {}) {
  flatbuffers::FlatBufferBuilder fb(1024);
  std::vector<flatbuffers::Offset<wire::NameBinding>> nbs;
  for (const auto& n : names)
    nbs.push_back(
        wire::CreateNameBindingDirect(fb, n.c_str(), server_id, object, type_name.c_str(), "HASH"));
  auto nv = fb.CreateVector(nbs);
  auto pv = proof.empty()
                ? 0
                : fb.CreateVector(reinterpret_cast<const uint8_t*>(proof.data()), proof.size());
  auto reg = wire::CreateRegister(fb, server_id, lane, lanes, nv, incarnation, 0, pv);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, reg.Union()),
            wire::ControlIdentifier());
  detail::Multipart m;
  m.push_back(detail::header_frame(detail::Command::register_server));
  m.push_back(detail::body_frame(fb));
  return m;
}

}  // namespace patro::test
