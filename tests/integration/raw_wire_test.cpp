// Malformed, truncated and oversized messages sent straight at the broker and at a server, with
// raw ZeroMQ. Each gets an error answer or is dropped; everyone else keeps being served.
#include <doctest/doctest.h>

#include <zmq.hpp>

#include <optional>

#include <patro/patro.hpp>

#include "../support/sanitizers.hpp"
#include "wire.hpp"

using patro::Errc;
namespace d = patro::detail;

namespace {

struct Raw {
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  explicit Raw(const std::string& endpoint) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect(endpoint);
  }
  template <class... M>
  void send(M&&... parts) {
    std::vector<zmq::message_t> frames;
    (frames.push_back(std::move(parts)), ...);
    for (size_t i = 0; i < frames.size(); ++i)
      (void)s.send(frames[i],
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  // The error code of the REPLY to request_id (skipping heartbeats and other replies); nullopt,
  // and a failed check, if none came within the timeout, so a silence never reads as success.
  std::optional<Errc> reply_error(uint64_t request_id) {
    for (int i = 0; i < 20; ++i) {
      d::Multipart m;
      if (!d::recv_multipart(s, m)) break;
      if (d::is_envelope(m[0]) && !d::unpack_envelope(m, 0)) continue;  // version 2
      if (d::parse_header(m[0]) != d::Command::reply || m.size() != 3) continue;
      if (d::parse_u64(m[1]) != request_id) continue;
      patro::Limits limits;
      d::AlignedScratch scratch;
      const auto* r = d::verified_reply(m[2], limits, scratch);
      REQUIRE(r != nullptr);
      return static_cast<Errc>(r->error_code());
    }
    FAIL_CHECK("no reply to request " << request_id);
    return std::nullopt;
  }
};

zmq::message_t bytes(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}

}  // namespace

TEST_CASE("bad messages at the broker and at a server") {
  patro::ServerOptions so;
  so.heartbeat.interval = std::chrono::milliseconds(100);
  so.heartbeat.liveness = 10;
  so.limits.max_message_size = 64 * 1024;
  patro::Hash h{{"abc", 123}};
  auto cfg = patro::patronize(so, h);
  const patro::ObjectId id = cfg.objects().at(0).id;
  Raw raw(cfg.brokers().at(0));

  SUBCASE("garbage frames are dropped") {
    raw.send(bytes("garbage"));
    raw.send(bytes("PT"), bytes("x"));
    raw.send(d::header_frame(d::Command::request));  // too few frames, no request id
  }
  SUBCASE("a request with a bad object id frame gets bad_message from the broker") {
    raw.send(d::header_frame(d::Command::request), bytes("short"), d::u64_frame(7), bytes("b"));
    CHECK(raw.reply_error(7) == Errc::bad_message);
  }
  SUBCASE("an oversized body gets message_too_large from the broker") {
    raw.send(d::header_frame(d::Command::request), d::object_id_frame(id), d::u64_frame(8),
             bytes(std::string(100 * 1024, 'x')));
    CHECK(raw.reply_error(8) == Errc::message_too_large);
  }
  SUBCASE("a malformed body gets bad_message from the server") {
    raw.send(d::header_frame(d::Command::request), d::object_id_frame(id), d::u64_frame(9),
             bytes("this is not a flatbuffer at all"));
    CHECK(raw.reply_error(9) == Errc::bad_message);
  }
  SUBCASE("a truncated body gets bad_message from the server") {
    flatbuffers::FlatBufferBuilder fb;
    auto path = d::encode_path(fb, patro::Path{std::string("abc")});
    patro::wire::RequestBuilder b(fb);
    b.add_request_id(10);
    b.add_server(id.server);
    b.add_object(id.object);
    b.add_path(path);
    fb.Finish(b.Finish(), patro::wire::RequestIdentifier());
    std::string body(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());
    raw.send(d::header_frame(d::Command::request), d::object_id_frame(id), d::u64_frame(10),
             bytes(body.substr(0, body.size() / 2)));
    CHECK(raw.reply_error(10) == Errc::bad_message);
    // The whole body works.
    raw.send(d::header_frame(d::Command::request), d::object_id_frame(id), d::u64_frame(11),
             bytes(body));
    CHECK(raw.reply_error(11) == Errc::ok);
  }
  SUBCASE("a body with an unknown operation gets unsupported") {
    flatbuffers::FlatBufferBuilder fb;
    patro::wire::RequestBuilder b(fb);
    b.add_request_id(12);
    b.add_server(id.server);
    b.add_object(id.object);
    b.add_op(static_cast<patro::wire::Op>(200));
    fb.Finish(b.Finish(), patro::wire::RequestIdentifier());
    raw.send(d::header_frame(d::Command::request), d::object_id_frame(id), d::u64_frame(12),
             zmq::message_t(fb.GetBufferPointer(), fb.GetSize()));
    CHECK(raw.reply_error(12) == Errc::unsupported);
  }
  // After each of these, a good client completes a round trip.
  auto ps = patro::get_proxies(cfg);
  CHECK(ps.at(0)["abc"].get() == 123);
}

namespace {
// The next message that is not a heartbeat, its envelope (version 2) unpacked into the version 1
// frames; version: the one it came in. Empty if none came within the socket's timeout.
std::vector<zmq::message_t> next_message(zmq::socket_t& s, int& version) {
  for (int i = 0; i < 20; ++i) {
    d::Multipart m;
    if (!d::recv_multipart(s, m)) break;
    version = d::is_envelope(m[0]) ? 2 : 1;
    const size_t sent = m.size();
    if (version == 2) REQUIRE(d::unpack_envelope(m, 0));
    CHECK(sent == (version == 2 ? 1 : m.size()));  // version 2: the envelope holds the body
    if (d::parse_header(m[0]) == d::Command::heartbeat) continue;
    return m;
  }
  FAIL_CHECK("no message came");
  return {};
}

std::string get_body(uint64_t request_id, const patro::ObjectId& id) {
  flatbuffers::FlatBufferBuilder fb;
  auto path = d::encode_path(fb, patro::Path{std::string("abc")});
  patro::wire::RequestBuilder b(fb);
  b.add_request_id(request_id);
  b.add_server(id.server);
  b.add_object(id.object);
  b.add_path(path);
  fb.Finish(b.Finish(), patro::wire::RequestIdentifier());
  return std::string(reinterpret_cast<const char*>(fb.GetBufferPointer()), fb.GetSize());
}

// A get of h["abc"] in version 1's frames (a resent copy: with its attempt).
d::Multipart get_frames(const patro::ObjectId& id, uint64_t request_id, bool resent) {
  d::Multipart m;
  m.push_back(d::header_frame(d::Command::request));
  m.push_back(d::object_id_frame(id));
  m.push_back(d::u64_frame(request_id));
  m.push_back(bytes(get_body(request_id, id)));
  if (resent) m.push_back(d::u64_frame(2));
  return m;
}

// Sends a get of h["abc"] in version 1 or 2 and checks its answer: 123, in the same version, in
// 3 frames (version 1) or 1 (version 2: the envelope holds the small body).
void check_get(zmq::socket_t& s, const patro::ObjectId& id, uint64_t request_id, int version,
               bool resent = false) {
  d::Multipart m = get_frames(id, request_id, resent);
  if (version == 2) REQUIRE(d::pack_envelope(m, 0, false));
  CHECK(m.size() == (version == 2 ? 1u : resent ? 5u : 4u));
  REQUIRE(d::send_multipart(s, m, false));
  int came = 0;
  const auto reply = next_message(s, came);
  REQUIRE(reply.size() == 3);
  CHECK(came == version);
  CHECK(d::parse_header(reply[0]) == d::Command::reply);
  CHECK(d::parse_u64(reply[1]) == request_id);
  patro::Limits limits;
  d::AlignedScratch scratch;
  const auto* r = d::verified_reply(reply[2], limits, scratch);
  REQUIRE(r != nullptr);
  CHECK(r->status() == patro::wire::Status::Ok);
  REQUIRE(r->results() != nullptr);
  CHECK(d::decode_values(r->results(), {}).at(0) == patro::Value(123));
}
// {abc: 123} served by patronize (its embedded broker; heartbeats every 100 ms), and its id.
struct OneHash {
  patro::Hash h{{"abc", 123}};
  patro::Config cfg;
  patro::ObjectId id;
  OneHash() {
    patro::ServerOptions so;
    so.heartbeat.interval = std::chrono::milliseconds(100);
    so.heartbeat.liveness = 10;
    cfg = patro::patronize(so, h);
    id = cfg.objects().at(0).id;
  }
};

// Where h's server takes requests directly (the broker's LocateReply), and what its lanes read.
std::string locate(Raw& raw, const patro::ObjectId& id, int& wire_version) {
  flatbuffers::FlatBufferBuilder fb;
  fb.Finish(patro::wire::CreateControl(fb, patro::wire::ControlBody::Locate,
                                       patro::wire::CreateLocate(fb, id.server).Union()),
            patro::wire::ControlIdentifier());
  raw.send(d::header_frame(d::Command::locate), d::u64_frame(id.server),
           zmq::message_t(fb.GetBufferPointer(), fb.GetSize()));
  int version = 0;
  const auto l = next_message(raw.s, version);
  REQUIRE(l.size() == 3);
  CHECK(d::parse_header(l[0]) == d::Command::locate_reply);
  patro::Limits limits;
  d::AlignedScratch scratch;
  const auto* c = d::verified_control(l[2], limits, scratch);
  const auto* lr = c ? c->body_as_LocateReply() : nullptr;
  REQUIRE((lr && lr->endpoints() && lr->endpoints()->size() > 0));
  wire_version = lr->wire_version();
  return lr->endpoints()->Get(0)->str();
}
}  // namespace

TEST_CASE("wire versions 1 and 2 side by side: each peer is answered in its own, on both paths") {
  const OneHash served;
  const patro::Config& cfg = served.cfg;
  const patro::ObjectId id = served.id;
  Raw raw(cfg.brokers().at(0));
  patro::Limits limits;
  d::AlignedScratch scratch;
  int version = 0;

  // The broker's Welcome says it reads version 2.
  {
    flatbuffers::FlatBufferBuilder fb;
    fb.Finish(patro::wire::CreateControl(fb, patro::wire::ControlBody::Hello,
                                         patro::wire::CreateHello(fb, 0).Union()),
              patro::wire::ControlIdentifier());
    raw.send(d::header_frame(d::Command::hello), d::u64_frame(1),
             zmq::message_t(fb.GetBufferPointer(), fb.GetSize()));
    const auto w = next_message(raw.s, version);
    REQUIRE(w.size() == 3);
    CHECK(d::parse_header(w[0]) == d::Command::welcome);
    const auto* c = d::verified_control(w[2], limits, scratch);
    REQUIRE((c && c->body_as_Welcome()));
    CHECK(c->body_as_Welcome()->wire_version() == 2);
  }
  // Through the broker: a version 1 client (as the Python client is) and a version 2 one, and a
  // client that changes its mind is answered in its latest request's version.
  check_get(raw.s, id, 2, 1);
  check_get(raw.s, id, 3, 2);
  check_get(raw.s, id, 4, 2, true);
  check_get(raw.s, id, 5, 1);
  check_get(raw.s, id, 5, 1, true);  // answered from the reply cache

  // The broker's LocateReply passes on the version the server's lanes read.
  int lanes_read = 0;
  const std::string endpoint = locate(raw, id, lanes_read);
  CHECK(lanes_read == 3);  // the lanes read bundles
  REQUIRE_FALSE(endpoint.empty());
  // Straight to the lane: each version answered in its own.
  Raw direct(endpoint);
  check_get(direct.s, id, 10, 1);
  check_get(direct.s, id, 11, 2);
  check_get(direct.s, id, 11, 2, true);  // from the reply cache
  check_get(direct.s, id, 12, 1, true);

  // Malformed envelopes are dropped; one without its body is answered bad_message.
  for (Raw* r : {&raw, &direct}) {
    r->send(bytes(std::string("PT\x02\x03\x00", 5)));  // too short
    r->send(bytes(std::string("PT\x02\x03\x40", 5) + std::string(24, '\0')), bytes("b"));  // flag
    // A body inside the envelope and a frame after it.
    r->send(bytes(std::string("PT\x02\x03\x08", 5) + std::string(24, '\0') + "b"), bytes("b"));
    r->send(bytes(std::string("PT\x02\x04\x02\xff", 6) + std::string(8, '\0')), bytes("b"));
    r->send(bytes(std::string("PT\x02\x03\x00", 5) + std::string(24, '\0')), bytes("b"),
            bytes("extra"));
  }
  d::Multipart bare;
  bare.push_back(d::header_frame(d::Command::request));
  bare.push_back(d::object_id_frame(id));
  bare.push_back(d::u64_frame(20));
  bare.push_back(bytes(std::string(d::kMaxInlineBody + 1, 'b')));  // too large to go inside
  REQUIRE(d::pack_envelope(bare, 0, false));
  REQUIRE(bare.size() == 2);
  bare.pop_back();
  REQUIRE(d::send_multipart(raw.s, bare, false));
  CHECK(raw.reply_error(20) == Errc::bad_message);
  // Everyone is still served, in either version.
  check_get(raw.s, id, 21, 2);
  check_get(direct.s, id, 22, 2);
  auto ps = patro::get_proxies(cfg);
  CHECK(ps.at(0)["abc"].get() == 123);
}

namespace {
// A get of h["abc"] as one inline version 2 envelope (reads: it says the client reads bundled
// replies; a resent copy carries its attempt).
zmq::message_t get_envelope(const patro::ObjectId& id, uint64_t request_id, bool reads,
                            bool resent = false) {
  d::Multipart m = get_frames(id, request_id, resent);
  REQUIRE(d::pack_envelope(m, 0, false, reads));
  REQUIRE(m.size() == 1);
  return std::move(m[0]);
}

void send_bundle(zmq::socket_t& s, const std::vector<zmq::message_t>& envelopes) {
  std::vector<const zmq::message_t*> ptrs;
  for (const auto& e : envelopes) ptrs.push_back(&e);
  d::Multipart m;
  m.push_back(d::bundle_frame(ptrs));
  REQUIRE(d::send_multipart(s, m, false));
}

// The replies to n requests, in the order they came, and how many messages brought them (a
// bundle is one). Each must be the get's 123.
std::vector<uint64_t> replies(zmq::socket_t& s, size_t n, size_t& messages, size_t& bundles) {
  std::vector<uint64_t> ids;
  messages = bundles = 0;
  for (int i = 0; i < 40 && ids.size() < n; ++i) {
    d::Multipart m;
    if (!d::recv_multipart(s, m)) break;
    std::vector<zmq::message_t> envelopes;
    if (m.size() == 1 && d::is_bundle(m[0])) {
      REQUIRE(d::split_bundle(m[0], envelopes));
      ++bundles;
    } else {
      envelopes.push_back(std::move(m[0]));
      REQUIRE(m.size() == 1);
    }
    ++messages;
    for (auto& e : envelopes) {
      d::Multipart one;
      one.push_back(std::move(e));
      REQUIRE(d::unpack_envelope(one, 0));
      if (d::parse_header(one[0]) == d::Command::heartbeat) continue;
      REQUIRE(one.size() == 3);
      CHECK(d::parse_header(one[0]) == d::Command::reply);
      patro::Limits limits;
      d::AlignedScratch scratch;
      const auto* r = d::verified_reply(one[2], limits, scratch);
      REQUIRE(r != nullptr);
      CHECK(r->status() == patro::wire::Status::Ok);
      ids.push_back(d::parse_u64(one[1]).value_or(0));
    }
  }
  CHECK(ids.size() == n);
  return ids;
}
}  // namespace

TEST_CASE("bundles (version 3): requests in one message to a lane, answered in order") {
  const OneHash served;
  const patro::Config& cfg = served.cfg;
  const patro::ObjectId id = served.id;
  Raw raw(cfg.brokers().at(0));
  int wire_version = 0;
  const std::string endpoint = locate(raw, id, wire_version);
  CHECK(wire_version == 3);
  Raw direct(endpoint);
  size_t messages = 0, bundles = 0;
  const bool reads = true;  // the client reads bundled replies

  // Three requests in one bundle, from a client that reads bundles: answered in order. The lane
  // holds their replies to send them in one bundle, for at most 100 us: a slow turn sends them
  // sooner. So the one bundle is required of one try in twenty, and only in a plain build (under
  // ThreadSanitizer three gets take longer than that every time).
  bool one_bundle = false;
  for (uint64_t round = 0; round < 20 && !one_bundle; ++round) {
    const uint64_t base = 100 + 10 * round;
    std::vector<zmq::message_t> three;
    for (uint64_t i = 0; i < 3; ++i) three.push_back(get_envelope(id, base + i, reads));
    send_bundle(direct.s, three);
    CHECK(replies(direct.s, 3, messages, bundles) ==
          std::vector<uint64_t>{base, base + 1, base + 2});
    one_bundle = messages == 1 && bundles == 1;
  }
  if (!patro::test::kSanitized) CHECK(one_bundle);

  // From a client that does not say it reads bundles: each reply alone, in order.
  {
    std::vector<zmq::message_t> three;
    for (uint64_t i = 0; i < 3; ++i) three.push_back(get_envelope(id, 400 + i, false));
    send_bundle(direct.s, three);
    CHECK(replies(direct.s, 3, messages, bundles) == std::vector<uint64_t>{400, 401, 402});
    CHECK(bundles == 0);
    CHECK(messages == 3);
  }

  // A resent copy in a bundle is answered from the reply cache, beside a new request.
  {
    std::vector<zmq::message_t> two;
    two.push_back(get_envelope(id, 400, reads, true));
    two.push_back(get_envelope(id, 410, reads));
    send_bundle(direct.s, two);
    CHECK(replies(direct.s, 2, messages, bundles) == std::vector<uint64_t>{400, 410});
  }

  // Malformed bundles are dropped whole; the lane goes on serving.
  const std::string head = std::string("PT\x02\x03\x20", 5);
  const zmq::message_t good = get_envelope(id, 500, reads);
  const std::string g(static_cast<const char*>(good.data()), good.size());
  auto be32 = [](size_t n) {
    const char b[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                       static_cast<char>(n >> 8), static_cast<char>(n)};
    return std::string(b, 4);
  };
  direct.send(bytes(head));                                   // empty
  direct.send(bytes(head + be32(g.size() + 1) + g));          // a length past the end
  direct.send(bytes(head + be32(g.size()) + g), bytes("x"));  // a frame after it
  const std::string nested = head + be32(g.size()) + g;
  direct.send(bytes(head + be32(nested.size()) + nested));  // a bundle inside
  std::string over = head;
  for (size_t i = 0; i <= d::kMaxBundle; ++i) over += be32(g.size()) + g;
  direct.send(bytes(over));  // more than kMaxBundle
  {
    std::vector<zmq::message_t> one;
    one.push_back(get_envelope(id, 501, reads));
    send_bundle(direct.s, one);
    // Request 500 was in every malformed bundle and never ran: only 501 is answered.
    CHECK(replies(direct.s, 1, messages, bundles) == std::vector<uint64_t>{501});
  }
  // A broker reads no bundles: one sent there is dropped, and the broker still serves.
  raw.send(bytes(head + be32(g.size()) + g));
  check_get(raw.s, id, 502, 2);
}
