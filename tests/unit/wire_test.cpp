// The wire: id and header frames, verified bodies and the value codec, including every malformed
// case a peer can send.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "log.hpp"
#include "patro/containers.hpp"
#include "patro/error.hpp"
#include "patro/logging.hpp"
#include "trace.hpp"
#include "wire.hpp"

using namespace patro;
using detail::Command;

namespace {
zmq::message_t frame(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}
std::string bytes(const zmq::message_t& m) {
  return std::string(static_cast<const char*>(m.data()), m.size());
}
const detail::RefWriter refs = [](flatbuffers::FlatBufferBuilder& fb, const Reference& r) {
  return wire::CreateRef(fb, r.id.server, r.id.object);
};
const detail::RefReader read_refs = [](const wire::Ref& r) {
  Reference ref;
  ref.id = ObjectId{r.server(), r.object()};
  return Value(ref);
};

Value round_trip(const Value& v) {
  flatbuffers::FlatBufferBuilder fb;
  auto results = detail::encode_values(fb, ValueArray{v}, refs);
  wire::ReplyBuilder b(fb);
  b.add_results(results);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  const zmq::message_t m = detail::body_frame(fb);
  detail::AlignedScratch scratch;
  const wire::Reply* r = detail::verified_reply(m, Limits{}, scratch);
  REQUIRE(r != nullptr);
  const ValueArray out = detail::decode_values(r->results(), read_refs);
  REQUIRE(out.size() == 1);
  return out[0];
}
}  // namespace

TEST_CASE("header frames round-trip for every command, and anything else is refused") {
  for (int c = static_cast<int>(Command::hello); c <= static_cast<int>(Command::log_line); ++c) {
    const auto cmd = static_cast<Command>(c);
    const auto parsed = detail::parse_header(detail::header_frame(cmd));
    REQUIRE(parsed.has_value());
    CHECK(*parsed == cmd);
    CHECK(std::string(detail::command_name(cmd)).size() > 0);
  }
  CHECK(bytes(detail::header_frame(Command::request)) == std::string("PT\x01\x03", 4));
  CHECK_FALSE(detail::parse_header(frame("")));
  CHECK_FALSE(detail::parse_header(frame("PT\x01")));                          // short
  CHECK_FALSE(detail::parse_header(frame(std::string("PT\x01\x03\x00", 5))));  // long
  CHECK_FALSE(detail::parse_header(frame("XT\x01\x03")));                      // bad tag
  CHECK_FALSE(detail::parse_header(frame("PX\x01\x03")));
  CHECK_FALSE(detail::parse_header(frame("PT\x02\x03")));                  // other version
  CHECK_FALSE(detail::parse_header(frame(std::string("PT\x01\x00", 4))));  // command 0
  CHECK_FALSE(detail::parse_header(frame("PT\x01\x19")));                  // past the last
  CHECK_FALSE(detail::parse_header(frame("PT\x01\xff")));
}

TEST_CASE("id frames are big-endian and of exact size") {
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{0x0102030405060708}, ~uint64_t{0}}) {
    const auto m = detail::u64_frame(v);
    CHECK(m.size() == 8);
    CHECK(detail::parse_u64(m) == v);
  }
  CHECK(bytes(detail::u64_frame(0x0102030405060708)) == "\x01\x02\x03\x04\x05\x06\x07\x08");
  CHECK_FALSE(detail::parse_u64(frame("")));
  CHECK_FALSE(detail::parse_u64(frame("1234567")));
  CHECK_FALSE(detail::parse_u64(frame("123456789")));

  const ObjectId id{0x1122334455667788, 0x99aabbccddeeff00};
  const auto m = detail::object_id_frame(id);
  CHECK(m.size() == 16);
  CHECK(detail::parse_object_id(m) == id);
  CHECK_FALSE(detail::parse_object_id(frame("")));
  CHECK_FALSE(detail::parse_object_id(frame(std::string(15, 'x'))));
  CHECK_FALSE(detail::parse_object_id(frame(std::string(17, 'x'))));
}

namespace {
detail::Multipart frames(std::initializer_list<std::string> parts) {
  detail::Multipart m;
  for (const std::string& p : parts) m.push_back(frame(p));
  return m;
}
std::vector<std::string> texts(const detail::Multipart& m) {
  std::vector<std::string> out;
  for (const auto& f : m) out.push_back(bytes(f));
  return out;
}
// Packs a copy of v1, whose body is "body", and checks the envelope's bytes (given without the
// inline flag and body) and that unpacking gives v1 back; then the same with the body one byte
// over kMaxInlineBody, which keeps a frame of its own.
void check_round_trip(const detail::Multipart& v1, size_t at, bool routed,
                      const std::string& envelope) {
  for (const size_t body : {size_t{4}, detail::kMaxInlineBody + 1}) {
    CAPTURE(body);
    detail::Multipart m, original;
    const bool small = body == 4;
    for (const auto& f : v1) {
      const std::string text = bytes(f) == "body" && !small ? std::string(body, 'b') : bytes(f);
      m.emplace_back(text.data(), text.size());
      original.emplace_back(text.data(), text.size());
    }
    REQUIRE(detail::pack_envelope(m, at, routed));
    CHECK(detail::is_envelope(m[at]));
    if (small) {
      REQUIRE(m.size() == at + 1);
      std::string inlined = envelope;
      inlined[4] = static_cast<char>(inlined[4] | detail::envelope_flag::kInline);
      CHECK(bytes(m[at]) == inlined + "body");
    } else {
      REQUIRE(m.size() == at + 2);
      CHECK(bytes(m[at]) == envelope);
      CHECK(bytes(m[at + 1]) == std::string(body, 'b'));
    }
    REQUIRE(detail::unpack_envelope(m, at));
    CHECK(texts(m) == texts(original));
  }
}
}  // namespace

