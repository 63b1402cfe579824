#include "wire.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include "assert.hpp"
#include "patro/containers.hpp"

namespace patro::detail {

const char* command_name(Command c) noexcept {
  switch (c) {
#define PATRO_COMMAND_CASE(name, value, wire_name, text) \
  case Command::name:                                    \
    return wire_name;
    PATRO_COMMAND_ROWS(PATRO_COMMAND_CASE)
#undef PATRO_COMMAND_CASE
  }
  return "?";
}

zmq::message_t header_frame(Command c) {
  const uint8_t h[4] = {'P', 'T', kWireVersion, static_cast<uint8_t>(c)};
  return zmq::message_t(h, sizeof h);
}

std::optional<Command> parse_header(const zmq::message_t& frame) noexcept {
  if (frame.size() != 4) return std::nullopt;
  const auto* h = static_cast<const uint8_t*>(frame.data());
  if (h[0] != 'P' || h[1] != 'T' || h[2] != kWireVersion) return std::nullopt;
  if (h[3] < static_cast<uint8_t>(Command::hello) ||
      h[3] > static_cast<uint8_t>(Command::PATRO_COMMAND_LAST))
    return std::nullopt;
  return static_cast<Command>(h[3]);
}

zmq::message_t stamped_header_frame(Command c, uint64_t stamp) {
  uint8_t h[12] = {'P', 'T', kWireVersion, static_cast<uint8_t>(c)};
  for (int i = 0; i < 8; ++i) h[4 + i] = static_cast<uint8_t>(stamp >> (56 - 8 * i));
  return zmq::message_t(h, sizeof h);
}

std::optional<Command> parse_header(const zmq::message_t& frame, uint64_t& stamp) noexcept {
  stamp = 0;
  if (frame.size() != 12) return parse_header(frame);
  const auto* h = static_cast<const uint8_t*>(frame.data());
  const zmq::message_t plain(h, 4);
  const auto cmd = parse_header(plain);
  if (cmd)
    for (int i = 0; i < 8; ++i) stamp = (stamp << 8) | h[4 + i];
  return cmd;
}

namespace {
// Big-endian integers of n bytes (8: ids and stamps; 4: a bundled envelope's length).
void put_be(uint8_t* p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) {
    p[i] = static_cast<uint8_t>(v);
    v >>= 8;
  }
}
uint64_t get_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
void put_u64(uint8_t* p, uint64_t v) {
  put_be(p, v, 8);
}
uint64_t get_u64(const uint8_t* p) {
  return get_be(p, 8);
}

bool starts_envelope(const uint8_t* p, size_t size) noexcept {
  return size >= 5 && p[0] == 'P' && p[1] == 'T' && p[2] == kEnvelopeVersion;
}
}  // namespace

bool is_envelope(const zmq::message_t& frame) noexcept {
  return starts_envelope(static_cast<const uint8_t*>(frame.data()), frame.size());
}

