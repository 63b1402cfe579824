// Writes the seed corpus of the fuzz targets from the real encoder: valid bodies and frames of
// every kind, and broken ones (truncated, wrong identifier, flipped bytes, a hash with more keys
// than values); message sequences of fake peers for the broker, and write-ahead log files of
// both formats, whole, torn and damaged. Usage: fuzz-corpus <dir> (tests/fuzz/corpus); writes
// <dir>/<target>/seed-*.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "patro/config.hpp"
#include "wal_format.hpp"
#include "wire.hpp"

namespace {
namespace fs = std::filesystem;
using namespace patro;
using Bytes_ = std::string;

fs::path root;

void write(const std::string& target, const std::string& name, const Bytes_& bytes) {
  const fs::path dir = root / target;
  fs::create_directories(dir);
  std::ofstream(dir / ("seed-" + name), std::ios::binary) << bytes;
}

Bytes_ bytes_of(const flatbuffers::FlatBufferBuilder& fb) {
  return Bytes_(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());
}

// Valid and broken variants of one body.
void write_body(const std::string& target, const std::string& name, const Bytes_& b) {
  write(target, name, b);
  write(target, name + "-truncated", b.substr(0, b.size() / 2));
  Bytes_ flipped = b;
  for (size_t i = 8; i < flipped.size(); i += 7) flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
  write(target, name + "-flipped", flipped);
  Bytes_ wrong_id = b;
  if (wrong_id.size() >= 8) wrong_id[4] = 'X';
  write(target, name + "-wrong-identifier", wrong_id);
}

const detail::RefWriter refs = [](flatbuffers::FlatBufferBuilder& fb, const Reference& r) {
  return wire::CreateRef(fb, r.id.server, r.id.object);
};

Value sample_value() {
  Reference r;
  r.id = ObjectId{0x1234, 0x5678};
  return Value::hash({{"int", 42},
                      {"str", "text"},
                      {"list", Value::array({1, 2.5, true, nullptr, Bytes{"\x00\x01"}})},
                      {"ref", Value(r)}});
}

flatbuffers::Offset<wire::Request> request(flatbuffers::FlatBufferBuilder& fb, wire::Op op,
                                           uint64_t id) {
  auto path = detail::encode_path(fb, Path{std::string("def"), int64_t{1}, std::string("ghi")});
  auto args = detail::encode_values(fb, ValueArray{sample_value(), "two", 3}, refs);
  auto name = fb.CreateString("method");
  wire::RequestBuilder b(fb);
  b.add_request_id(id);
  b.add_client_id(7);
  b.add_timeout_ms(30000);
  b.add_server(0x1234);
  b.add_object(0x5678);
  b.add_op(op);
  b.add_path(path);
  b.add_name(name);
  b.add_args(args);
  return b.Finish();
}

Bytes_ request_body(wire::Op op) {
  flatbuffers::FlatBufferBuilder fb;
  fb.Finish(request(fb, op, 1), wire::RequestIdentifier());
  return bytes_of(fb);
}

Bytes_ batch_body() {
  flatbuffers::FlatBufferBuilder fb;
  std::vector<flatbuffers::Offset<wire::Request>> rs{request(fb, wire::Op::Set, 1),
                                                     request(fb, wire::Op::Call, 2)};
  auto v = fb.CreateVector(rs);
  fb.Finish(wire::CreateBatch(fb, v), wire::BatchIdentifier());
  return bytes_of(fb);
}

Bytes_ reply_body() {
  flatbuffers::FlatBufferBuilder fb;
  auto results = detail::encode_values(fb, ValueArray{sample_value(), 19}, refs);
  std::vector<flatbuffers::Offset<wire::ChangedArg>> changed{
      wire::CreateChangedArg(fb, 0, detail::encode_value(fb, 25, refs))};
  auto ch = fb.CreateVector(changed);
  wire::ReplyBuilder b(fb);
  b.add_request_id(1);
  b.add_results(results);
  b.add_changed_args(ch);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  return bytes_of(fb);
}

// A hash value whose keys outnumber its items (decode_value must refuse it).
Bytes_ reply_bad_hash() {
  flatbuffers::FlatBufferBuilder fb;
  auto keys = fb.CreateVectorOfStrings({"a", "b"});
  std::vector<flatbuffers::Offset<wire::Value>> items{detail::encode_value(fb, 1, refs)};
  auto iv = fb.CreateVector(items);
  wire::ValueBuilder vb(fb);
  vb.add_kind(wire::Kind::Hash);
  vb.add_keys(keys);
  vb.add_items(iv);
  std::vector<flatbuffers::Offset<wire::Value>> results{vb.Finish()};
  auto rv = fb.CreateVector(results);
  wire::ReplyBuilder b(fb);
  b.add_results(rv);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  return bytes_of(fb);
}

Bytes_ control(wire::ControlBody kind) {
  flatbuffers::FlatBufferBuilder fb;
  flatbuffers::Offset<void> body;
  auto binding = [&] {
    return wire::CreateNameBindingDirect(fb, "jobs", 0x1234, 0x5678, "HASH", "HASH");
  };
  switch (kind) {
    case wire::ControlBody::Hello:
      body = wire::CreateHello(fb, 7).Union();
      break;
    case wire::ControlBody::Welcome:
      body = wire::CreateWelcome(fb, 1000, 3, 16u << 20).Union();
      break;
    case wire::ControlBody::Lookup:
      body = wire::CreateLookupDirect(fb, "jobs").Union();
      break;
    case wire::ControlBody::LookupReply:
      body = wire::CreateLookupReply(fb, true, binding()).Union();
      break;
    case wire::ControlBody::Registered:
      body = wire::CreateRegisteredDirect(fb, "tcp://127.0.0.1:5555", 1000, 3).Union();
      break;
    case wire::ControlBody::BrokerInfoRequest:
      body = wire::CreateBrokerInfoRequest(fb).Union();
      break;
    case wire::ControlBody::BrokerInfoReply: {
      std::vector<flatbuffers::Offset<wire::NameBinding>> names{binding()};
      std::vector<flatbuffers::Offset<wire::ServerInfo>> servers{
          wire::CreateServerInfo(fb, 0x1234, 4, 2)};
      body = wire::CreateBrokerInfoReplyDirect(fb, &names, &servers, 1, 2, 3, 4, 5, 6).Union();
      break;
    }
    default: {
      std::vector<flatbuffers::Offset<wire::NameBinding>> names{binding()};
      body = wire::CreateRegisterDirect(fb, 0x1234, 0, 4, &names).Union();
      kind = wire::ControlBody::Register;
    }
  }
  fb.Finish(wire::CreateControl(fb, kind, body), wire::ControlIdentifier());
  return bytes_of(fb);
}

Bytes_ frame_bytes(const zmq::message_t& m) {
  return Bytes_(static_cast<const char*>(m.data()), m.size());
}

// The fuzz_frames input: a side byte, then frames with 2-byte little-endian lengths.
Bytes_ frames(bool from_server, const std::vector<Bytes_>& fs_) {
  Bytes_ out(1, from_server ? '\1' : '\0');
  for (const Bytes_& f : fs_) {
    out += static_cast<char>(f.size() & 0xff);
    out += static_cast<char>((f.size() >> 8) & 0xff);
    out += f;
  }
  return out;
}

// A Register from lane `lane` of server `id`, binding `name` to one of its objects.
Bytes_ register_body(uint64_t id, uint32_t lane, uint64_t incarnation, const char* name) {
  flatbuffers::FlatBufferBuilder fb;
  std::vector<flatbuffers::Offset<wire::NameBinding>> names{
      wire::CreateNameBindingDirect(fb, name, id, 0x5678, "HASH", "HASH")};
  auto body = wire::CreateRegisterDirect(fb, id, lane, 4, &names, incarnation);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, body.Union()),
            wire::ControlIdentifier());
  return bytes_of(fb);
}