TEST_CASE("version 2 envelopes: each hop's REQUEST and REPLY packs into one frame and back") {
  const ObjectId id{0x0102030405060708, 0x1112131415161718};
  const std::string oid = bytes(detail::object_id_frame(id));
  const std::string rid = bytes(detail::u64_frame(0x2122232425262728));
  const std::string req = bytes(detail::header_frame(Command::request));
  const std::string rep = bytes(detail::header_frame(Command::reply));
  const std::string stamped = bytes(detail::stamped_header_frame(Command::request, 0x31323334));
  const std::string env_req = std::string("PT\x02\x03", 4);
  const std::string env_rep = std::string("PT\x02\x04", 4);
  CHECK(bytes(detail::header_frame(Command::reply)) == std::string("PT\x01\x04", 4));
  // client -> broker or a lane: 1 frame (2 for a large body); a resend adds the attempt.
  check_round_trip(frames({req, oid, rid, "body"}), 0, false,
                   env_req + std::string("\x00", 1) + oid + rid);
  check_round_trip(frames({req, oid, rid, "body", bytes(detail::u64_frame(3))}), 0, false,
                   env_req + std::string("\x04", 1) + oid + rid + bytes(detail::u64_frame(3)));
  // broker -> server (behind the lane's routing id at the ROUTER): stamp and client routing.
  check_round_trip(frames({"lane", stamped, "cli", oid, rid, "body"}), 1, true,
                   env_req + std::string("\x03", 1) + bytes(detail::u64_frame(0x31323334)) +
                       "\x03"
                       "cli" +
                       oid + rid);
  // server -> broker, and to a client.
  check_round_trip(frames({rep, "cli", rid, "body"}), 0, true,
                   env_rep + std::string("\x02\x03", 2) + "cli" + rid);
  check_round_trip(frames({"client", rep, rid, "body"}), 1, false,
                   env_rep + std::string("\x00", 1) + rid);
  // An empty routing id and the longest one.
  check_round_trip(frames({rep, "", rid, "body"}), 0, true,
                   env_rep + std::string("\x02\x00", 2) + rid);
  const std::string longest(255, 'r');
  check_round_trip(frames({rep, longest, rid, "body"}), 0, true,
                   env_rep + std::string("\x02\xff", 2) + longest + rid);
  // The object id a REQUEST envelope names, read without unpacking it (a lane reading ahead).
  auto named = [](const std::string& envelope) {
    return detail::envelope_object_id(zmq::message_t(envelope.data(), envelope.size()));
  };
  CHECK(named(env_req + std::string("\x00", 1) + oid + rid) == id);
  CHECK(named(env_req + std::string("\x07", 1) + bytes(detail::u64_frame(9)) + "\x03" + "cli" +
              oid + rid + bytes(detail::u64_frame(2))) == id);
  CHECK(named(env_req + std::string("\x08", 1) + oid + rid + "body") == id);  // inline body
  CHECK(named(env_req + std::string("\x08", 1) + oid + rid) == id);           // empty, inline
  CHECK_FALSE(named(env_req + std::string("\x08", 1) + oid));                 // too short
  CHECK_FALSE(named(env_req + std::string("\x00", 1) + oid + rid + "body"));  // long, not inline
  CHECK_FALSE(named(env_req + std::string("\x00", 1) + oid));                 // too short
  CHECK_FALSE(named(env_req + std::string("\x02\x09", 2) + oid + rid));  // routing past the end
  CHECK_FALSE(named(env_rep + std::string("\x00", 1) + rid));            // a REPLY
  CHECK_FALSE(named(req));                                               // version 1
}