bool pack_envelope(Multipart& m, size_t at, bool routed, bool reads_bundles) {
  if (m.size() <= at) return false;
  uint64_t stamp = 0;
  const auto cmd = parse_header(m[at], stamp);
  const bool request = cmd == Command::request;
  if (!request && cmd != Command::reply) return false;
  if (reads_bundles && !request) return false;
  const bool stamped = m[at].size() == 12;
  // The frames after the header: routing, ids, body, attempt.
  const size_t ids = request ? 2 : 1;
  const size_t base = (routed ? 1 : 0) + ids + 1;
  const size_t n = m.size() - at - 1;
  const bool attempt = request && n == base + 1;
  if (n != base && !attempt) return false;
  if (stamped && !request) return false;
  size_t i = at + 1;
  std::string_view routing;
  if (routed) {
    routing = m[i++].to_string_view();
    if (routing.size() > kMaxEnvelopeRouting) return false;
  }
  const size_t oid_at = i;
  if (request && m[i++].size() != 16) return false;
  const size_t rid_at = i++;
  if (m[rid_at].size() != 8) return false;
  const size_t body_at = i++;
  if (attempt && m[i].size() != 8) return false;
  const size_t body_size = m[body_at].size();
  const bool inline_body = body_size <= kMaxInlineBody;
  const uint8_t flags =
      (stamped ? envelope_flag::kStamp : 0) | (routed ? envelope_flag::kRouting : 0) |
      (attempt ? envelope_flag::kAttempt : 0) | (inline_body ? envelope_flag::kInline : 0) |
      (reads_bundles ? envelope_flag::kReadsBundles : 0);
  zmq::message_t env(5 + (stamped ? 8 : 0) + (routed ? 1 + routing.size() : 0) +
                     (request ? 16 : 0) + 8 + (attempt ? 8 : 0) + (inline_body ? body_size : 0));
  auto* p = static_cast<uint8_t*>(env.data());
  *p++ = 'P';
  *p++ = 'T';
  *p++ = kEnvelopeVersion;
  *p++ = static_cast<uint8_t>(*cmd);
  *p++ = flags;
  if (stamped) {
    put_u64(p, stamp);
    p += 8;
  }
  if (routed) {
    *p++ = static_cast<uint8_t>(routing.size());
    std::memcpy(p, routing.data(), routing.size());
    p += routing.size();
  }
  if (request) {
    std::memcpy(p, m[oid_at].data(), 16);
    p += 16;
  }
  std::memcpy(p, m[rid_at].data(), 8);
  p += 8;
  if (attempt) {
    std::memcpy(p, m[body_at + 1].data(), 8);
    p += 8;
  }
  if (inline_body && body_size != 0) std::memcpy(p, m[body_at].data(), body_size);
  zmq::message_t body = std::move(m[body_at]);
  m.resize(at);
  m.push_back(std::move(env));
  if (!inline_body) m.push_back(std::move(body));
  return true;
}

namespace {
// Where the fields of a well-formed REQUEST or REPLY envelope are; read once, for unpack_envelope,
// read_inline_envelope and envelope_object_id alike.
struct EnvelopeLayout {
  bool request = false;
  uint8_t flags = 0;
  size_t stamp_at = 0;       // with kStamp
  std::string_view routing;  // with kRouting
  size_t ids_at = 0;         // [object id (REQUEST)] request id
  size_t attempt_at = 0;     // with kAttempt
  size_t fields = 0;         // where the fields end (and an inline body begins)
};

// The layout of the envelope in [p, p + size), or nullopt for anything but a well-formed one:
// another version or command, a flag the command may not carry, a field past the end, or a length
// other than its fields' (at least that with an inline body).
std::optional<EnvelopeLayout> envelope_layout(const uint8_t* p, size_t size) noexcept {
  if (!starts_envelope(p, size)) return std::nullopt;
  EnvelopeLayout l;
  l.request = p[3] == static_cast<uint8_t>(Command::request);
  if (!l.request && p[3] != static_cast<uint8_t>(Command::reply)) return std::nullopt;
  l.flags = p[4];
  const uint8_t allowed = (l.request ? envelope_flag::kStamp | envelope_flag::kRouting |
                                           envelope_flag::kAttempt | envelope_flag::kReadsBundles
                                     : envelope_flag::kRouting) |
                          envelope_flag::kInline;
  if ((l.flags & ~allowed) != 0) return std::nullopt;
  size_t i = 5;
  if (l.flags & envelope_flag::kStamp) {
    if (size < i + 8) return std::nullopt;
    l.stamp_at = i;
    i += 8;
  }
  if (l.flags & envelope_flag::kRouting) {
    if (size < i + 1 || size < i + 1 + p[i]) return std::nullopt;
    l.routing = std::string_view(reinterpret_cast<const char*>(p) + i + 1, p[i]);
    i += 1 + p[i];
  }
  l.ids_at = i;
  i += (l.request ? 16 : 0) + 8;
  l.attempt_at = i;
  if (l.flags & envelope_flag::kAttempt) i += 8;
  l.fields = i;
  if ((l.flags & envelope_flag::kInline) ? size < l.fields : size != l.fields) return std::nullopt;
  return l;
}

std::optional<EnvelopeLayout> envelope_layout(const zmq::message_t& frame) noexcept {
  return envelope_layout(static_cast<const uint8_t*>(frame.data()), frame.size());
}
}  // namespace

