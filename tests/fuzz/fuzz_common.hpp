// Shared by the fuzz targets: bytes into frames, and a walk over every decoded field so that the
// fuzzer reaches every accessor the library uses on a verified body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "patro/error.hpp"
#include "wire.hpp"

namespace patro::fuzz {

inline zmq::message_t frame_of(const uint8_t* data, size_t size) {
  return zmq::message_t(data, size);
}

/// A reference reader that accepts every reference, as a client does (it builds a proxy).
inline Value any_reference(const wire::Ref& r) {
  Reference ref;
  ref.id = ObjectId{r.server(), r.object()};
  return Value(std::move(ref));
}

/// Touches what a decoded value holds (to_string walks arrays and hashes).
inline size_t touch(const Value& v) {
  return v.to_string().size() + v.size();
}

/// Decodes a request as the server does: arguments, path, name. Input errors are Error; nothing
/// else may escape.
inline void walk_request(const wire::Request& r) {
  try {
    for (const Value& v : detail::decode_values(r.args(), any_reference)) touch(v);
  } catch (const Error&) {
  }
  const Path path = detail::decode_path(r.path());
  (void)detail::path_to_string(path);
  if (r.name() != nullptr) (void)r.name()->str();
  (void)detail::idempotent(r.op());
}

inline void walk_binding(const wire::NameBinding* b) {
  if (b == nullptr) return;
  if (b->name() != nullptr) (void)b->name()->str();
  if (b->type_name() != nullptr) (void)b->type_name()->str();
  if (b->reftype() != nullptr) (void)b->reftype()->str();
}

}  // namespace patro::fuzz