TEST_CASE("version 2 envelopes: what does not fit stays version 1, malformed ones are refused") {
  const std::string oid(16, 'o');
  const std::string rid(8, 'r');
  const std::string req = bytes(detail::header_frame(Command::request));
  const std::string rep = bytes(detail::header_frame(Command::reply));
  auto packs = [](detail::Multipart m, size_t at, bool routed) {
    const auto before = texts(m);
    const bool ok = detail::pack_envelope(m, at, routed);
    if (!ok) CHECK(texts(m) == before);  // left as it was
    return ok;
  };
  CHECK_FALSE(packs(frames({bytes(detail::header_frame(Command::hello)), rid, "b"}), 0, false));
  CHECK_FALSE(packs(frames({req, oid, rid}), 0, false));                 // no body
  CHECK_FALSE(packs(frames({req, oid, rid, "b", "x", "y"}), 0, false));  // too many
  CHECK_FALSE(packs(frames({req, "short", rid, "b"}), 0, false));
  CHECK_FALSE(packs(frames({req, oid, "rid", "b"}), 0, false));
  CHECK_FALSE(packs(frames({req, oid, rid, "b", "attempt"}), 0, false));
  CHECK_FALSE(packs(frames({rep, std::string(256, 'r'), rid, "b"}), 0, true));  // routing too long
  CHECK_FALSE(packs(frames({rep, rid, "b", "x"}), 0, false));  // a REPLY has no attempt
  CHECK_FALSE(packs(frames({}), 0, false));

  auto unpacks = [](detail::Multipart m) {
    const auto before = texts(m);
    const bool ok = detail::unpack_envelope(m, 0);
    if (!ok) CHECK(texts(m) == before);
    return ok;
  };
  const std::string e_req = std::string("PT\x02\x03\x00", 5);
  const std::string e_rep = std::string("PT\x02\x04\x00", 5);
  CHECK(unpacks(frames({e_req + oid + rid, "b"})));
  CHECK(unpacks(frames({e_rep + rid, "b"})));
  // No body: the version 1 frames lack it too (and are answered bad_message as such).
  detail::Multipart bare = frames({e_req + oid + rid});
  REQUIRE(detail::unpack_envelope(bare, 0));
  CHECK(bare.size() == 3);
  CHECK_FALSE(unpacks(frames({})));
  CHECK_FALSE(unpacks(frames({"PT\x02\x03"})));                      // no flags
  CHECK_FALSE(unpacks(frames({e_req + oid + rid.substr(1), "b"})));  // short
  CHECK_FALSE(unpacks(frames({e_req + oid + rid + "x", "b"})));      // long
  CHECK_FALSE(unpacks(frames({e_req + oid + rid, "b", "extra"})));   // two frames follow
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x03\x40", 5) + oid + rid, "b"})));  // flag
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x03\x20", 5) + oid + rid, "b"})));  // bundle
  // A REQUEST may say its sender reads bundles (version 3); a REPLY may not.
  detail::Multipart reads = frames({std::string("PT\x02\x03\x18", 5) + oid + rid + "b"});
  CHECK(detail::envelope_flags(reads[0]) ==
        (detail::envelope_flag::kReadsBundles | detail::envelope_flag::kInline));
  REQUIRE(detail::unpack_envelope(reads, 0));
  CHECK(texts(reads) == std::vector<std::string>{req, oid, rid, "b"});
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x04\x18", 5) + rid + "b"})));
  CHECK(detail::envelope_flags(frame(req)) == 0);
  // A body inside the envelope: then no frame may follow; an empty one is a body too.
  const std::string i_req = std::string("PT\x02\x03\x08", 5);
  detail::Multipart inlined = frames({i_req + oid + rid + "b"});
  REQUIRE(detail::unpack_envelope(inlined, 0));
  CHECK(texts(inlined) == std::vector<std::string>{req, oid, rid, "b"});
  detail::Multipart empty = frames({i_req + oid + rid});
  REQUIRE(detail::unpack_envelope(empty, 0));
  CHECK(texts(empty) == std::vector<std::string>{req, oid, rid, ""});
  CHECK_FALSE(unpacks(frames({i_req + oid + rid + "b", "b"})));  // inline, and a frame after
  CHECK_FALSE(unpacks(frames({i_req + oid + rid.substr(1)})));   // inline, ids cut short
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x04\x01", 5) + rid, "b"})));  // stamp, REPLY
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x04\x04", 5) + rid + rid, "b"})));
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x01\x00", 5) + rid, "b"})));  // HELLO
  CHECK_FALSE(unpacks(frames({std::string("PT\x03\x04\x00", 5) + rid, "b"})));  // version 3
  // A routing length past the end, or one that leaves no room for the ids.
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x04\x02\x09", 6) + rid, "b"})));
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x04\x02\xff", 6), "b"})));
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x04\x02", 5)})));
  CHECK_FALSE(unpacks(frames({std::string("PT\x02\x03\x01", 5) + "1234"})));  // short stamp
  // The envelope is never a version 1 header.
  CHECK_FALSE(detail::parse_header(frame(e_rep + rid)));
  CHECK_FALSE(detail::is_envelope(frame(req)));
}

namespace {
// An inline REQUEST envelope for request id rid with body body (reads: it says its sender reads
// bundled replies).
zmq::message_t request_envelope(uint64_t rid, const std::string& body, bool reads = false) {
  detail::Multipart m =
      frames({bytes(detail::header_frame(Command::request)),
              bytes(detail::object_id_frame(ObjectId{1, 2})), bytes(detail::u64_frame(rid)), body});
  REQUIRE(detail::pack_envelope(m, 0, false, reads));
  REQUIRE(m.size() == 1);
  return std::move(m[0]);
}
std::string be32(size_t n) {
  const char b[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8), static_cast<char>(n)};
  return std::string(b, 4);
}
}  // namespace

TEST_CASE("bundles (version 3): several envelopes in one frame and back, in order") {
  std::vector<zmq::message_t> envelopes;
  envelopes.push_back(request_envelope(1, "first", true));
  envelopes.push_back(request_envelope(2, ""));
  envelopes.push_back(request_envelope(3, std::string(detail::kMaxInlineBody, 'b')));
  std::vector<const zmq::message_t*> ptrs;
  for (const auto& e : envelopes) ptrs.push_back(&e);
  const zmq::message_t b = detail::bundle_frame(ptrs);
  // 'P' 'T' 2 REQUEST kBundle, then each envelope after its length.
  std::string expected = std::string("PT\x02\x03\x20", 5);
  for (const auto& e : envelopes) expected += be32(e.size()) + bytes(e);
  CHECK(bytes(b) == expected);
  CHECK(detail::envelope_flags(envelopes[0]) ==
        (detail::envelope_flag::kReadsBundles | detail::envelope_flag::kInline));
  CHECK(detail::envelope_flags(envelopes[1]) == detail::envelope_flag::kInline);
  CHECK(detail::is_bundle(b));
  CHECK(detail::is_envelope(b));  // so a version 2 peer refuses it as a malformed envelope
  detail::Multipart as_v2;
  as_v2.emplace_back(b.data(), b.size());
  CHECK_FALSE(detail::unpack_envelope(as_v2, 0));
  CHECK_FALSE(detail::envelope_object_id(b));
  std::vector<zmq::message_t> out;
  out.push_back(frame("kept"));
  REQUIRE(detail::split_bundle(b, out));
  REQUIRE(out.size() == 4);
  CHECK(bytes(out[0]) == "kept");  // appended after what was there
  for (size_t i = 0; i < 3; ++i) CHECK(bytes(out[i + 1]) == bytes(envelopes[i]));
  // Replies too, and a bundle of one.
  detail::Multipart reply =
      frames({bytes(detail::header_frame(Command::reply)), bytes(detail::u64_frame(9)), "answer"});
  detail::Multipart reading =
      frames({bytes(detail::header_frame(Command::reply)), bytes(detail::u64_frame(9)), "answer"});
  CHECK_FALSE(detail::pack_envelope(reading, 0, false, true));  // a REPLY reads nothing
  CHECK(reading.size() == 3);
  REQUIRE(detail::pack_envelope(reply, 0, false));
  const zmq::message_t one = detail::bundle_frame({&reply[0]});
  CHECK(detail::is_bundle(one));
  std::vector<zmq::message_t> replies;
  REQUIRE(detail::split_bundle(one, replies));
  REQUIRE(replies.size() == 1);
  CHECK(bytes(replies[0]) == bytes(reply[0]));
  // The most a bundle holds.
  std::vector<zmq::message_t> many;
  for (uint64_t i = 0; i < detail::kMaxBundle; ++i) many.push_back(request_envelope(i, "x"));
  std::vector<const zmq::message_t*> most;
  for (const auto& e : many) most.push_back(&e);
  std::vector<zmq::message_t> split;
  REQUIRE(detail::split_bundle(detail::bundle_frame(most), split));
  CHECK(split.size() == detail::kMaxBundle);
}