bool unpack_envelope(Multipart& m, size_t at) {
  if (m.size() <= at || m.size() > at + 2) return false;
  const auto l = envelope_layout(m[at]);
  if (!l) return false;
  const bool inline_body = (l->flags & envelope_flag::kInline) != 0;
  if (inline_body && m.size() != at + 1) return false;
  const auto* p = static_cast<const uint8_t*>(m[at].data());
  const Command cmd = l->request ? Command::request : Command::reply;
  Multipart out;
  out.reserve(6);
  out.push_back((l->flags & envelope_flag::kStamp)
                    ? stamped_header_frame(cmd, get_u64(p + l->stamp_at))
                    : header_frame(cmd));
  if (l->flags & envelope_flag::kRouting) out.emplace_back(l->routing.data(), l->routing.size());
  if (l->request) out.emplace_back(p + l->ids_at, 16);
  out.emplace_back(p + l->attempt_at - 8, 8);  // the request id
  const bool body = inline_body || m.size() == at + 2;
  if (inline_body)
    out.emplace_back(p + l->fields, m[at].size() - l->fields);
  else if (body)
    out.push_back(std::move(m[at + 1]));
  if ((l->flags & envelope_flag::kAttempt) && body) out.emplace_back(p + l->attempt_at, 8);
  m.resize(at);
  for (zmq::message_t& f : out) m.push_back(std::move(f));
  return true;
}

bool unpack_envelope_keeping(Multipart& m, size_t at, zmq::message_t& kept) {
  if (m.size() <= at || !is_envelope(m[at])) return true;
  kept.copy(m[at]);
  if (unpack_envelope(m, at)) return true;
  kept.rebuild();
  return false;
}

std::optional<InlineEnvelope> read_inline_envelope(std::string_view bytes) noexcept {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const auto l = envelope_layout(p, bytes.size());
  if (!l || (l->flags & envelope_flag::kInline) == 0) return std::nullopt;
  InlineEnvelope e;
  e.request = l->request;
  e.flags = l->flags;
  if (l->flags & envelope_flag::kStamp) e.stamp = get_u64(p + l->stamp_at);
  e.routing = l->routing;
  size_t at = l->ids_at;
  if (l->request) {
    e.object = ObjectId{get_u64(p + at), get_u64(p + at + 8)};
    at += 16;
  }
  e.request_id = get_u64(p + at);
  if (l->flags & envelope_flag::kAttempt) e.attempt = get_u64(p + l->attempt_at);
  e.body = bytes.substr(l->fields);
  return e;
}

std::optional<InlineEnvelope> read_inline_envelope(const zmq::message_t& frame) noexcept {
  return read_inline_envelope(frame.to_string_view());
}

zmq::message_t reply_envelope(uint64_t request_id, const zmq::message_t& body,
                              std::string_view routing) {
  PATRO_ASSERT(body.size() <= kMaxInlineBody && routing.size() <= kMaxEnvelopeRouting,
               "an inline reply's body and routing fit in its envelope");
  const bool routed = !routing.empty();
  zmq::message_t env(5 + (routed ? 1 + routing.size() : 0) + 8 + body.size());
  auto* p = static_cast<uint8_t*>(env.data());
  *p++ = 'P';
  *p++ = 'T';
  *p++ = kEnvelopeVersion;
  *p++ = static_cast<uint8_t>(Command::reply);
  *p++ = envelope_flag::kInline | (routed ? envelope_flag::kRouting : 0);
  if (routed) {
    *p++ = static_cast<uint8_t>(routing.size());
    std::memcpy(p, routing.data(), routing.size());
    p += routing.size();
  }
  put_u64(p, request_id);
  if (body.size() != 0) std::memcpy(p + 8, body.data(), body.size());
  return env;
}

void append_reply(Multipart& out, bool routed, std::string_view routing, uint64_t request_id,
                  zmq::message_t body, uint8_t version) {
  if (version >= kEnvelopeVersion && body.size() <= kMaxInlineBody &&
      (!routed || (!routing.empty() && routing.size() <= kMaxEnvelopeRouting))) {
    out.push_back(reply_envelope(request_id, body, routed ? routing : std::string_view()));
    return;
  }
  const size_t at = out.size();
  out.push_back(header_frame(Command::reply));
  if (routed) out.emplace_back(routing.data(), routing.size());
  out.push_back(u64_frame(request_id));
  out.push_back(std::move(body));
  if (version >= kEnvelopeVersion) pack_envelope(out, at, routed);
}