// One message of the fuzz_broker input: from peer `peer` (0-7) on the back port or the front,
// after `wait` half-seconds, its frames after the routing id.
Bytes_ message(unsigned peer, bool back, unsigned wait, const std::vector<Bytes_>& fs_) {
  Bytes_ out;
  out += static_cast<char>(peer | (back ? 8u : 0u) | (wait << 4));
  out += static_cast<char>(fs_.size());
  for (const Bytes_& f : fs_) {
    out += static_cast<char>(f.size() & 0xff);
    out += static_cast<char>((f.size() >> 8) & 0xff);
    out += f;
  }
  return out;
}

// The fuzz_broker seeds: a server's lanes and clients going through their lives, and peers
// trying what the broker must refuse (another server's id, its replies, its SERVER_ALIVE).
void write_broker() {
  using detail::Command;
  auto hdr = [](Command c) { return frame_bytes(detail::header_frame(c)); };
  auto u64 = [](uint64_t v) { return frame_bytes(detail::u64_frame(v)); };
  const Bytes_ oid = frame_bytes(detail::object_id_frame(ObjectId{0x1234, 0x5678}));
  const Bytes_ client1 = Bytes_("\0pee", 4) + "1";  // peer 1's routing id (fuzz_broker.cpp)
  const Bytes_ reg0 =
      message(0, true, 0, {hdr(Command::register_server), register_body(0x1234, 0, 77, "jobs")});
  const Bytes_ reg2 =
      message(2, true, 0, {hdr(Command::register_server), register_body(0x1234, 1, 77, "jobs")});
  const Bytes_ hello =
      message(1, false, 0, {hdr(Command::hello), u64(1), control(wire::ControlBody::Hello)});
  const Bytes_ get =
      message(1, false, 0, {hdr(Command::request), oid, u64(5), request_body(wire::Op::Get)});
  const Bytes_ reply0 = message(0, true, 0, {hdr(Command::reply), client1, u64(5), reply_body()});
  write(
      "broker", "route",
      reg0 + reg2 + hello + get + reply0 + message(1, false, 0, {hdr(Command::heartbeat), u64(7)}) +
          message(0, true, 1, {hdr(Command::heartbeat), u64(0), u64(0), u64(0), u64(1)}) +
          message(1, false, 0, {hdr(Command::lookup), u64(6), control(wire::ControlBody::Lookup)}) +
          message(
              1, false, 0,
              {hdr(Command::broker_info), u64(7), control(wire::ControlBody::BrokerInfoRequest)}) +
          message(0, true, 0, {hdr(Command::disconnect)}) + get +
          message(1, false, 0, {hdr(Command::disconnect)}));
  write("broker", "takeover",
        reg0 + hello + get +
            message(3, true, 0,
                    {hdr(Command::register_server), register_body(0x1234, 0, 99, "jobs")}) +
            message(3, true, 0, {hdr(Command::reply), client1, u64(5), reply_body()}) +
            message(4, true, 0, {hdr(Command::server_alive), u64(0x1234)}) +
            message(4, true, 0, {hdr(Command::server_alive), u64(0x1234), u64(99)}) + reply0);
  write("broker", "expiry",
        reg0 + hello + get + message(5, false, 15, {hdr(Command::heartbeat), u64(8)}) + get +
            message(0, true, 15, {hdr(Command::server_alive), u64(0x1234), u64(77)}) + reply0);
  // Version 2: a client's get in an envelope, and the server's reply in one (the broker reads both
  // and answers the client in the version it asked in); then envelopes that are malformed.
  auto envelope = [](std::vector<Bytes_> fs, bool routed) {
    detail::Multipart m;
    for (const Bytes_& f : fs) m.emplace_back(f.data(), f.size());
    if (!detail::pack_envelope(m, 0, routed)) std::abort();
    std::vector<Bytes_> out;
    for (const auto& f : m) out.push_back(frame_bytes(f));
    return out;
  };
  write("broker", "route-v2",
        reg0 + hello +
            message(1, false, 0,
                    envelope({hdr(Command::request), oid, u64(5), request_body(wire::Op::Get)},
                             false)) +
            message(0, true, 0,
                    envelope({hdr(Command::reply), client1, u64(5), reply_body()}, true)) +
            message(1, false, 0, {Bytes_("PT\x02\x03\x00", 5)}) +
            message(1, false, 0, {Bytes_("PT\x02\x03\x02\x20", 6) + oid, "b"}) +
            message(0, true, 0, {Bytes_("PT\x02\x04\x00", 5) + u64(5), reply_body(), "x"}));
  write("broker", "bad-frames",
        message(0, true, 0, {"PT\x02\x03"}) + message(1, false, 0, {}) +
            message(1, false, 0, {hdr(Command::request), "abc", u64(1)}) +
            message(2, true, 0, {hdr(Command::register_server), "not a body"}) +
            message(2, true, 0, {hdr(Command::heartbeat), u64(1)}));
}