TEST_CASE("an inline envelope is read where it lies, as unpack_envelope reads it") {
  // A request as a client sends it direct, with a resend's attempt.
  detail::Multipart m =
      frames({bytes(detail::header_frame(Command::request)),
              bytes(detail::object_id_frame(ObjectId{7, 8})), bytes(detail::u64_frame(42)),
              "the body", bytes(detail::u64_frame(3))});
  REQUIRE(detail::pack_envelope(m, 0, false, true));
  REQUIRE(m.size() == 1);
  const auto rq = detail::read_inline_envelope(m[0]);
  REQUIRE(rq);
  CHECK(rq->request);
  CHECK(rq->object == ObjectId{7, 8});
  CHECK(rq->request_id == 42);
  CHECK(rq->attempt == 3);
  CHECK(rq->body == "the body");
  CHECK(rq->routing.empty());
  CHECK(rq->flags == (detail::envelope_flag::kReadsBundles | detail::envelope_flag::kInline |
                      detail::envelope_flag::kAttempt));
  // A stamped one with the client's routing, as a broker forwards it.
  detail::Multipart routed =
      frames({bytes(detail::stamped_header_frame(Command::request, 99)), "client-routing",
              bytes(detail::object_id_frame(ObjectId{1, 2})), bytes(detail::u64_frame(5)), ""});
  REQUIRE(detail::pack_envelope(routed, 0, true));
  const auto fw = detail::read_inline_envelope(routed[0]);
  REQUIRE(fw);
  CHECK(fw->stamp == 99);
  CHECK(fw->routing == "client-routing");
  CHECK(fw->request_id == 5);
  CHECK(fw->body.empty());
  CHECK_FALSE(fw->attempt);
  // A reply made without frames is what pack_envelope makes of the frames, and reads back.
  const zmq::message_t body = frame("an answer");
  detail::Multipart reply = frames(
      {bytes(detail::header_frame(Command::reply)), bytes(detail::u64_frame(77)), bytes(body)});
  REQUIRE(detail::pack_envelope(reply, 0, false));
  CHECK(bytes(detail::reply_envelope(77, body)) == bytes(reply[0]));
  // With the client's routing at the broker, as a lane answers a brokered request.
  detail::Multipart routed_reply =
      frames({bytes(detail::header_frame(Command::reply)), "client-routing",
              bytes(detail::u64_frame(78)), bytes(body)});
  REQUIRE(detail::pack_envelope(routed_reply, 0, true));
  CHECK(bytes(detail::reply_envelope(78, body, "client-routing")) == bytes(routed_reply[0]));
  CHECK(detail::read_inline_envelope(routed_reply[0])->routing == "client-routing");
  // append_reply: the reply in the version its peer reads.
  detail::Multipart v2;
  detail::append_reply(v2, true, "client-routing", 78, frame("an answer"),
                       detail::kEnvelopeVersion);
  REQUIRE(v2.size() == 1);
  CHECK(bytes(v2[0]) == bytes(routed_reply[0]));
  detail::Multipart v1;
  detail::append_reply(v1, true, "client-routing", 78, frame("an answer"), detail::kWireVersion);
  REQUIRE(v1.size() == 4);
  CHECK(bytes(v1[1]) == "client-routing");
  CHECK(detail::parse_u64(v1[2]) == 78);
  CHECK(bytes(v1[3]) == "an answer");
  const std::string big(detail::kMaxInlineBody + 1, 'y');
  detail::Multipart outside,
      packed =
          frames({bytes(detail::header_frame(Command::reply)), bytes(detail::u64_frame(79)), big});
  detail::append_reply(outside, false, {}, 79, frame(big), detail::kBundleVersion);
  REQUIRE(detail::pack_envelope(packed, 0, false));
  REQUIRE(outside.size() == 2);
  CHECK(bytes(outside[0]) == bytes(packed[0]));
  CHECK(bytes(outside[1]) == big);
  const auto rp = detail::read_inline_envelope(reply[0]);
  REQUIRE(rp);
  CHECK_FALSE(rp->request);
  CHECK(rp->request_id == 77);
  CHECK(rp->body == "an answer");
  // Not read: a body in a frame of its own, a malformed envelope, something else.
  detail::Multipart large =
      frames({bytes(detail::header_frame(Command::reply)), bytes(detail::u64_frame(1)),
              std::string(detail::kMaxInlineBody + 1, 'x')});
  REQUIRE(detail::pack_envelope(large, 0, false));
  REQUIRE(large.size() == 2);
  CHECK_FALSE(detail::read_inline_envelope(large[0]));
  CHECK_FALSE(detail::read_inline_envelope(bytes(reply[0]).substr(0, 12)));  // its id cut
  CHECK_FALSE(detail::read_inline_envelope(detail::header_frame(Command::reply)));
  CHECK_FALSE(detail::read_inline_envelope(std::string_view()));
  // A bundle's envelopes, as views into it.
  const zmq::message_t a = request_envelope(1, "a"), b = request_envelope(2, "bb");
  const zmq::message_t bundle = detail::bundle_frame({&a, &b});
  std::vector<std::string_view> views{"stale"};
  REQUIRE(detail::bundled_envelopes(bundle, views));
  REQUIRE(views.size() == 2);
  CHECK(views[0] == bytes(a));
  CHECK(views[1] == bytes(b));
  CHECK(detail::read_inline_envelope(views[1])->body == "bb");
  CHECK_FALSE(detail::bundled_envelopes(a, views));  // not a bundle
  CHECK(views.empty());
}

