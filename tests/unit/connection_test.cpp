// The client connection against a real broker, with a raw socket playing the server's lane:
// request ids, replies matched out of order, deadlines, an unknown server, a server that leaves
// with calls in flight (idempotent: server_unavailable; not: outcome_unknown), an unreachable
// broker, an endpoint that cannot be a broker's.
#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "connection.hpp"
#include "endpoint.hpp"
#include "patro/broker.hpp"
#include "patro/error.hpp"

using namespace patro;
using namespace std::chrono_literals;
using detail::Command;
using detail::Multipart;

namespace {
constexpr uint64_t kServer = 0x5e7;

struct RunningBroker {
  Broker broker;
  std::thread thread;
  static BrokerOptions options() {
    BrokerOptions o;
    o.frontend = "tcp://127.0.0.1:*";
    o.backend = "tcp://127.0.0.1:*";
    return o;
  }
  RunningBroker() : broker(options()), thread([this] { broker.run(); }) {}
  ~RunningBroker() {
    broker.stop();
    thread.join();
  }
};

// One lane of a fake server, registered with the broker.
struct Lane {
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  // wire_version: what its REGISTER says it reads (0: says nothing, as an older server).
  explicit Lane(const std::string& backend, uint8_t wire_version = 0) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect(backend);
    flatbuffers::FlatBufferBuilder fb;
    auto r = wire::CreateRegister(fb, kServer, 0, 1, 0, 0, 0, 0, wire_version);
    fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, r.Union()),
              wire::ControlIdentifier());
    send(detail::header_frame(Command::register_server), detail::body_frame(fb));
    const Multipart m = next();
    REQUIRE(m.size() == 2);
    REQUIRE(detail::parse_header(m[0]) == Command::registered);
  }
  template <class... F>
  void send(F&&... frames) {
    Multipart m;
    (m.push_back(std::forward<F>(frames)), ...);
    REQUIRE(detail::send_multipart(s, m, false));
  }
  Multipart next() {
    for (int i = 0; i < 20; ++i) {
      Multipart m;
      if (!detail::recv_multipart(s, m)) return {};
      // Heartbeats, and CLIENT_AT (a client located us): nothing to answer.
      if (!m.empty() && (detail::parse_header(m[0]) == Command::heartbeat ||
                         detail::parse_header(m[0]) == Command::client_at))
        continue;
      return m;
    }
    return {};
  }
  // The next request: [hdr + forwarded at][client routing][object id][request id][body]; one in
  // version 2 ([envelope holding the body]) is unpacked into these, and counted in v2.
  Multipart request() {
    Multipart m = next();
    if (!m.empty() && detail::is_envelope(m[0])) {
      CHECK(m.size() == 1);
      REQUIRE(detail::unpack_envelope(m, 0));
      ++v2;
    }
    REQUIRE(m.size() == 5);
    uint64_t stamp = 0;
    REQUIRE(detail::parse_header(m[0], stamp) == Command::request);
    return m;
  }
  int v2 = 0;  // requests that came in version 2
  // Answers a request with one result (in version 2 if it came so).
  void answer(Multipart& req, const Value& result, bool in_v2 = false) {
    const uint64_t id = *detail::parse_u64(req[3]);
    flatbuffers::FlatBufferBuilder fb;
    const detail::RefWriter no_refs = [](flatbuffers::FlatBufferBuilder&, const Reference&) {
      return flatbuffers::Offset<wire::Ref>();
    };
    auto results = detail::encode_values(fb, ValueArray{result}, no_refs);
    wire::ReplyBuilder b(fb);
    b.add_request_id(id);
    b.add_results(results);
    fb.Finish(b.Finish(), wire::ReplyIdentifier());
    Multipart m;
    m.push_back(detail::header_frame(Command::reply));
    m.push_back(std::move(req[1]));
    m.push_back(detail::u64_frame(id));
    m.push_back(detail::body_frame(fb));
    if (in_v2) REQUIRE(detail::pack_envelope(m, 0, true));
    REQUIRE(detail::send_multipart(s, m, false));
  }
};

ClientOptions options() {
  ClientOptions o;
  o.call_timeout = 5s;
  o.connect_timeout = 2s;
  return o;
}

Errc error_of(detail::Connection& c, const detail::SlotPtr& slot) {
  try {
    (void)c.results(slot);
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::ok;
}
}  // namespace

