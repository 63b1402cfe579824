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
  explicit Lane(const std::string& backend) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect(backend);
    flatbuffers::FlatBufferBuilder fb;
    auto r = wire::CreateRegister(fb, kServer, 0, 1);
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
  // The next request: [hdr + forwarded at][client routing][object id][request id][body].
  Multipart request() {
    Multipart m = next();
    REQUIRE(m.size() == 5);
    uint64_t stamp = 0;
    REQUIRE(detail::parse_header(m[0], stamp) == Command::request);
    return m;
  }
  // Answers a request with one result.
  void answer(Multipart& req, const Value& result) {
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
    send(detail::header_frame(Command::reply), std::move(req[1]), detail::u64_frame(id),
         detail::body_frame(fb));
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