uint8_t envelope_flags(const zmq::message_t& frame) noexcept {
  return is_envelope(frame) ? static_cast<const uint8_t*>(frame.data())[4] : 0;
}

bool is_bundle(const zmq::message_t& frame) noexcept {
  const auto* p = static_cast<const uint8_t*>(frame.data());
  return is_envelope(frame) && p[4] == envelope_flag::kBundle &&
         (p[3] == static_cast<uint8_t>(Command::request) ||
          p[3] == static_cast<uint8_t>(Command::reply));
}

zmq::message_t bundle_frame(const std::vector<const zmq::message_t*>& envelopes) {
  PATRO_ASSERT(!envelopes.empty() && envelopes.size() <= kMaxBundle,
               "a bundle holds 1 to kMaxBundle envelopes");
  size_t size = 5;
  for (const zmq::message_t* e : envelopes) size += bundled_size(*e);
  zmq::message_t b(size);
  auto* p = static_cast<uint8_t*>(b.data());
  const auto* first = static_cast<const uint8_t*>(envelopes[0]->data());
  *p++ = 'P';
  *p++ = 'T';
  *p++ = kEnvelopeVersion;
  *p++ = first[3];  // the command of them all
  *p++ = envelope_flag::kBundle;
  for (const zmq::message_t* each : envelopes) {
    const zmq::message_t& e = *each;
    PATRO_ASSERT(e.size() >= 5 && static_cast<const uint8_t*>(e.data())[3] == first[3] &&
                     (static_cast<const uint8_t*>(e.data())[4] & envelope_flag::kInline) != 0,
                 "a bundle holds inline envelopes of one command");
    put_be(p, e.size(), 4);
    p += 4;
    std::memcpy(p, e.data(), e.size());
    p += e.size();
  }
  return b;
}

bool bundled_envelopes(const zmq::message_t& frame, std::vector<std::string_view>& out) {
  out.clear();
  if (!is_bundle(frame)) return false;
  const auto* p = static_cast<const uint8_t*>(frame.data());
  const size_t size = frame.size();
  const uint8_t cmd = p[3];
  for (size_t i = 5; i < size;) {
    if (size - i < 4 || out.size() >= kMaxBundle) break;
    const auto len = static_cast<size_t>(get_be(p + i, 4));
    i += 4;
    if (len > size - i) break;
    const auto l = envelope_layout(p + i, len);
    if (!l || p[i + 3] != cmd || (l->flags & envelope_flag::kInline) == 0) break;
    out.emplace_back(reinterpret_cast<const char*>(p) + i, len);
    i += len;
    if (i == size) return true;  // none after the last
  }
  out.clear();
  return false;
}

bool split_bundle(const zmq::message_t& frame, std::vector<zmq::message_t>& out) {
  std::vector<std::string_view> views;
  if (!bundled_envelopes(frame, views)) return false;
  for (std::string_view v : views) out.emplace_back(v.data(), v.size());
  return true;
}

std::optional<ObjectId> envelope_object_id(const zmq::message_t& frame) noexcept {
  const auto l = envelope_layout(frame);
  if (!l || !l->request) return std::nullopt;
  const auto* p = static_cast<const uint8_t*>(frame.data()) + l->ids_at;
  return ObjectId{get_u64(p), get_u64(p + 8)};
}

zmq::message_t u64_frame(uint64_t v) {
  zmq::message_t m(8);
  put_u64(static_cast<uint8_t*>(m.data()), v);
  return m;
}

std::optional<uint64_t> parse_u64(const zmq::message_t& frame) noexcept {
  if (frame.size() != 8) return std::nullopt;
  return get_u64(static_cast<const uint8_t*>(frame.data()));
}

zmq::message_t u64_list_frame(const std::vector<uint64_t>& vs) {
  zmq::message_t m(vs.size() * 8);
  auto* p = static_cast<uint8_t*>(m.data());
  for (size_t i = 0; i < vs.size(); ++i) put_u64(p + 8 * i, vs[i]);
  return m;
}