TEST_CASE("bundles: a malformed one is refused whole") {
  const std::string head = std::string("PT\x02\x03\x20", 5);
  const std::string a = bytes(request_envelope(1, "a"));
  const std::string b = bytes(request_envelope(2, "b"));
  auto splits = [](const std::string& bundle) {
    std::vector<zmq::message_t> out;
    out.push_back(frame("kept"));
    const bool ok = detail::split_bundle(frame(bundle), out);
    if (!ok) CHECK(out.size() == 1);  // as it was
    return ok;
  };
  CHECK(splits(head + be32(a.size()) + a + be32(b.size()) + b));
  CHECK_FALSE(splits(head));                                              // none
  CHECK_FALSE(splits(head + be32(a.size() + 1) + a));                     // a length past the end
  CHECK_FALSE(splits(head + be32(a.size()) + a + std::string(2, '\0')));  // a length cut short
  CHECK_FALSE(splits(head + be32(28) + a.substr(0, 28)));                 // ids cut
  CHECK_FALSE(splits(head + be32(0)));                                    // an empty envelope
  CHECK_FALSE(splits(std::string("PT\x02\x03\x21", 5) + be32(a.size()) + a));  // more flags
  CHECK_FALSE(splits(std::string("PT\x02\x01\x20", 5) + be32(a.size()) + a));  // HELLO
  // A REPLY in a bundle of REQUESTs.
  detail::Multipart reply =
      frames({bytes(detail::header_frame(Command::reply)), bytes(detail::u64_frame(9)), "answer"});
  REQUIRE(detail::pack_envelope(reply, 0, false));
  CHECK_FALSE(splits(head + be32(a.size()) + a + be32(reply[0].size()) + bytes(reply[0])));
  // A bundle inside a bundle.
  const std::string inner = head + be32(a.size()) + a;
  CHECK_FALSE(splits(head + be32(inner.size()) + inner));
  // An envelope whose body is not inside it (it would need a frame of its own).
  const std::string outside = std::string("PT\x02\x03\x00", 5) + std::string(24, 'i');
  CHECK_FALSE(splits(head + be32(outside.size()) + outside));
  // More than kMaxBundle.
  std::string over = head;
  for (size_t i = 0; i <= detail::kMaxBundle; ++i) over += be32(a.size()) + a;
  CHECK_FALSE(splits(over));
}

TEST_CASE("values round-trip through a verified reply") {
  CHECK(round_trip(Value()).is_null());
  CHECK(round_trip(true) == true);
  CHECK(round_trip(-42) == -42);
  CHECK(round_trip(INT64_MIN) == INT64_MIN);
  CHECK(round_trip(2.5) == 2.5);
  CHECK(round_trip("text") == "text");
  CHECK(round_trip(std::string("a\0b", 3)) == std::string("a\0b", 3));
  CHECK(round_trip(Bytes{std::string("\x00\xff", 2)}) == Value(Bytes{std::string("\x00\xff", 2)}));
  const Value nested = Value::hash(
      {{"a", Value::array({1, "two", Value::hash({{"x", nullptr}})})}, {"", Value::array({})}});
  CHECK(round_trip(nested) == nested);
  Reference r;
  r.id = ObjectId{5, 6};
  const Value back = round_trip(Value(r));
  REQUIRE(back.is_reference());
  CHECK(back.if_reference()->id == ObjectId{5, 6});
}

TEST_CASE("paths round-trip") {
  flatbuffers::FlatBufferBuilder fb;
  const Path path{std::string("def"), int64_t{-1}, std::string(""), int64_t{0}};
  auto p = detail::encode_path(fb, path);
  wire::RequestBuilder b(fb);
  b.add_path(p);
  fb.Finish(b.Finish(), wire::RequestIdentifier());
  const auto m = detail::body_frame(fb);
  detail::AlignedScratch scratch;
  const auto* req = detail::verified_request(m, Limits{}, scratch);
  REQUIRE(req != nullptr);
  CHECK(detail::decode_path(req->path()) == path);
  CHECK(detail::path_to_string(path) == "{def}[-1]{}[0]");
  CHECK(detail::decode_path(nullptr).empty());
}

TEST_CASE("a body is verified against its own root type only") {
  const auto reply = detail::error_reply(7, Errc::not_found, "gone", "std::out_of_range", 2);
  detail::AlignedScratch s;
  const auto* r = detail::verified_reply(reply, Limits{}, s);
  REQUIRE(r != nullptr);
  CHECK(r->request_id() == 7);
  CHECK(r->status() == wire::Status::Error);
  CHECK(r->error_code() == static_cast<int32_t>(Errc::not_found));
  CHECK(r->error_text()->str() == "gone");
  CHECK(r->error_type()->str() == "std::out_of_range");
  CHECK(r->error_number() == 2);
  // The same bytes are not a request, a control or a batch.
  CHECK(detail::verified_request(reply, Limits{}, s) == nullptr);
  CHECK(detail::verified_control(reply, Limits{}, s) == nullptr);
  CHECK(detail::verified_batch(reply, Limits{}, s) == nullptr);
  CHECK_FALSE(detail::is_batch(reply));
}

