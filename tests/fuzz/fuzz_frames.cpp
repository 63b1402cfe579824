// Fuzz target: a multipart message as the broker receives it, parsed with the wire's frame
// parsers the way the broker's front (clients) and back (servers) ends parse it (a version 2
// envelope unpacked first); a version 3 bundle split as a lane's direct ROUTER splits it, each
// envelope in it read alone (and each must unpack: split_bundle checked them). An envelope that
// read_inline_envelope reads where it lies (as a lane and a client read the usual call and reply)
// must read as unpack_envelope's frames say.
//
// Input: one byte (bit 0: from a server), then frames, each a 2-byte little-endian length and
// that many bytes (at most 8 frames; a short last frame takes what is left).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_common.hpp"

namespace {
using patro::detail::Command;

patro::detail::Multipart split(const uint8_t* data, size_t size) {
  patro::detail::Multipart frames;
  size_t at = 0;
  while (at < size && frames.size() < 8) {
    size_t n = data[at];
    if (at + 1 < size) n |= static_cast<size_t>(data[at + 1]) << 8;
    at = std::min(size, at + 2);
    n = std::min(n, size - at);
    frames.push_back(patro::fuzz::frame_of(data + at, n));
    at += n;
  }
  return frames;
}

void body(const zmq::message_t& f) {
  const patro::Limits limits;
  patro::detail::AlignedScratch scratch;
  if (patro::detail::is_batch(f)) {
    if (const auto* b = patro::detail::verified_batch(f, limits, scratch); b && b->requests())
      for (const auto* r : *b->requests()) patro::fuzz::walk_request(*r);
  } else if (const auto* r = patro::detail::verified_request(f, limits, scratch)) {
    patro::fuzz::walk_request(*r);
  }
}

// read_inline_envelope agrees with unpack_envelope: whatever it reads, unpack_envelope reads too,
// with the same ids and body.
void same_reading(std::string_view bytes) {
  const auto e = patro::detail::read_inline_envelope(bytes);
  if (!e) return;
  patro::detail::Multipart m;
  m.emplace_back(bytes.data(), bytes.size());
  if (!patro::detail::unpack_envelope(m, 0)) __builtin_trap();
  // [hdr]([routing])([object id])[request id][body]([attempt])
  size_t i = 1;
  if (e->flags & patro::detail::envelope_flag::kRouting) {
    if (m[i++].to_string_view() != e->routing) __builtin_trap();
  }
  if (e->request && patro::detail::parse_object_id(m[i++]) != e->object) __builtin_trap();
  if (patro::detail::parse_u64(m[i++]) != e->request_id) __builtin_trap();
  if (m[i++].to_string_view() != e->body) __builtin_trap();
  if (e->attempt && patro::detail::parse_u64(m[i++]) != e->attempt) __builtin_trap();
  if (i != m.size()) __builtin_trap();
}

void control(const zmq::message_t& f) {
  patro::detail::AlignedScratch scratch;
  const auto* c = patro::detail::verified_control(f, patro::Limits{}, scratch);
  if (c == nullptr) return;
  if (const auto* h = c->body_as_Hello()) (void)h->client_id();
  if (const auto* l = c->body_as_Lookup(); l && l->name()) (void)l->name()->str();
  if (const auto* r = c->body_as_Register(); r && r->names())
    for (const auto* b : *r->names()) patro::fuzz::walk_binding(b);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool from_server = (data[0] & 1) != 0;
  patro::detail::Multipart f = split(data + 1, size - 1);
  // f[0] is the routing id a ROUTER adds.
  if (f.size() < 2) return 0;
  // A bundle: its envelopes, each with the routing id, as a lane reads them.
  if (f.size() == 2 && patro::detail::is_bundle(f[1])) {
    std::vector<std::string_view> views;
    const bool ok = patro::detail::bundled_envelopes(f[1], views);
    std::vector<zmq::message_t> envelopes;
    if (patro::detail::split_bundle(f[1], envelopes) != ok) __builtin_trap();
    if (!ok) return 0;
    for (std::string_view v : views) {
      // Each is an inline envelope, read where it lies as it unpacks.
      if (!patro::detail::read_inline_envelope(v)) __builtin_trap();
      same_reading(v);
    }
    for (zmq::message_t& e : envelopes) {
      patro::detail::Multipart one;
      one.emplace_back(f[0].data(), f[0].size());
      one.push_back(std::move(e));
      if (!patro::detail::unpack_envelope(one, 1)) __builtin_trap();
      const auto cmd = patro::detail::parse_header(one[1]);
      if (cmd == Command::request && one.size() == 5) body(one[4]);
    }
    return 0;
  }
  // A version 2 REQUEST or REPLY: read as the version 1 frames it stands for, as the broker does.
  same_reading(f[1].to_string_view());
  if (patro::detail::is_envelope(f[1]) && !patro::detail::unpack_envelope(f, 1)) return 0;
  const auto cmd = patro::detail::parse_header(f[1]);
  if (!cmd) return 0;
  (void)patro::detail::command_name(*cmd);
  if (!from_server) {
    switch (*cmd) {
      case Command::request:  // [routing][hdr][object id][request id][body]
        if (f.size() >= 4) (void)patro::detail::parse_u64(f[3]);
        if (f.size() >= 3) (void)patro::detail::parse_object_id(f[2]);
        if (f.size() == 5) body(f[4]);
        break;
      case Command::heartbeat:
        if (f.size() == 3) (void)patro::detail::parse_u64(f[2]);
        break;
      case Command::hello:
      case Command::lookup:
      case Command::broker_info:
        if (f.size() == 4) {
          (void)patro::detail::parse_u64(f[2]);
          control(f[3]);
        }
        break;
      default:
        break;
    }
  } else {
    switch (*cmd) {
      case Command::reply:  // [routing][hdr][client routing][request id][body]
        if (f.size() == 5) {
          (void)patro::detail::parse_u64(f[3]);
          patro::detail::AlignedScratch scratch;
          (void)patro::detail::verified_reply(f[4], patro::Limits{}, scratch);
        }
        break;
      case Command::register_server:
        if (f.size() == 3) control(f[2]);
        break;
      default:
        break;
    }
  }
  return 0;
}