std::optional<std::vector<uint64_t>> parse_u64_list(const zmq::message_t& frame) {
  if (frame.size() % 8 != 0) return std::nullopt;
  std::vector<uint64_t> out(frame.size() / 8);
  const auto* p = static_cast<const uint8_t*>(frame.data());
  for (size_t i = 0; i < out.size(); ++i) out[i] = get_u64(p + 8 * i);
  return out;
}

zmq::message_t object_id_frame(const ObjectId& id) {
  zmq::message_t m(16);
  auto* p = static_cast<uint8_t*>(m.data());
  put_u64(p, id.server);
  put_u64(p + 8, id.object);
  return m;
}

std::optional<ObjectId> parse_object_id(const zmq::message_t& frame) noexcept {
  if (frame.size() != 16) return std::nullopt;
  const auto* p = static_cast<const uint8_t*>(frame.data());
  return ObjectId{get_u64(p), get_u64(p + 8)};
}

zmq::message_t body_frame(const flatbuffers::FlatBufferBuilder& fb) {
  return zmq::message_t(fb.GetBufferPointer(), fb.GetSize());
}

const uint8_t* aligned_bytes(const zmq::message_t& frame, AlignedScratch& scratch) {
  const auto* data = static_cast<const uint8_t*>(frame.data());
  if (reinterpret_cast<uintptr_t>(data) % alignof(uint64_t) == 0) return data;
  scratch.resize((frame.size() + sizeof(uint64_t) - 1) / sizeof(uint64_t));
  std::memcpy(scratch.data(), data, frame.size());
  return reinterpret_cast<const uint8_t*>(scratch.data());
}

const wire::Request* verified_request(const zmq::message_t& f, const Limits& l, AlignedScratch& s) {
  return verified_root<wire::Request>(f, wire::RequestIdentifier(), l, s);
}
const wire::Reply* verified_reply(const zmq::message_t& f, const Limits& l, AlignedScratch& s) {
  return verified_root<wire::Reply>(f, wire::ReplyIdentifier(), l, s);
}
const wire::Control* verified_control(const zmq::message_t& f, const Limits& l, AlignedScratch& s) {
  return verified_root<wire::Control>(f, wire::ControlIdentifier(), l, s);
}
const wire::Batch* verified_batch(const zmq::message_t& f, const Limits& l, AlignedScratch& s) {
  return verified_root<wire::Batch>(f, wire::BatchIdentifier(), l, s);
}
const wire::Reply* own_reply(const zmq::message_t& f, AlignedScratch& s) {
  if (f.size() < 8 ||
      std::memcmp(static_cast<const char*>(f.data()) + 4, wire::ReplyIdentifier(), 4) != 0)
    return nullptr;
  return flatbuffers::GetRoot<wire::Reply>(aligned_bytes(f, s));
}
bool is_batch(const zmq::message_t& f) noexcept {
  return f.size() >= 8 &&
         std::memcmp(static_cast<const char*>(f.data()) + 4, wire::BatchIdentifier(), 4) == 0;
}