TEST_CASE("malformed bodies are refused, never read") {
  const std::string good = bytes(detail::error_reply(1, Errc::internal, "x"));
  detail::AlignedScratch s;
  const Limits limits;
  CHECK(detail::verified_reply(frame(""), limits, s) == nullptr);
  CHECK(detail::verified_reply(frame("1234567"), limits, s) == nullptr);  // under 8 bytes
  // Every truncation is refused, except of trailing padding, where the fields read back whole.
  for (size_t n = 0; n < good.size(); ++n) {
    const auto t = frame(good.substr(0, n));
    const wire::Reply* r = detail::verified_reply(t, limits, s);
    if (r != nullptr) {
      CHECK(n + 4 > good.size());
      CHECK(r->error_text()->str() == "x");
    }
  }
  std::string wrong_id = good;
  wrong_id[4] = 'Z';
  CHECK(detail::verified_reply(frame(wrong_id), limits, s) == nullptr);
  std::string bad_offset = good;
  bad_offset[0] = '\xff';  // the root offset points outside the buffer
  bad_offset[1] = '\xff';
  CHECK(detail::verified_reply(frame(bad_offset), limits, s) == nullptr);
  Limits small;
  small.max_message_size = good.size() - 1;  // over the size limit
  CHECK(detail::verified_reply(frame(good), small, s) == nullptr);
}

TEST_CASE("the verifier's depth limit bounds nesting") {
  Value v = 1;
  for (int i = 0; i < 40; ++i) v = Value::array({v});
  flatbuffers::FlatBufferBuilder fb;
  auto results = detail::encode_values(fb, ValueArray{v}, refs);
  wire::ReplyBuilder b(fb);
  b.add_results(results);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  const auto m = detail::body_frame(fb);
  detail::AlignedScratch s;
  CHECK(detail::verified_reply(m, Limits{}, s) != nullptr);
  Limits shallow;
  shallow.max_depth = 16;
  CHECK(detail::verified_reply(m, shallow, s) == nullptr);
  Limits few;
  few.max_tables = 10;
  CHECK(detail::verified_reply(m, few, s) == nullptr);
}

TEST_CASE("a misaligned body is verified in an aligned copy") {
  const std::string good = bytes(detail::error_reply(3, Errc::internal, "misaligned"));
  // A zero-copy frame over bytes at an odd address.
  std::vector<uint64_t> storage(good.size() / 8 + 2);
  auto* odd_bytes = reinterpret_cast<char*>(storage.data()) + 1;
  std::memcpy(odd_bytes, good.data(), good.size());
  zmq::message_t odd(odd_bytes, good.size(), nullptr, nullptr);
  REQUIRE(reinterpret_cast<uintptr_t>(odd.data()) % 8 == 1);
  detail::AlignedScratch s;
  const auto* r = detail::verified_reply(odd, Limits{}, s);
  REQUIRE(r != nullptr);
  CHECK(r->request_id() == 3);
}

TEST_CASE("decode refuses a hash with more keys than values, and a ref without a ref") {
  flatbuffers::FlatBufferBuilder fb;
  auto keys = fb.CreateVectorOfStrings({"a", "b"});
  std::vector<flatbuffers::Offset<wire::Value>> items{detail::encode_value(fb, 1, refs)};
  auto iv = fb.CreateVector(items);
  wire::ValueBuilder hb(fb);
  hb.add_kind(wire::Kind::Hash);
  hb.add_keys(keys);
  hb.add_items(iv);
  auto bad_hash = hb.Finish();
  wire::ValueBuilder rb(fb);
  rb.add_kind(wire::Kind::Ref);
  auto bad_ref = rb.Finish();
  std::vector<flatbuffers::Offset<wire::Value>> results{bad_hash, bad_ref};
  auto rv = fb.CreateVector(results);
  wire::ReplyBuilder b(fb);
  b.add_results(rv);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  const auto m = detail::body_frame(fb);
  detail::AlignedScratch s;
  const auto* r = detail::verified_reply(m, Limits{}, s);
  REQUIRE(r != nullptr);
  CHECK_THROWS_AS(detail::decode_value(r->results()->Get(0), read_refs), Error);
  CHECK_THROWS_AS(detail::decode_value(r->results()->Get(1), read_refs), Error);
}

TEST_CASE("stored values: encode and decode, and damaged bytes are bad_message") {
  const Value v = Value::hash({{"k", Value::array({1, 2.5, "s"})}});
  const std::string e = encode(v);
  CHECK(decode(e) == v);
  for (size_t n : {size_t{0}, size_t{4}, e.size() / 2}) {
    try {
      (void)decode(e.substr(0, n));
      FAIL("decode accepted a truncated value");
    } catch (const Error& err) {
      CHECK(err.code() == Errc::bad_message);
    }
  }
  Reference r;
  CHECK_THROWS_AS((void)encode(Value(r)), Error);
}

TEST_CASE("only reads and overwrites are idempotent") {
  CHECK(detail::idempotent(wire::Op::Get));
  CHECK(detail::idempotent(wire::Op::Set));
  CHECK_FALSE(detail::idempotent(wire::Op::Push));
  CHECK_FALSE(detail::idempotent(wire::Op::Add));
  CHECK_FALSE(detail::idempotent(wire::Op::Call));
  CHECK_FALSE(detail::idempotent(wire::Op::Lock));
}

