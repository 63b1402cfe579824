// The Patro wire, version 1: frame layout, commands, and the codec between patro::Value and the
// FlatBuffers bodies of schemas/. Every inbound body is verified before use.
//
// Frames (a ROUTER adds or strips the peer's routing id in front):
//   client -> broker   HELLO     [hdr][request id:8][Control(Hello)]
//                      REQUEST   [hdr][object id:16][request id:8][Request]
//                      REQUEST   [hdr][object id:16][request id:8][Batch]  (oneway calls; one
//                                server; answered by one REPLY, their acknowledgement)
//                      LOOKUP    [hdr][request id:8][Control(Lookup)]
//                      BROKER_INFO [hdr][request id:8][Control(BrokerInfoRequest)]
//                      LOCATE    [hdr][server id:8][Control(Locate)]
//                      HEARTBEAT [hdr][client id:8]
//                      CANCEL    [hdr][object id:16][request id:8][client id:8] (never answered)
//                      DISCONNECT[hdr]
//   broker -> client   WELCOME   [hdr][request id:8][Control(Welcome)]
//                      REPLY     [hdr][request id:8][Reply]     (also the broker's own errors)
//                      LOOKUP_REPLY [hdr][request id:8][Control(LookupReply)]
//                      BROKER_INFO_REPLY [hdr][request id:8][Control(BrokerInfoReply)]
//                      HEARTBEAT [hdr]
//                      DISCONNECT[hdr]                          (unknown to me: say hello again)
//                      SERVER_DOWN [hdr][server id:8]
//                      LOCATE_REPLY [hdr][server id:8][Control(LocateReply)]
//   server -> broker   REGISTER  [hdr][Control(Register)]
//                      HEARTBEAT [hdr][dedup hits:8][expired:8][direct:8][brokered:8]
//                      REPLY     [hdr][client routing id][request id:8][Reply]
//                      DISCONNECT[hdr]
//   broker -> server   REGISTERED[hdr][Control(Registered)]
//                      REQUEST   [hdr][client routing id][object id:16][request id:8][Request]
//                      HEARTBEAT [hdr]
//                      DISCONNECT[hdr]                          (unknown to me: register again)
//                      CLIENT_GONE [hdr][client id:8]
//                      CANCEL    [hdr][client routing id][object id:16][request id:8][client id:8]
//   client -> server lane's direct ROUTER (the direct path; the ROUTER adds the client's routing
//   id)
//                      REQUEST   [hdr][object id:16][request id:8][Request or Batch] ([attempt])
//                      HEARTBEAT [hdr][client id:8]
//                      CANCEL    [hdr][object id:16][request id:8][client id:8]
//   server lane -> client, on its direct ROUTER
//                      REPLY     [hdr][request id:8][Reply]
//                      HEARTBEAT [hdr]
// hdr is 4 bytes: 'P' 'T' version command. Integers in id frames are big-endian.
//
// Version 2 (kEnvelopeVersion) changes REQUEST and REPLY only: the header and the ids before the
// body travel in one envelope frame, then the body frame (envelope_frame below; docs/WIRE.md).
// A peer sends it only to one that said it reads it (Welcome, Register, LocateReply carry
// wire_version), and reads both; a server answers a request in the version it came in.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "op_table.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"
#include "socket.hpp"
#include "wire_constants.hpp"

#include "batch_generated.h"
#include "control_generated.h"
#include "reply_generated.h"
#include "request_generated.h"
#include "stored_generated.h"
#include "value_generated.h"