namespace {
bool has_local(const Value& v) {
  if (const Reference* r = v.if_reference()) return r->node != nullptr;
  if (const ValueArray* a = v.if_array())
    return std::any_of(a->begin(), a->end(), [](const Value& e) { return has_local(e); });
  if (const ValueHash* h = v.if_hash())
    return std::any_of(h->begin(), h->end(), [](const auto& e) { return has_local(e.second); });
  return false;
}

// Through the public API of the containers: each read is atomic (an array's items, a scalar's
// value); a hash is read key by key.
Value local_copy(const Value& v, unsigned depth, const LocalServer& serve) {
  if (depth > kMaxCopyDepth)
    throw Error(Errc::invalid_argument, "cannot send a local value nested deeper than " +
                                            std::to_string(kMaxCopyDepth) +
                                            " levels (or one that contains itself) to a server");
  if (const ValueArray* a = v.if_array()) {
    ValueArray out;
    out.reserve(a->size());
    for (const Value& e : *a) out.push_back(local_copy(e, depth + 1, serve));
    return Value(std::move(out));
  }
  if (const ValueHash* h = v.if_hash()) {
    ValueHash out;
    for (const auto& [k, e] : *h) out.emplace_hint(out.end(), k, local_copy(e, depth + 1, serve));
    return Value(std::move(out));
  }
  const Reference* r = v.if_reference();
  if (r == nullptr || !r->node) return v;
  const bool container = r->reftype == "ARRAY" || r->reftype == "HASH" || r->reftype == "SCALAR";
  if (!container || r->callback) {
    if (serve) return serve(*r);
    throw Error(Errc::invalid_argument,
                "cannot send a local object (" + r->type_name +
                    ") to a server here: objects are served for callbacks only by a client's "
                    "connection; serve it with patronize() and pass its proxy");
  }
  if (r->reftype == "ARRAY") return local_copy(Value(v.as<Array>().items()), depth, serve);
  if (r->reftype == "HASH") {
    const Hash h = v.as<Hash>();
    ValueHash items;
    for (std::string& k : h.keys()) {
      Value e = h.get(k);
      items.emplace(std::move(k), std::move(e));
    }
    return local_copy(Value(std::move(items)), depth, serve);
  }
  return Value(Scalar(local_copy(v.as<Scalar>().get(), depth + 1, serve)));
}
}  // namespace

const ValueArray& local_copies(const ValueArray& args, ValueArray& scratch,
                               const LocalServer& serve) {
  if (std::none_of(args.begin(), args.end(), [](const Value& a) { return has_local(a); }))
    return args;
  scratch.clear();
  scratch.reserve(args.size());
  for (const Value& a : args) scratch.push_back(local_copy(a, 0, serve));
  return scratch;
}

flatbuffers::Offset<wire::Value> encode_value(flatbuffers::FlatBufferBuilder& fb, const Value& v,
                                              const RefWriter& refs) {
  // Children and strings must be built before the table that holds them.
  flatbuffers::Offset<flatbuffers::String> s;
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> bytes;
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Value>>> items;
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>> keys;
  flatbuffers::Offset<wire::Ref> ref;
  wire::Kind kind = wire::Kind::Null;
  switch (v.type()) {
    case Type::null:
      break;
    case Type::boolean:
      kind = wire::Kind::Bool;
      break;
    case Type::integer:
      kind = wire::Kind::Int;
      break;
    case Type::number:
      kind = wire::Kind::Double;
      break;
    case Type::string:
      kind = wire::Kind::String;
      s = fb.CreateString(*v.if_string());
      break;
    case Type::bytes: {
      kind = wire::Kind::Bytes;
      const std::string& d = v.if_bytes()->data;
      bytes = fb.CreateVector(reinterpret_cast<const uint8_t*>(d.data()), d.size());
      break;
    }
    case Type::array:
      kind = wire::Kind::Array;
      items = encode_values(fb, *v.if_array(), refs);
      break;
    case Type::hash: {
      kind = wire::Kind::Hash;
      const ValueHash& h = *v.if_hash();
      std::vector<flatbuffers::Offset<wire::Value>> vals;
      std::vector<flatbuffers::Offset<flatbuffers::String>> ks;
      vals.reserve(h.size());
      ks.reserve(h.size());
      for (const auto& [k, e] : h) {
        ks.push_back(fb.CreateString(k));
        vals.push_back(encode_value(fb, e, refs));
      }
      keys = fb.CreateVector(ks);
      items = fb.CreateVector(vals);
      break;
    }
    case Type::reference:
      kind = wire::Kind::Ref;
      ref = refs(fb, *v.if_reference());
      if (ref.IsNull()) {  // the writer sends a local scalar as a copy
        kind = wire::Kind::Scalar;
        // (a scalar stores containers as references: its value travels as a copy too)
        items = encode_values(fb, ValueArray{local_copy(v.as<Scalar>().get(), 0, {})}, refs);
      }
      break;
  }
  wire::ValueBuilder b(fb);
  b.add_kind(kind);
  switch (v.type()) {
    case Type::boolean:
      b.add_b(*v.if_bool());
      break;
    case Type::integer:
      b.add_i(*v.if_int());
      break;
    case Type::number:
      b.add_d(*v.if_double());
      break;
    default:
      break;
  }
  if (!s.IsNull()) b.add_s(s);
  if (!bytes.IsNull()) b.add_bytes(bytes);
  if (!items.IsNull()) b.add_items(items);
  if (!keys.IsNull()) b.add_keys(keys);
  if (!ref.IsNull()) b.add_ref(ref);
  return b.Finish();
}

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Value>>> encode_values(
    flatbuffers::FlatBufferBuilder& fb, const ValueArray& vs, const RefWriter& refs) {
  // A short array (a job's [id, body, delivery], a call's arguments) keeps its offsets on the
  // stack: one allocation fewer for each.
  constexpr size_t kOnStack = 8;
  if (vs.size() <= kOnStack) {
    std::array<flatbuffers::Offset<wire::Value>, kOnStack> few;
    for (size_t i = 0; i < vs.size(); ++i) few[i] = encode_value(fb, vs[i], refs);
    return fb.CreateVector(few.data(), vs.size());
  }
  std::vector<flatbuffers::Offset<wire::Value>> out;
  out.reserve(vs.size());
  for (const Value& e : vs) out.push_back(encode_value(fb, e, refs));
  return fb.CreateVector(out);
}