TEST_CASE(
    "local containers travel as copies: arrays and hashes as values, scalars as Kind::Scalar") {
  ValueArray scratch;
  const ValueArray plain{1, "two"};
  CHECK(&detail::local_copies(plain, scratch) == &plain);  // nothing local: no copy made
  const ValueArray args{Array{1, Hash{{"k", Array{2}}}}, Scalar(Array{3})};
  const ValueArray& sent = detail::local_copies(args, scratch);
  REQUIRE(sent.size() == 2);
  CHECK(sent[0] == Value::array({1, Value::hash({{"k", Value::array({2})}})}));
  REQUIRE(sent[1].is_reference());
  // A fresh scalar holding a copy (a scalar stores an array as a reference to a new one).
  CHECK(sent[1].as<Scalar>().get().as<Array>().items() == ValueArray{3});
  CHECK(sent[1].as<Scalar>().node() != args[1].as<Scalar>().node());

  // A client's writer asks for the scalar's copy with a null offset; it decodes as a new scalar.
  const detail::RefWriter client_refs = [](flatbuffers::FlatBufferBuilder& fb, const Reference& r) {
    return r.node ? flatbuffers::Offset<wire::Ref>() : refs(fb, r);
  };
  flatbuffers::FlatBufferBuilder fb;
  fb.Finish(detail::encode_value(fb, sent[1], client_refs));
  const auto* v = flatbuffers::GetRoot<wire::Value>(fb.GetBufferPointer());
  CHECK(v->kind() == wire::Kind::Scalar);
  const Value back = detail::decode_value(v, read_refs);
  REQUIRE(back.is_reference());
  CHECK(back.as<Scalar>().get().as<Array>().items() == ValueArray{3});

  Array self;
  self.push(self);
  CHECK_THROWS_AS(detail::local_copies(ValueArray{self}, scratch), Error);
  self.clear();  // the cycle is the test's own: break it, or the array is never freed
}

namespace {
// A value that names one sub-table twice at each level: [[t, t], [t, t]]... (2^levels leaves in
// a body of about 30 bytes per level), as a StoredValue body.
std::string shared_levels(int levels, const std::string& leaf) {
  flatbuffers::FlatBufferBuilder fb;
  auto top = detail::encode_value(fb, leaf, refs);
  for (int i = 0; i < levels; ++i) {
    auto items = fb.CreateVector(std::vector<flatbuffers::Offset<wire::Value>>{top, top});
    wire::ValueBuilder b(fb);
    b.add_kind(wire::Kind::Array);
    b.add_items(items);
    top = b.Finish();
  }
  fb.Finish(wire::CreateStoredValue(fb, top), wire::StoredValueIdentifier());
  return std::string(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());
}
}  // namespace

TEST_CASE("a shared sub-table counts each time it is reached, in verifying and in decoding") {
  // 18 levels in about 600 bytes: 2^18 values of 40 bytes (the issue's 10.5 MB WAL record).
  const std::string body = shared_levels(18, std::string(40, 'x'));
  CHECK(body.size() < 1000);
  try {
    (void)decode(body);
    FAIL("a shared sub-table expanded");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::bad_message);
  }
  // The verifier counts tables per body size; the decoder counts values and bytes on its own.
  CHECK(detail::max_tables_in(body.size(), Limits{}) < 1000);
  CHECK(detail::max_tables_in(size_t{1} << 30, Limits{}) == Limits{}.max_tables);
  const auto* v = flatbuffers::GetRoot<wire::StoredValue>(body.data())->value();
  detail::DecodeBudget few(100, 1u << 20);
  CHECK_THROWS_AS(detail::decode_value(v, read_refs, few), Error);
  detail::DecodeBudget little(1u << 20, 1000);  // 2^18 x 40 bytes of strings
  CHECK_THROWS_AS(detail::decode_value(v, read_refs, little), Error);
  // The issue's 632-byte set: a REQUEST whose argument shares a sub-table at each of 18 levels
  // fails verification (a server answers bad_message), where a plain one of the same depth passes.
  const auto request_with = [](int levels, bool shared) {
    flatbuffers::FlatBufferBuilder fb;
    auto top = detail::encode_value(fb, std::string(40, 'x'), refs);
    for (int i = 0; i < levels; ++i) {
      auto other = shared ? top : detail::encode_value(fb, 1, refs);
      auto items = fb.CreateVector(std::vector<flatbuffers::Offset<wire::Value>>{top, other});
      wire::ValueBuilder b(fb);
      b.add_kind(wire::Kind::Array);
      b.add_items(items);
      top = b.Finish();
    }
    auto args = fb.CreateVector(std::vector<flatbuffers::Offset<wire::Value>>{top});
    wire::RequestBuilder rb(fb);
    rb.add_op(wire::Op::Set);
    rb.add_args(args);
    fb.Finish(rb.Finish(), wire::RequestIdentifier());
    return detail::body_frame(fb);
  };
  detail::AlignedScratch scratch;
  CHECK(detail::verified_request(request_with(18, true), Limits{}, scratch) == nullptr);
  CHECK(detail::verified_request(request_with(18, false), Limits{}, scratch) != nullptr);
  // Two levels are a small tree, read as what they mean.
  CHECK(decode(shared_levels(2, "y")) ==
        Value::array({Value::array({"y", "y"}), Value::array({"y", "y"})}));
}

TEST_CASE("honest bodies fit the bounds: many small values, many keys, long strings") {
  ValueArray nulls(20000);
  CHECK(round_trip(Value(nulls)) == Value(nulls));
  ValueHash h;
  for (int i = 0; i < 2000; ++i) h.insert_or_assign("k" + std::to_string(i), Value(int64_t{i}));
  CHECK(round_trip(Value(h)) == Value(h));
  const Value big = Value::array({std::string(100000, 's'), Value(nulls)});
  CHECK(decode(encode(big)) == big);
}

TEST_CASE("error codes: names and kinds from schemas/wire.json, os_failure beside internal") {
  CHECK(std::string(errc_name(Errc::os_failure)) == "os_failure");
  CHECK(static_cast<int>(Errc::os_failure) == 23);
  CHECK(std::string(errc_name(Errc::internal)) == "internal");
  CHECK(error_kind(Errc::os_failure) == ErrorKind::failed);
  CHECK(error_kind(Errc::timeout) == ErrorKind::disconnected);
  CHECK(error_kind(Errc::too_many_waiters) == ErrorKind::overloaded);
  CHECK(error_kind(Errc::unknown_method) == ErrorKind::unimplemented);
  CHECK(std::string(errc_name(Errc::cancelled)) == "cancelled");
  CHECK(static_cast<int>(Errc::cancelled) == 24);
  CHECK(error_kind(Errc::cancelled) == ErrorKind::failed);
  CHECK(std::string(errc_name(static_cast<Errc>(25))) == "unknown_error");
  CHECK(std::string(Error(Errc::os_failure, "eventfd: Too many open files").what()) ==
        "os_failure: eventfd: Too many open files");
  CHECK(std::string(detail::command_name(Command::register_server)) == "REGISTER");
  CHECK(std::string(detail::command_name(Command::client_at)) == "CLIENT_AT");
  CHECK(std::string(detail::command_name(Command::cancel)) == "CANCEL");
  CHECK(static_cast<int>(Command::cancel) == 20);
  CHECK(std::string(detail::command_name(Command::key_rights)) == "KEY_RIGHTS");
  CHECK(static_cast<int>(Command::key_rights) == 24);
}