TEST_CASE("calls carry distinct request ids and replies are matched to them in any order") {
  RunningBroker b;
  Lane lane(b.broker.backend_endpoint());
  auto c = std::make_shared<detail::Connection>(
      std::vector<std::string>{b.broker.frontend_endpoint()}, options());
  c->connect();
  CHECK(c->client_id() != 0);
  const ObjectId id{kServer, 1};
  auto s1 = c->start(id, wire::Op::Get, Path{std::string("a")}, {});
  auto s2 = c->start(id, wire::Op::Get, Path{std::string("b")}, {});
  Multipart r1 = lane.request();
  Multipart r2 = lane.request();
  const uint64_t id1 = *detail::parse_u64(r1[3]), id2 = *detail::parse_u64(r2[3]);
  CHECK(id1 != id2);
  CHECK(id1 == s1->request_id);
  CHECK(id2 == s2->request_id);
  CHECK(detail::parse_object_id(r1[2]) == id);
  // The body's own request id and client id agree with the frames.
  detail::AlignedScratch scratch;
  const auto* body = detail::verified_request(r1[4], Limits{}, scratch);
  REQUIRE(body != nullptr);
  CHECK(body->request_id() == id1);
  CHECK(body->client_id() == c->client_id());
  CHECK(detail::decode_path(body->path()) == Path{std::string("a")});
  // Answered in reverse order.
  lane.answer(r2, "second");
  lane.answer(r1, "first");
  c->await(s1);
  c->await(s2);
  CHECK(c->results(s1).at(0) == "first");
  CHECK(c->results(s2).at(0) == "second");
}

TEST_CASE("an unanswered call ends at its deadline with Errc::timeout") {
  RunningBroker b;
  Lane lane(b.broker.backend_endpoint());
  auto c = std::make_shared<detail::Connection>(
      std::vector<std::string>{b.broker.frontend_endpoint()}, options());
  c->connect();
  detail::CallExtras extras;
  extras.timeout = 200ms;
  const auto start = std::chrono::steady_clock::now();
  auto s =
      c->start(ObjectId{kServer, 1}, wire::Op::Get, {}, {}, {}, wire::CallContext::Scalar, extras);
  (void)lane.request();  // it arrived, and is never answered
  c->await(s);
  CHECK(std::chrono::steady_clock::now() - start < 4s);
  CHECK(error_of(*c, s) == Errc::timeout);
}

TEST_CASE("an unknown server is server_unavailable") {
  RunningBroker b;
  auto c = std::make_shared<detail::Connection>(
      std::vector<std::string>{b.broker.frontend_endpoint()}, options());
  c->connect();
  try {
    (void)c->call(ObjectId{0xdead, 1}, wire::Op::Get, {}, {});
    FAIL("the call succeeded");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::server_unavailable);
  }
}

TEST_CASE("a server that leaves with calls in flight: idempotent or not, a definite answer") {
  RunningBroker b;
  auto lane = std::make_unique<Lane>(b.broker.backend_endpoint());
  auto c = std::make_shared<detail::Connection>(
      std::vector<std::string>{b.broker.frontend_endpoint()}, options());
  c->connect();
  auto get = c->start(ObjectId{kServer, 1}, wire::Op::Get, {}, {});
  auto push = c->start(ObjectId{kServer, 1}, wire::Op::Push, {}, {1});
  (void)lane->request();
  (void)lane->request();
  lane->send(detail::header_frame(Command::disconnect));
  c->await(get);
  c->await(push);
  CHECK(error_of(*c, get) == Errc::server_unavailable);
  CHECK(error_of(*c, push) == Errc::outcome_unknown);
}

TEST_CASE("an unreachable broker is broker_unreachable") {
  ClientOptions o = options();
  o.connect_timeout = 200ms;
  // A port that was just free; nobody listens on it.
  std::string endpoint;
  {
    RunningBroker b;
    endpoint = b.broker.frontend_endpoint();
  }
  auto c = std::make_shared<detail::Connection>(std::vector<std::string>{endpoint}, o);
  try {
    c->connect();
    FAIL("connected to nobody");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::broker_unreachable);
  }
}

TEST_CASE("an endpoint that cannot be a broker's is invalid_argument at once, saying why") {
  ClientOptions o = options();
  o.connect_timeout = 30s;  // a usage error must not wait for it
  const std::vector<std::pair<std::string, std::string>> bad{
      {"nonsense", "names no transport"},        {"tcp://localhost", "tcp://HOST:PORT"},
      {"tcp://h:99999", "port from 1 to 65535"}, {"tcp://h:0", "port from 1 to 65535"},
      {"tcp://h:5x", "port from 1 to 65535"},    {"tcp://*:5555", "for binding"},
      {"inproc://broker", "own ZeroMQ context"},
  };
  for (const auto& [endpoint, why] : bad) {
    CAPTURE(endpoint);
    try {
      auto c = std::make_shared<detail::Connection>(std::vector<std::string>{endpoint}, o);
      c->connect();
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      CHECK(std::string(e.what()).find(why) != std::string::npos);
      CHECK(std::string(e.what()).find("is not a broker endpoint") != std::string::npos);
    }
  }
  // What only ZeroMQ's connect can tell (an unknown transport) is a usage error too.
  auto c = std::make_shared<detail::Connection>(std::vector<std::string>{"foo://x"}, o);
  try {
    c->connect();
    FAIL("connected through an unknown transport");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_argument);
    CHECK(std::string(e.what()).find("is not a broker endpoint") != std::string::npos);
  }
  // Well-formed endpoints pass the check (nobody answers there: that is another error).
  for (const std::string good : {"tcp://127.0.0.1:1", "tcp://[::1]:5555", "ipc:///tmp/x.sock"})
    CHECK_FALSE(detail::endpoint_problem(good));
}