void DecodeBudget::take_node() {
  if (nodes == 0)
    throw Error(Errc::bad_message,
                "a value with more parts than its message can hold (a shared part reached too "
                "often)");
  --nodes;
}

void DecodeBudget::take_bytes(size_t n) {
  if (n > bytes)
    throw Error(Errc::bad_message,
                "a value with more bytes than its message can hold (a shared part reached too "
                "often)");
  bytes -= n;
}

Value decode_value(const wire::Value* v, const RefReader& refs, DecodeBudget& budget) {
  if (v == nullptr) return Value();
  budget.take_node();
  switch (v->kind()) {
    case wire::Kind::Null:
      return Value();
    case wire::Kind::Bool:
      return Value(v->b());
    case wire::Kind::Int:
      return Value(v->i());
    case wire::Kind::Double:
      return Value(v->d());
    case wire::Kind::String:
      budget.take_bytes(v->s() ? v->s()->size() : 0);
      return Value(v->s() ? v->s()->str() : std::string());
    case wire::Kind::Bytes:
      budget.take_bytes(v->bytes() ? v->bytes()->size() : 0);
      return Value(Bytes{v->bytes() ? std::string(reinterpret_cast<const char*>(v->bytes()->data()),
                                                  v->bytes()->size())
                                    : std::string()});
    case wire::Kind::Array:
      return Value(decode_values(v->items(), refs, budget));
    case wire::Kind::Hash: {
      ValueHash h;
      const auto* ks = v->keys();
      const auto* vs = v->items();
      const size_t n = ks ? ks->size() : 0;
      if ((vs ? vs->size() : 0) != n)
        throw Error(Errc::bad_message, "a hash value has " + std::to_string(n) + " keys but " +
                                           std::to_string(vs ? vs->size() : 0) + " values");
      for (size_t i = 0; i < n; ++i) {
        budget.take_bytes(ks->Get(i)->size());
        h.insert_or_assign(ks->Get(i)->str(), decode_value(vs->Get(i), refs, budget));
      }
      return Value(std::move(h));
    }
    case wire::Kind::Ref:
      if (v->ref() == nullptr) throw Error(Errc::bad_message, "a reference value without a ref");
      return refs(*v->ref());
    case wire::Kind::Scalar: {
      // A copied scalar reference: a new scalar container (on a server, a new served one).
      const auto* vs = v->items();
      if (vs != nullptr && vs->size() > 1)
        throw Error(Errc::bad_message,
                    "a scalar value holds " + std::to_string(vs->size()) + " values, not one");
      return Value(Scalar(
          vs == nullptr || vs->size() == 0 ? Value() : decode_value(vs->Get(0), refs, budget)));
    }
  }
  throw Error(Errc::bad_message,
              "unknown value kind " + std::to_string(static_cast<int>(v->kind())));
}

ValueArray decode_values(const flatbuffers::Vector<flatbuffers::Offset<wire::Value>>* vs,
                         const RefReader& refs, DecodeBudget& budget) {
  ValueArray out;
  if (vs == nullptr) return out;
  out.reserve(std::min<size_t>(vs->size(), budget.nodes));
  for (const auto* e : *vs) out.push_back(decode_value(e, refs, budget));
  return out;
}