TEST_CASE("the slice and copy operations are reads") {
  CHECK(detail::idempotent(wire::Op::Slice));
  CHECK(detail::idempotent(wire::Op::Copy));
  CHECK_FALSE(detail::op_info(wire::Op::Copy).mutating);
  CHECK(detail::op_info(wire::Op::Slice).handler == detail::OpHandler::container);
  CHECK(detail::idempotent(wire::Op::LockState));
  CHECK(detail::idempotent(wire::Op::LockInfo));
  CHECK(detail::op_info(wire::Op::LockState).lock_path());
  CHECK_FALSE(detail::op_info(wire::Op::LockState).oneway);
}

TEST_CASE("the wire trace renders a request, cuts long arguments and reads replies") {
  flatbuffers::FlatBufferBuilder fb;
  auto path = detail::encode_path(fb, Path{std::string("k\"ey"), int64_t{2}});
  const std::string long_text(200, 'x');
  auto args = detail::encode_values(
      fb, ValueArray{1, 2.5, true, Value(), Value::hash({{"a", Value::array({"b"})}})}, refs);
  wire::RequestBuilder b(fb);
  b.add_request_id(9);
  b.add_server(0x1234);
  b.add_object(5);
  b.add_op(wire::Op::Call);
  b.add_path(path);
  b.add_args(args);
  fb.Finish(b.Finish(), wire::RequestIdentifier());
  const auto* r = flatbuffers::GetRoot<wire::Request>(fb.GetBufferPointer());
  CHECK(detail::trace_target(*r) ==
        R"(call obj=00000000000012340000000000000005 path=["k\"ey"][2])");
  CHECK(detail::trace_args(*r) == R"(args=[1,2.5,true,null,{"a":["b"]}])");

  flatbuffers::FlatBufferBuilder fb2;
  auto name = fb2.CreateString("m");
  auto long_args = detail::encode_values(fb2, ValueArray{long_text}, refs);
  wire::RequestBuilder b2(fb2);
  b2.add_op(wire::Op::Get);
  b2.add_name(name);
  b2.add_args(long_args);
  fb2.Finish(b2.Finish(), wire::RequestIdentifier());
  const auto* r2 = flatbuffers::GetRoot<wire::Request>(fb2.GetBufferPointer());
  CHECK(detail::trace_target(*r2) == "get m obj=00000000000000000000000000000000 path=-");

  // A long path is cut as arguments are.
  flatbuffers::FlatBufferBuilder fb3;
  auto deep = detail::encode_path(fb3, Path(100, PathElem{int64_t{0}}));
  wire::RequestBuilder b3(fb3);
  b3.add_path(deep);
  fb3.Finish(b3.Finish(), wire::RequestIdentifier());
  const std::string target =
      detail::trace_target(*flatbuffers::GetRoot<wire::Request>(fb3.GetBufferPointer()));
  CHECK(target.size() ==
        std::string("get obj=00000000000000000000000000000000 path=").size() + detail::kTraceWidth);
  CHECK(target.substr(target.size() - 3) == "...");
  const std::string cut = detail::trace_args(*r2);
  CHECK(cut.size() == 5 + detail::kTraceWidth);
  CHECK(cut.substr(0, 8) == "args=[\"x");
  CHECK(cut.substr(cut.size() - 3) == "...");

  // An error reply: its code, the time, its text without the code's name in front.
  const zmq::message_t err =
      detail::error_reply(9, Errc::not_found, "not_found: no such key", "", 0);
  CHECK(detail::trace_outcome(err, Limits{}, std::chrono::microseconds(1500)) ==
        R"(not_found 1.500ms error="no such key")");
  CHECK(detail::trace_outcome(err, Limits{}, std::nullopt) == R"(not_found error="no such key")");
  CHECK(detail::trace_outcome(frame("garbage!"), Limits{}, std::chrono::nanoseconds(0)) ==
        "bad_message 0.000ms");
  CHECK(detail::trace_failure("timeout: too late", std::chrono::milliseconds(2)) ==
        R"(timeout 2.000ms error="too late")");
  CHECK(detail::trace_failure("Something: else", std::chrono::milliseconds(2)) ==
        R"(error 2.000ms error="Something: else")");
}

TEST_CASE("the trace level: by name in any case, by PATRO_DEBUG, and its flag") {
  CHECK(parse_log_level("trace") == LogLevel::trace);
  CHECK(parse_log_level("TRACE") == LogLevel::trace);
  CHECK(parse_log_level("Debug") == LogLevel::debug);
  CHECK_FALSE(parse_log_level("tracing"));
  ::setenv("PATRO_DEBUG", "1", 1);
  CHECK(debug_requested());
  ::setenv("PATRO_DEBUG", "0", 1);
  CHECK_FALSE(debug_requested());
  ::unsetenv("PATRO_DEBUG");
  CHECK_FALSE(debug_requested());
  const LogLevel before = log_level();
  set_log_level(LogLevel::trace);
  CHECK(detail::wire_trace());
  set_log_level(LogLevel::debug);
  CHECK_FALSE(detail::wire_trace());
  set_log_level(before);
}