namespace patro::detail {

inline constexpr uint8_t kWireVersion = 1;
/// The version of REQUEST and REPLY in one envelope frame: what this build sends to a peer that
/// reads it, and says it reads (wire_version in Welcome, Register and LocateReply).
inline constexpr uint8_t kEnvelopeVersion = 2;
// The most bytes of a server's secret (ServerOptions::server_secret), which a REGISTER carries
// as its restart_proof: a server refuses a longer one, and the broker a REGISTER with one.
inline constexpr size_t kMaxServerSecret = 256;

// The commands, the header's fourth byte: schemas/wire.json's "commands" (with what each carries).
enum class Command : uint8_t {
#define PATRO_COMMAND_ENUMERATOR(name, value, wire_name, text) name = value,
  PATRO_COMMAND_ROWS(PATRO_COMMAND_ENUMERATOR)
#undef PATRO_COMMAND_ENUMERATOR
};
const char* command_name(Command c) noexcept;

zmq::message_t header_frame(Command c);
/// The command of a header frame; nullopt if it is not a Patro v1 header.
std::optional<Command> parse_header(const zmq::message_t& frame) noexcept;
/// A REQUEST header as the broker forwards it to a server: the 4 header bytes, then when the
/// broker forwarded it (its monotonic clock in ns, big-endian), so the request's age travels in a
/// frame the server reads anyway.
zmq::message_t stamped_header_frame(Command c, uint64_t stamp);
/// The command of a plain or a stamped header frame, and the stamp (0 for a plain one).
std::optional<Command> parse_header(const zmq::message_t& frame, uint64_t& stamp) noexcept;

// --- Version 2 envelopes (REQUEST and REPLY) ---
// One frame: 'P' 'T' 2 command flags, then by the flags' bits
//   REQUEST  [stamp:8 (bit 0)][routing length:1, routing (bit 1)] object id:16 request id:8
//            [attempt:8 (bit 2)]
//   REPLY    [routing length:1, routing (bit 1)] request id:8
// stamp: when the broker forwarded it (broker -> server); routing: the client's routing id at the
// broker (broker <-> server, at most 255 bytes); attempt: a resent request's. The body follows in
// the next frame, or (bit 3, inline) in this one, after the fields; then no frame follows. Any
// other flag bit, length or command is malformed.
namespace envelope_flag {
inline constexpr uint8_t kStamp = 1;
inline constexpr uint8_t kRouting = 2;
inline constexpr uint8_t kAttempt = 4;
inline constexpr uint8_t kInline = 8;
/// On a REQUEST: its sender reads its reply in a bundle (version 3). Sent only to a peer that
/// said it reads version 3; the reply to one without it is never bundled.
inline constexpr uint8_t kReadsBundles = 16;
/// The frame is a bundle: no fields follow the flags, but envelopes (bundle_frame below).
inline constexpr uint8_t kBundle = 32;
}  // namespace envelope_flag
/// The most bytes of a routing id in an envelope (ZeroMQ's own limit for routing ids).
inline constexpr size_t kMaxEnvelopeRouting = 255;
/// The largest body pack_envelope puts inside the envelope (one frame, one CURVE box, one message
/// in each queue); a larger one keeps a frame of its own, which is moved, never copied.
inline constexpr size_t kMaxInlineBody = 4096;

// --- Version 3: bundles (docs/WIRE.md "Bundles") ---
// A bundle is one frame holding several inline envelopes of one command, each a whole REQUEST
// (client -> a lane's direct ROUTER) or a whole REPLY (a lane -> its direct client):
//   'P' 'T' 2 command kBundle, then for each envelope [length:4, big-endian][envelope]
// Each envelope inside is an inline envelope of the bundle's command, without kBundle; there are
// 1 to kMaxBundle of them and nothing after the last. A bundle is one CURVE box and one message
// in each queue it passes, whatever the number of calls it carries. Anything malformed refuses
// the bundle whole. Sent only to a peer that reads version 3 (a server's Register and the
// LocateReply say so; a client says so in each request, by kReadsBundles).
/// The wire version of bundles, in Register and LocateReply.
inline constexpr uint8_t kBundleVersion = 3;
/// The most envelopes in one bundle.
inline constexpr size_t kMaxBundle = 64;
/// A sender starts a new bundle rather than grow one past this many bytes.
inline constexpr size_t kMaxBundleBytes = 64 * 1024;

/// Whether a frame is a bundle's ('P' 'T' 2, a REQUEST or REPLY, flags kBundle alone); its
/// envelopes are checked by split_bundle.
bool is_bundle(const zmq::message_t& frame) noexcept;
/// The bytes a frame adds to a bundle (its length field and itself).
inline size_t bundled_size(const zmq::message_t& envelope) {
  return 4 + envelope.size();
}
/// One bundle of the envelopes: each an inline envelope frame (pack_envelope's, with its body
/// inside) of the same command, 1 to kMaxBundle of them. They are copied, not moved.
zmq::message_t bundle_frame(const std::vector<const zmq::message_t*>& envelopes);
/// The envelopes a bundle holds, in order, as views into frame (valid while it is); false, out
/// empty, for a malformed bundle: not a bundle, a length past the end, an envelope that is
/// malformed, not inline, of another command or itself a bundle, none, or more than kMaxBundle.
bool bundled_envelopes(const zmq::message_t& frame, std::vector<std::string_view>& out);
/// bundled_envelopes, each copied into a frame of its own (appended to out); false, out as it
/// was, for a malformed bundle.
bool split_bundle(const zmq::message_t& frame, std::vector<zmq::message_t>& out);
/// The flags byte of an envelope (0 for a frame that is not one).
uint8_t envelope_flags(const zmq::message_t& frame) noexcept;

/// Whether a frame starts as a version 2 envelope does ('P' 'T' 2); not otherwise checked.
bool is_envelope(const zmq::message_t& frame) noexcept;
/// Packs the version 1 frames of a REQUEST or REPLY starting at m[at] into an envelope that holds
/// the body (one frame) or, for a body over kMaxInlineBody, an envelope and the body: [hdr or
/// stamped hdr]([client routing id])[object id][request id][body]([attempt]) for a REQUEST,
/// [hdr]([client routing id])[request id][body] for a REPLY; routed: whether the routing frame is
/// there. reads_bundles (a REQUEST only): the sender reads its reply in a bundle
/// (envelope_flag::kReadsBundles). Returns false, leaving m as it was, for anything else (it goes
/// as version 1).
bool pack_envelope(Multipart& m, size_t at, bool routed, bool reads_bundles = false);
/// Replaces the envelope at m[at] by the version 1 frames it stands for, the body after its ids
/// and before the attempt, so that code reading version 1 reads it. An envelope that holds its
/// body is the last frame; otherwise at most one frame (the body) may follow it, and with none
/// the version 1 frames lack the body (and are answered bad_message as such). Returns false,
/// leaving m as it was, for a malformed envelope.
bool unpack_envelope(Multipart& m, size_t at);
/// unpack_envelope for a receiver that also needs the connection's properties (its CURVE key, its
/// descriptor), which the version 1 frames made from an envelope lack: if m[at] is an envelope,
/// kept gets a copy of it and m is unpacked; otherwise kept stays empty and m as it was. False
/// only for a malformed envelope (m as it was, kept empty).
bool unpack_envelope_keeping(Multipart& m, size_t at, zmq::message_t& kept);
/// An envelope that holds its body (envelope_flag::kInline), read where it lies: no frame is made.
struct InlineEnvelope {
  bool request = false;  // else a REPLY
  uint8_t flags = 0;
  uint64_t stamp = 0;        // with kStamp
  std::string_view routing;  // with kRouting
  ObjectId object;           // a REQUEST's
  uint64_t request_id = 0;
  std::optional<uint64_t> attempt;  // with kAttempt
  std::string_view body;            // after the fields
};
/// The fields and body of a well-formed inline REQUEST or REPLY envelope, as views into bytes;
/// nullopt for anything else (malformed, or its body in a frame of its own: unpack_envelope).
std::optional<InlineEnvelope> read_inline_envelope(std::string_view bytes) noexcept;
std::optional<InlineEnvelope> read_inline_envelope(const zmq::message_t& frame) noexcept;
/// A REPLY's inline envelope: what pack_envelope makes of [hdr]([routing])[request id][body] for
/// a body of at most kMaxInlineBody bytes, made without those frames. routing: the client's
/// routing id at the broker (at most kMaxEnvelopeRouting bytes; empty: none, a direct reply).
zmq::message_t reply_envelope(uint64_t request_id, const zmq::message_t& body,
                              std::string_view routing = {});
/// Appends a REPLY to out as a peer that reads wire version `version` reads it: from version 2
/// its envelope (reply_envelope's one frame for a body of at most kMaxInlineBody, else
/// pack_envelope's envelope and body), in version 1 [hdr]([routing])[request id][body]. routed:
/// with the client's routing at the broker (a lane's reply through a broker).
void append_reply(Multipart& out, bool routed, std::string_view routing, uint64_t request_id,
                  zmq::message_t body, uint8_t version);
/// The object id a version 2 REQUEST envelope names, without unpacking it; nullopt for anything
/// else (another command, a malformed envelope).
std::optional<ObjectId> envelope_object_id(const zmq::message_t& frame) noexcept;

zmq::message_t u64_frame(uint64_t v);
std::optional<uint64_t> parse_u64(const zmq::message_t& frame) noexcept;
/// A list of u64s in one frame, each big-endian (SERVER_DOWN's request ids); nullopt for a frame
/// whose size is not a multiple of 8.
zmq::message_t u64_list_frame(const std::vector<uint64_t>& vs);
std::optional<std::vector<uint64_t>> parse_u64_list(const zmq::message_t& frame);
zmq::message_t object_id_frame(const ObjectId& id);
std::optional<ObjectId> parse_object_id(const zmq::message_t& frame) noexcept;

/// Copies a finished builder into a message.
zmq::message_t body_frame(const flatbuffers::FlatBufferBuilder& fb);

/// Storage for a body that arrived misaligned. libzmq gives no alignment guarantee for frame data
/// and FlatBuffers reads 4- and 8-byte scalars in place, so such a body is verified and read in an
/// aligned copy. The root a verified_* call returns points into the frame or into this scratch;
/// keep both alive while using it.
using AlignedScratch = std::vector<uint64_t>;

/// The frame's bytes at an 8-byte aligned address: the frame itself, or a copy in scratch.
const uint8_t* aligned_bytes(const zmq::message_t& frame, AlignedScratch& scratch);

/// The most tables a body of size bytes may hold, as the verifier counts them (each time one is
/// reached, so a sub-table the body shares counts at every place that names it). An honest body
/// writes each table once, and each costs it at least 8 bytes (the table's offset to its vtable,
/// and the offset that names it); more is a forged body that a kilobyte would expand without end.
inline flatbuffers::uoffset_t max_tables_in(size_t size, const Limits& limits) {
  return static_cast<flatbuffers::uoffset_t>(std::min<size_t>(limits.max_tables, size / 4 + 64));
}

/// Verifies bytes (at an 8-byte aligned address) against a root type and identifier within the
/// limits; nullptr if bad.
template <class T>
const T* verified_bytes(const uint8_t* data, size_t size, const char* identifier,
                        const Limits& limits) {
  if (size < 8 || size > limits.max_message_size) return nullptr;
  if (!flatbuffers::BufferHasIdentifier(data, identifier)) return nullptr;
  flatbuffers::Verifier::Options opts;
  opts.max_depth = limits.max_depth;
  opts.max_tables = max_tables_in(size, limits);
  flatbuffers::Verifier verifier(data, size, opts);
  if (!verifier.VerifyBuffer<T>(identifier)) return nullptr;
  return flatbuffers::GetRoot<T>(data);
}

/// Verifies a body against its root type and identifier within the limits; nullptr if bad.
template <class T>
const T* verified_root(const zmq::message_t& frame, const char* identifier, const Limits& limits,
                       AlignedScratch& scratch) {
  if (frame.size() < 8 || frame.size() > limits.max_message_size) return nullptr;
  return verified_bytes<T>(aligned_bytes(frame, scratch), frame.size(), identifier, limits);
}

const wire::Request* verified_request(const zmq::message_t& f, const Limits& l, AlignedScratch& s);
const wire::Reply* verified_reply(const zmq::message_t& f, const Limits& l, AlignedScratch& s);
const wire::Control* verified_control(const zmq::message_t& f, const Limits& l, AlignedScratch& s);
const wire::Batch* verified_batch(const zmq::message_t& f, const Limits& l, AlignedScratch& s);
/// A reply this process built (one its reply cache kept), read without the verifier, which only
/// a peer's bytes need; nullptr if it is not a Reply at all.
const wire::Reply* own_reply(const zmq::message_t& f, AlignedScratch& s);
/// Whether a REQUEST body is a Batch of oneway calls (by its file identifier; not verified).
bool is_batch(const zmq::message_t& f) noexcept;

// --- Values ---

/// How references are written: the server turns local nodes into ids, the client sends ids and
/// paths of proxies. A null offset asks encode_value to send a local patro::Scalar as a copy
/// (Kind::Scalar).
using RefWriter = std::function<flatbuffers::Offset<wire::Ref>(flatbuffers::FlatBufferBuilder&,
                                                               const Reference&)>;
/// How references are read: the server resolves ids to its own objects, the client makes
/// remote references bound to its connection.
using RefReader = std::function<Value(const wire::Ref&)>;

/// How deep a copied structure may go, on either side (a client's local values, a server's
/// copy() reply): deeper (or a container that contains itself) is Errc::invalid_argument. Within
/// what the FlatBuffers verifier accepts (Limits::max_depth, 128 tables).
inline constexpr unsigned kMaxCopyDepth = 100;

/// A client's arguments as they travel: every local container (a patro::Array, Hash or Scalar
/// that no server serves) is replaced by a deep copy: arrays and hashes become copied ValueArray
/// and ValueHash (the server stores them as new served containers), a scalar a new local
/// patro::Scalar holding a copy, which the client's RefWriter sends as a wire Kind::Scalar (by
/// returning a null offset). A local object of a class, code or file handle, and a local container
/// marked Reference::callback, is served for callbacks by serve (the client's callback host), which
/// returns the reference that travels instead; with no serve it is refused with
/// Errc::invalid_argument. Returns args itself when it holds nothing local, else the copy in
/// scratch.
using LocalServer = std::function<Value(const Reference&)>;
const ValueArray& local_copies(const ValueArray& args, ValueArray& scratch,
                               const LocalServer& serve = {});

flatbuffers::Offset<wire::Value> encode_value(flatbuffers::FlatBufferBuilder& fb, const Value& v,
                                              const RefWriter& refs);
flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Value>>> encode_values(
    flatbuffers::FlatBufferBuilder& fb, const ValueArray& vs, const RefWriter& refs);
/// What the values of one body may decode to: at most nodes values and bytes of string, bytes and
/// key payload, counting a part the body shares (one sub-table or string named from many places)
/// each time it is reached. An honest sender writes each value once, so its values fit in what
/// its body's size allows; the defaults are what the largest body allowed may hold (Limits).
struct DecodeBudget {
  size_t nodes;
  size_t bytes;
  explicit DecodeBudget(const Limits& limits = Limits{})
      : nodes(limits.max_tables), bytes(limits.max_message_size) {}
  DecodeBudget(size_t max_nodes, size_t max_bytes) : nodes(max_nodes), bytes(max_bytes) {}
  /// For a body of size bytes: nodes as the verifier counts tables, payload its size.
  static DecodeBudget for_body(size_t size, const Limits& limits) {
    return DecodeBudget(max_tables_in(size, limits), std::min(size, limits.max_message_size));
  }
  /// Takes one value, or n bytes; Error(bad_message) past the budget.
  void take_node();
  void take_bytes(size_t n);
};

/// Decodes a verified value within budget. Throws Error(bad_message) for an unknown kind, or
/// past the budget.
Value decode_value(const wire::Value* v, const RefReader& refs, DecodeBudget& budget);
ValueArray decode_values(const flatbuffers::Vector<flatbuffers::Offset<wire::Value>>* vs,
                         const RefReader& refs, DecodeBudget& budget);
/// The same, each call within a DecodeBudget of its own (the Limits defaults).
Value decode_value(const wire::Value* v, const RefReader& refs);
ValueArray decode_values(const flatbuffers::Vector<flatbuffers::Offset<wire::Value>>* vs,
                         const RefReader& refs);

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::PathElem>>> encode_path(
    flatbuffers::FlatBufferBuilder& fb, const Path& path);
Path decode_path(const flatbuffers::Vector<flatbuffers::Offset<wire::PathElem>>* path);
std::string path_to_string(const Path& path);

/// A Reply body carrying an error.
zmq::message_t error_reply(uint64_t request_id, Errc code, const std::string& text,
                           const std::string& type = {}, int error_number = 0);

}  // namespace patro::detail