Value decode_value(const wire::Value* v, const RefReader& refs) {
  DecodeBudget budget;
  return decode_value(v, refs, budget);
}

ValueArray decode_values(const flatbuffers::Vector<flatbuffers::Offset<wire::Value>>* vs,
                         const RefReader& refs) {
  DecodeBudget budget;
  return decode_values(vs, refs, budget);
}

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::PathElem>>> encode_path(
    flatbuffers::FlatBufferBuilder& fb, const Path& path) {
  if (path.empty()) return 0;
  std::vector<flatbuffers::Offset<wire::PathElem>> out;
  out.reserve(path.size());
  for (const PathElem& e : path) {
    if (const auto* k = std::get_if<std::string>(&e)) {
      out.push_back(wire::CreatePathElem(fb, fb.CreateString(*k), 0, false));
    } else {
      out.push_back(wire::CreatePathElem(fb, 0, std::get<int64_t>(e), true));
    }
  }
  return fb.CreateVector(out);
}

Path decode_path(const flatbuffers::Vector<flatbuffers::Offset<wire::PathElem>>* path) {
  Path out;
  if (path == nullptr) return out;
  out.reserve(path->size());
  for (const auto* e : *path) {
    if (e->is_index()) {
      out.emplace_back(e->index());
    } else {
      out.emplace_back(e->key() ? e->key()->str() : std::string());
    }
  }
  return out;
}

std::string path_to_string(const Path& path) {
  std::string out;
  for (const PathElem& e : path) {
    if (const auto* k = std::get_if<std::string>(&e)) {
      out += "{" + *k + "}";
    } else {
      out += "[" + std::to_string(std::get<int64_t>(e)) + "]";
    }
  }
  return out;
}

zmq::message_t error_reply(uint64_t request_id, Errc code, const std::string& text,
                           const std::string& type, int error_number) {
  flatbuffers::FlatBufferBuilder fb(256);
  auto t = fb.CreateString(text);
  auto ty = type.empty() ? flatbuffers::Offset<flatbuffers::String>() : fb.CreateString(type);
  wire::ReplyBuilder b(fb);
  b.add_request_id(request_id);
  b.add_status(wire::Status::Error);
  b.add_error_code(static_cast<int32_t>(code));
  b.add_error_text(t);
  if (!ty.IsNull()) b.add_error_type(ty);
  if (error_number != 0) b.add_error_number(error_number);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  return body_frame(fb);
}

}  // namespace patro::detail

namespace patro {

std::string encode(const Value& v) {
  flatbuffers::FlatBufferBuilder fb(256);
  const detail::RefWriter no_refs = [](flatbuffers::FlatBufferBuilder&,
                                       const Reference&) -> flatbuffers::Offset<wire::Ref> {
    throw Error(Errc::invalid_argument, "a reference cannot be stored; store what it names");
  };
  auto value = detail::encode_value(fb, v, no_refs);
  fb.Finish(wire::CreateStoredValue(fb, value), wire::StoredValueIdentifier());
  return std::string(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());
}

Value decode(std::string_view bytes) {
  // Copy into aligned storage: FlatBuffers reads scalars in place.
  // (An empty input leaves the vector's data null, which memcpy may not be given.)
  std::vector<uint64_t> aligned((bytes.size() + 7) / 8);
  if (!bytes.empty()) std::memcpy(aligned.data(), bytes.data(), bytes.size());
  const auto* root = detail::verified_bytes<wire::StoredValue>(
      reinterpret_cast<const uint8_t*>(aligned.data()), bytes.size(), wire::StoredValueIdentifier(),
      Limits{});
  if (root == nullptr) throw Error(Errc::bad_message, "not a stored Patro value, or damaged");
  const detail::RefReader no_refs = [](const wire::Ref&) -> Value {
    throw Error(Errc::bad_message, "a stored value holds a reference");
  };
  detail::DecodeBudget budget = detail::DecodeBudget::for_body(bytes.size(), Limits{});
  return detail::decode_value(root->value(), no_refs, budget);
}

}  // namespace patro