TEST_CASE("wire version 2: a broker forwards it to a server whose REGISTER says it reads it") {
  // (The test cases above: a server that says nothing gets version 1.)
  RunningBroker b;
  Lane lane(b.broker.backend_endpoint(), 2);
  auto c = std::make_shared<detail::Connection>(
      std::vector<std::string>{b.broker.frontend_endpoint()}, options());
  c->connect();
  const ObjectId id{kServer, 1};
  auto s1 = c->start(id, wire::Op::Get, Path{std::string("a")}, {});
  auto s2 = c->start(id, wire::Op::Get, Path{std::string("b")}, {});
  Multipart r1 = lane.request();
  Multipart r2 = lane.request();
  CHECK(lane.v2 == 2);
  lane.answer(r1, "v2", true);
  lane.answer(r2, "v1");  // a server may answer in version 1 too
  c->await(s1);
  c->await(s2);
  CHECK(c->results(s1).at(0) == "v2");
  CHECK(c->results(s2).at(0) == "v1");
}

TEST_CASE("wire version 2: the client sends it only to a broker whose Welcome says it reads it") {
  for (const uint8_t says : {uint8_t{0}, uint8_t{2}}) {
    CAPTURE(int(says));
    // A fake broker: it welcomes the client, then takes its request as it comes (nothing in its
    // thread may throw: CHECK only).
    zmq::context_t ctx;
    zmq::socket_t router(ctx, zmq::socket_type::router);
    router.set(zmq::sockopt::linger, 0);
    router.set(zmq::sockopt::rcvtimeo, 3000);
    router.bind("tcp://127.0.0.1:*");
    const std::string endpoint = router.get(zmq::sockopt::last_endpoint);
    std::thread fake([&] {
      for (int i = 0; i < 50; ++i) {
        Multipart m;
        if (!detail::recv_multipart(router, m) || m.size() < 2) return;
        const bool v2 = detail::is_envelope(m[1]);
        if (v2) {
          CHECK(m.size() == 2);  // [routing][envelope holding the body]
          if (!detail::unpack_envelope(m, 1)) return;
        }
        const auto cmd = detail::parse_header(m[1]);
        if (cmd == Command::hello) {
          flatbuffers::FlatBufferBuilder fb;
          wire::WelcomeBuilder w(fb);
          w.add_heartbeat_ms(1000);
          w.add_liveness(3);
          w.add_instance(7);
          if (says != 0) w.add_wire_version(says);
          fb.Finish(wire::CreateControl(fb, wire::ControlBody::Welcome, w.Finish().Union()),
                    wire::ControlIdentifier());
          Multipart out;
          out.push_back(std::move(m[0]));
          out.push_back(detail::header_frame(Command::welcome));
          out.push_back(std::move(m[2]));
          out.push_back(detail::body_frame(fb));
          CHECK(detail::send_multipart(router, out, false));
        } else if (cmd == Command::request) {
          CHECK(v2 == (says == 2));
          if (m.size() != 5) return;
          const uint64_t rid = detail::parse_u64(m[3]).value_or(0);
          Multipart out;
          out.push_back(std::move(m[0]));
          out.push_back(detail::header_frame(Command::reply));
          out.push_back(detail::u64_frame(rid));
          out.push_back(detail::error_reply(rid, Errc::not_found, "fake"));
          if (v2) CHECK(detail::pack_envelope(out, 1, false));
          CHECK(detail::send_multipart(router, out, false));
          return;
        }
      }
    });
    {
      ClientOptions o = options();
      o.route = Route::broker;  // no LOCATE: this broker has no servers
      auto c = std::make_shared<detail::Connection>(std::vector<std::string>{endpoint}, o);
      c->connect();
      auto slot = c->start(ObjectId{kServer, 1}, wire::Op::Get, Path{std::string("a")}, {});
      c->await(slot);
      CHECK(error_of(*c, slot) == Errc::not_found);
    }
    fake.join();
  }
}
