// Malformed, truncated and oversized messages sent straight at the broker and at a server, with
// raw ZeroMQ. Each gets an error answer or is dropped; everyone else keeps being served.
#include <doctest/doctest.h>

#include <zmq.hpp>

#include <optional>

#include <patro/patro.hpp>

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
      std::vector<zmq::message_t> m;
      zmq::message_t f;
      if (!s.recv(f)) break;
      m.push_back(std::move(f));
      while (m.back().more()) {
        zmq::message_t g;
        (void)s.recv(g);
        m.push_back(std::move(g));
      }
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