// The fuzz_wal seeds: files of both formats, whole, torn and damaged.
void write_wal() {
  namespace wf = worker::wal_format;
  const Bytes_ header = wf::file_header();
  const Bytes_ r1 = wf::frame(1, "set a 1"), r2 = wf::frame(2, "set b 2"),
               r3 = wf::frame(3, "!refused by its owner");
  write("wal", "empty-file", header);
  write("wal", "three-records", header + r1 + r2 + wf::frame(3, "del a"));
  write("wal", "torn-tail", header + r1 + r2.substr(0, r2.size() - 3));
  write("wal", "torn-header", header.substr(0, 10));
  Bytes_ flipped = header + r1 + r2;
  flipped[header.size() + 22] ^= 1;
  write("wal", "flipped-byte", flipped);
  write("wal", "garbage-at-head", Bytes_(8, '\x7f') + header + r1);
  write("wal", "sequence-gap", header + r1 + wf::frame(3, "set c 3"));
  write("wal", "refused-record", header + r1 + r3 + r2);
  Bytes_ version2 = header;
  version2[8] = 2;
  write("wal", "version-2", version2 + r1);
  // Format 0: [length][crc32][payload], no header.
  auto legacy = [](const Bytes_& payload) {
    Bytes_ out;
    for (uint32_t v :
         {static_cast<uint32_t>(payload.size()),
          static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(payload.data()),
                                      static_cast<uInt>(payload.size())))})
      for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
    return out + payload;
  };
  write("wal", "legacy", legacy("set a 1") + legacy("set b 2"));
  write("wal", "legacy-torn", legacy("set a 1") + legacy("set b 2").substr(0, 9));
  write("wal", "legacy-zeros", legacy("set a 1") + Bytes_(12, '\0'));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  root = argv[1];
  using detail::Command;
  for (auto op : {wire::Op::Get, wire::Op::Set, wire::Op::Call, wire::Op::Lock, wire::Op::Splice})
    write_body("request", wire::EnumNameOp(op), request_body(op));
  write_body("batch", "two-calls", batch_body());
  write_body("reply", "results", reply_body());
  write("reply", "bad-hash", reply_bad_hash());
  write("reply", "error", frame_bytes(detail::error_reply(9, Errc::not_found, "no such key")));
  for (auto k :
       {wire::ControlBody::Register, wire::ControlBody::Hello, wire::ControlBody::Welcome,
        wire::ControlBody::Lookup, wire::ControlBody::LookupReply, wire::ControlBody::Registered,
        wire::ControlBody::BrokerInfoRequest, wire::ControlBody::BrokerInfoReply})
    write_body("control", wire::EnumNameControlBody(k), control(k));

  const Config cfg({"tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"},
                   {ObjectEntry{ObjectId{0x1234, 0x5678}, "HASH", "HASH"},
                    ObjectEntry{ObjectId{0x1234, 0x9abc}, "Foofie", "HASH"}});
  const Bytes_ text = cfg.to_string();
  write("config", "two-objects", text);
  write("config", "truncated", text.substr(0, text.size() / 2));
  write("config", "no-broker", R"({"version":1,"brokers":[],"objects":[]})");
  write("config", "version-2", R"({"version":2,"brokers":["tcp://h:1"]})");
  write("config", "bad-id", R"({"version":1,"brokers":["tcp://h:1"],"objects":[{"id":"zz"}]})");
  write("config", "stored-value", encode(sample_value().as<ValueHash>().at("list")));

  const Bytes_ routing = "\x00\x12\x34\x56\x78";
  const Bytes_ oid = frame_bytes(detail::object_id_frame(ObjectId{0x1234, 0x5678}));
  const Bytes_ rid = frame_bytes(detail::u64_frame(1));
  auto hdr = [](Command c) { return frame_bytes(detail::header_frame(c)); };
  write("frames", "request",
        frames(false, {routing, hdr(Command::request), oid, rid, request_body(wire::Op::Get)}));
  write("frames", "batch", frames(false, {routing, hdr(Command::request), oid, rid, batch_body()}));
  write("frames", "request-short-id",
        frames(false, {routing, hdr(Command::request), "abc", rid, request_body(wire::Op::Get)}));
  write("frames", "request-4-frames", frames(false, {routing, hdr(Command::request), oid, rid}));
  write("frames", "hello",
        frames(false, {routing, hdr(Command::hello), rid, control(wire::ControlBody::Hello)}));
  write("frames", "lookup",
        frames(false, {routing, hdr(Command::lookup), rid, control(wire::ControlBody::Lookup)}));
  write("frames", "heartbeat", frames(false, {routing, hdr(Command::heartbeat), rid}));
  write("frames", "bad-header", frames(false, {routing, "PT\x02\x03", oid, rid}));
  write(
      "frames", "register",
      frames(true, {routing, hdr(Command::register_server), control(wire::ControlBody::Register)}));
  write("frames", "reply",
        frames(true, {routing, hdr(Command::reply), routing, rid, reply_body()}));
  // Version 2: the envelope holding the body, and (a body over kMaxInlineBody) the envelope and
  // the body in a frame of its own.
  auto packed = [](std::vector<Bytes_> fs, bool routed) {
    detail::Multipart m;
    for (const Bytes_& f : fs) m.emplace_back(f.data(), f.size());
    if (!detail::pack_envelope(m, 1, routed)) std::abort();
    std::vector<Bytes_> out;
    for (const auto& f : m) out.push_back(frame_bytes(f));
    return out;
  };
  write("frames", "request-v2",
        frames(false, packed({routing, hdr(Command::request), oid, rid, request_body(wire::Op::Get),
                              frame_bytes(detail::u64_frame(2))},
                             false)));
  write("frames", "reply-v2",
        frames(true, packed({routing, hdr(Command::reply), routing, rid, reply_body()}, true)));
  write("frames", "request-v2-large-body",
        frames(false, packed({routing, hdr(Command::request), oid, rid,
                              Bytes_(detail::kMaxInlineBody + 1, 'b')},
                             false)));
  write("frames", "bad-envelope", frames(false, {routing, Bytes_("PT\x02\x03\x02\x40", 6), rid}));
  // Version 3: bundles of inline envelopes, as a client sends to a lane and a lane answers.
  auto bundled = [](const std::vector<std::vector<Bytes_>>& each) {
    std::vector<zmq::message_t> envelopes;
    for (const auto& fs : each) {
      detail::Multipart m;
      for (const Bytes_& f : fs) m.emplace_back(f.data(), f.size());
      if (!detail::pack_envelope(m, 0, false) || m.size() != 1) std::abort();
      envelopes.push_back(std::move(m[0]));
    }
    std::vector<const zmq::message_t*> ptrs;
    for (const auto& e : envelopes) ptrs.push_back(&e);
    return frame_bytes(detail::bundle_frame(ptrs));
  };
  auto id = [](uint64_t v) { return frame_bytes(detail::u64_frame(v)); };
  write("frames", "request-v3-bundle",
        frames(false,
               {routing, bundled({{hdr(Command::request), oid, id(7), request_body(wire::Op::Get)},
                                  {hdr(Command::request), oid, id(8), request_body(wire::Op::Get)},
                                  {hdr(Command::request), oid, id(9), batch_body()}})}));
  write("frames", "reply-v3-bundle",
        frames(true, {routing, bundled({{hdr(Command::reply), id(7), reply_body()},
                                        {hdr(Command::reply), id(8), reply_body()}})}));
  write_broker();
  write_wal();
  std::printf("corpus written under %s\n", root.c_str());
  return 0;
}
