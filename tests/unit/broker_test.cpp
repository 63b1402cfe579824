// The broker's routing, driven with raw sockets playing a server lane and a client: a request is
// routed by its object id to the lane of the server that owns it and the reply back to the
// client; an unknown or departed server gets a definite server_unavailable; frames it cannot
// parse are dropped and counted, and the broker goes on. (patro::Broker owns its ZeroMQ context,
// so the peers reach it over loopback TCP rather than inproc.)
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "log.hpp"
#include "patro/broker.hpp"
#include "patro/error.hpp"
#include "socket.hpp"
#include "wire.hpp"

using namespace patro;
using detail::Command;
using detail::Multipart;

namespace {
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
  explicit RunningBroker(const BrokerOptions& o) : broker(o), thread([this] { broker.run(); }) {}
  // A broker on the endpoints another one had: that one restarted.
  RunningBroker(const std::string& front, const std::string& back)
      : broker([&] {
          BrokerOptions o;
          o.frontend = front;
          o.backend = back;
          return o;
        }()),
        thread([this] { broker.run(); }) {}
  ~RunningBroker() {
    broker.stop();
    thread.join();
  }
};

struct Peer {
  zmq::socket_t s;
  // durable: made as Patro makes its sockets (detail::make_socket: a routing id of its own).
  Peer(zmq::context_t& ctx, const std::string& endpoint, bool durable = false)
      : s(durable ? detail::make_socket(ctx, zmq::socket_type::dealer, Limits{})
                  : zmq::socket_t(ctx, zmq::socket_type::dealer)) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect(endpoint);
  }
  void send(Multipart m) { REQUIRE(detail::send_multipart(s, m, false)); }
  // The next message other than a heartbeat; empty if none within the timeout.
  Multipart next(std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    s.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
    for (int i = 0; i < 20; ++i) {
      Multipart m;
      if (!detail::recv_multipart(s, m)) return {};
      if (!m.empty() && detail::parse_header(m[0]) == Command::heartbeat) continue;
      return m;
    }
    return {};
  }
};

zmq::message_t text(const std::string& s) {
  return zmq::message_t(s.data(), s.size());
}

template <class... F>
Multipart make(F&&... frames) {
  Multipart m;
  (m.push_back(std::forward<F>(frames)), ...);
  return m;
}

zmq::message_t register_body(uint64_t server_id) {
  flatbuffers::FlatBufferBuilder fb;
  auto r = wire::CreateRegister(fb, server_id, 0, 1);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, r.Union()),
            wire::ControlIdentifier());
  return detail::body_frame(fb);
}

void register_lane(Peer& lane, uint64_t server_id) {
  lane.send(make(detail::header_frame(Command::register_server), register_body(server_id)));
  const Multipart m = lane.next();
  REQUIRE(m.size() == 2);
  CHECK(detail::parse_header(m[0]) == Command::registered);
}

// The error code of a REPLY or NO_ROUTE [hdr][request id][Reply] to request_id; nullopt if there
// is none.
std::optional<Errc> reply_code(const Multipart& m, uint64_t request_id) {
  const auto cmd = m.size() == 3 ? detail::parse_header(m[0]) : std::nullopt;
  if (cmd != Command::reply && cmd != Command::no_route) return std::nullopt;
  if (detail::parse_u64(m[1]) != request_id) return std::nullopt;
  detail::AlignedScratch s;
  const auto* r = detail::verified_reply(m[2], Limits{}, s);
  if (r == nullptr) return std::nullopt;
  return static_cast<Errc>(r->error_code());
}
}  // namespace

TEST_CASE("a request is routed by object id to its server's lane, and the reply back") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer lane(ctx, b.broker.backend_endpoint());
  Peer client(ctx, b.broker.frontend_endpoint());
  register_lane(lane, 0xabc);

  const ObjectId id{0xabc, 0x123};
  client.send(make(detail::header_frame(Command::request), detail::object_id_frame(id),
                   detail::u64_frame(1), text("an opaque body")));
  Multipart in = lane.next();
  // [hdr + forwarded at][client routing][object id][request id][body], the body untouched.
  REQUIRE(in.size() == 5);
  uint64_t stamp = 0;
  CHECK(detail::parse_header(in[0], stamp) == Command::request);
  CHECK(stamp != 0);
  CHECK(detail::parse_object_id(in[2]) == id);
  CHECK(detail::parse_u64(in[3]) == 1);
  CHECK(in[4].to_string() == "an opaque body");

  lane.send(make(detail::header_frame(Command::reply), std::move(in[1]), detail::u64_frame(1),
                 detail::error_reply(1, Errc::not_found, "from the server")));
  const Multipart out = client.next();
  CHECK(reply_code(out, 1) == Errc::not_found);
  // The broker counts a reply after it forwarded it: the client may read it first. Wait for the
  // count, bounded.
  BrokerStats st = b.broker.stats();
  for (int i = 0; i < 200 && st.replies < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    st = b.broker.stats();
  }
  CHECK(st.routed == 1);
  CHECK(st.replies == 1);
  CHECK(st.servers == 1);
}

TEST_CASE("an unknown server, and one that left, get server_unavailable from the broker") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer client(ctx, b.broker.frontend_endpoint());
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0x999, 1}), detail::u64_frame(5), text("x")));
  CHECK(reply_code(client.next(), 5) == Errc::server_unavailable);

  Peer lane(ctx, b.broker.backend_endpoint());
  register_lane(lane, 0x777);
  lane.send(make(detail::header_frame(Command::disconnect)));
  // The broker handles the lane's messages in order, so once a request after the disconnect is
  // answered the server is gone; retry a bounded number of times in case the client's message
  // overtook the lane's on the other socket.
  std::optional<Errc> code;
  for (int i = 0; i < 50 && code != Errc::server_unavailable; ++i) {
    client.send(make(detail::header_frame(Command::request),
                     detail::object_id_frame(ObjectId{0x777, 1}), detail::u64_frame(6 + i),
                     text("x")));
    Multipart m = client.next();
    if (m.empty()) {
      m = lane.next();  // routed to the lane before it left: answer it
      REQUIRE(m.size() == 5);
      continue;
    }
    code = reply_code(m, 6 + i);
  }
  CHECK(code == Errc::server_unavailable);
  CHECK(b.broker.stats().rejected >= 2);
}

TEST_CASE("SERVER_DOWN names the requests the server that went had, and the broker forgets them") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer client(ctx, b.broker.frontend_endpoint());
  Peer lane(ctx, b.broker.backend_endpoint());
  register_lane(lane, 0x778);
  for (uint64_t rid : {9, 11}) {
    client.send(make(detail::header_frame(Command::request),
                     detail::object_id_frame(ObjectId{0x778, 1}), detail::u64_frame(rid),
                     text("x")));
    REQUIRE(lane.next().size() == 5);  // routed, never answered
  }
  lane.send(make(detail::header_frame(Command::disconnect)));
  const Multipart down = client.next();
  REQUIRE(down.size() == 3);
  CHECK(detail::parse_header(down[0]) == Command::server_down);
  CHECK(detail::parse_u64(down[1]) == 0x778);
  auto ids = detail::parse_u64_list(down[2]);
  REQUIRE(ids);
  std::sort(ids->begin(), ids->end());
  CHECK(*ids == std::vector<uint64_t>{9, 11});
  CHECK_FALSE(detail::parse_u64_list(text("seven")));  // not a multiple of 8 bytes
}

TEST_CASE("frames the broker cannot parse are dropped and counted; it goes on routing") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer client(ctx, b.broker.frontend_endpoint());
  const uint64_t dropped_before = b.broker.stats().dropped;
  client.send(make(text("not a header")));
  client.send(make(text("PT\x09\x03")));                      // another version
  client.send(make(detail::header_frame(Command::request)));  // no request id: unanswerable
  client.send(make(detail::header_frame(Command::hello), detail::u64_frame(1), text("junk")));
  // A request id but a short object id: answered bad_message.
  client.send(
      make(detail::header_frame(Command::request), text("short"), detail::u64_frame(9), text("x")));
  CHECK(reply_code(client.next(), 9) == Errc::bad_message);
  CHECK(b.broker.stats().dropped >= dropped_before + 4);
  // And it still answers.
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0x1, 1}), detail::u64_frame(10), text("x")));
  CHECK(reply_code(client.next(), 10) == Errc::server_unavailable);
}

TEST_CASE(
    "a reply the restarted broker did not route reaches no client; the resent request's does") {
  // The lane took the request from the broker's first run; the reply leaves after the restart.
  // A broker forwards a REPLY only from the server it routed that request to (no other peer may
  // answer in a server's name), so this one reaches nobody: neither the asker nor a client that
  // the restarted broker gave the same routing id. The asker resends what it had in flight when
  // it sees the new broker instance, as libpatro does, and that copy's reply reaches it.
  zmq::context_t ctx;
  auto first = std::make_unique<RunningBroker>();
  const std::string front = first->broker.frontend_endpoint();
  const std::string back = first->broker.backend_endpoint();
  Peer lane(ctx, back, true), asker(ctx, front, true);
  register_lane(lane, 0xabc);
  const ObjectId id{0xabc, 0x1};
  asker.send(make(detail::header_frame(Command::request), detail::object_id_frame(id),
                  detail::u64_frame(7), text("body")));
  Multipart in = lane.next();
  REQUIRE(in.size() == 5);
  CHECK(in[1].size() == detail::kRoutingIdSize);
  CHECK(static_cast<const char*>(in[1].data())[0] == 'p');

  first.reset();
  RunningBroker second(front, back);
  Peer other(ctx, front, true);
  // Each client is connected to the restarted broker once it answers a request of its own.
  auto reconnected = [&](Peer& p, uint64_t rid) {
    for (int i = 0; i < 50; ++i) {
      p.send(make(detail::header_frame(Command::request),
                  detail::object_id_frame(ObjectId{0x999, 1}), detail::u64_frame(rid), text("x")));
      if (reply_code(p.next(std::chrono::milliseconds(200)), rid)) return true;
    }
    return false;
  };
  REQUIRE(reconnected(other, 100));
  REQUIRE(reconnected(asker, 200));
  register_lane(lane, 0xabc);
  const std::string asker_routing = in[1].to_string();
  lane.send(make(detail::header_frame(Command::reply), std::move(in[1]), detail::u64_frame(7),
                 detail::error_reply(7, Errc::not_found, "the answer")));
  CHECK(asker.next(std::chrono::milliseconds(300)).empty());
  CHECK(other.next(std::chrono::milliseconds(300)).empty());
  CHECK(second.broker.stats().refused_by_kind["reply_unrouted"] >= 1);
  // The resent copy ([attempt] frame) is routed to the lane, and its reply goes through.
  asker.send(make(detail::header_frame(Command::request), detail::object_id_frame(id),
                  detail::u64_frame(7), text("body"), detail::u64_frame(1)));
  Multipart again = lane.next();
  REQUIRE(again.size() == 5);
  CHECK(again[1].to_string() == asker_routing);
  lane.send(make(detail::header_frame(Command::reply), std::move(again[1]), detail::u64_frame(7),
                 detail::error_reply(7, Errc::not_found, "the answer")));
  CHECK(reply_code(asker.next(), 7) == Errc::not_found);
  CHECK(other.next(std::chrono::milliseconds(300)).empty());
}

namespace {
zmq::message_t register_body(uint64_t server_id, uint32_t lane, uint32_t lanes,
                             uint64_t incarnation, const std::string& proof = {}) {
  flatbuffers::FlatBufferBuilder fb;
  auto p = proof.empty()
               ? 0
               : fb.CreateVector(reinterpret_cast<const uint8_t*>(proof.data()), proof.size());
  auto r = wire::CreateRegister(fb, server_id, lane, lanes, 0, incarnation, 0, p);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register, r.Union()),
            wire::ControlIdentifier());
  return detail::body_frame(fb);
}

// Registers lane `lane` of `lanes`; the REGISTERED's refusal (empty: accepted).
std::string try_register(Peer& p, uint64_t server_id, uint32_t lane, uint32_t lanes,
                         uint64_t incarnation, const std::string& proof = {}) {
  p.send(make(detail::header_frame(Command::register_server),
              register_body(server_id, lane, lanes, incarnation, proof)));
  const Multipart m = p.next();
  REQUIRE(m.size() == 2);
  REQUIRE(detail::parse_header(m[0]) == Command::registered);
  detail::AlignedScratch s;
  const auto* c = detail::verified_control(m[1], Limits{}, s);
  REQUIRE(c != nullptr);
  const auto* r = c->body_as_Registered();
  REQUIRE(r != nullptr);
  return r->refusal() ? r->refusal()->str() : std::string();
}

// The broker's count of refusals of a kind, once it reaches `at_least` (bounded wait: the
// broker reads its peers' sockets in turn, so a refusal may be counted a little after a reply
// sent later on another socket went through).
uint64_t refused(Broker& b, const std::string& kind, uint64_t at_least = 0) {
  uint64_t n = b.stats().refused_by_kind[kind];
  for (int i = 0; i < 200 && n < at_least; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = b.stats().refused_by_kind[kind];
  }
  return n;
}
uint64_t refused(RunningBroker& b, const std::string& kind, uint64_t at_least = 0) {
  return refused(b.broker, kind, at_least);
}
}  // namespace

TEST_CASE("a server id is its process's: another incarnation is refused, the same one rejoins") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer lane0(ctx, b.broker.backend_endpoint(), true), lane1(ctx, b.broker.backend_endpoint(), true);
  CHECK(try_register(lane0, 0x51, 0, 2, 1111).empty());
  CHECK(try_register(lane1, 0x51, 1, 2, 1111).empty());
  Peer rogue(ctx, b.broker.backend_endpoint(), true);
  CHECK(!try_register(rogue, 0x51, 0, 2, 2222).empty());  // another incarnation
  CHECK(!try_register(rogue, 0x51, 0, 1, 0).empty());     // none, and one lane
  CHECK(!try_register(rogue, 0x51, 0, 3, 1111).empty());  // the incarnation, other lanes
  CHECK(refused(b, "server_id_taken", 3) == 3);
  // The same process's lane 0 from a new socket (it reconnected): accepted, and it replaces the
  // old socket.
  Peer lane0b(ctx, b.broker.backend_endpoint(), true);
  CHECK(try_register(lane0b, 0x51, 0, 2, 1111).empty());
  // A client's requests reach the lanes, never the rogue.
  Peer client(ctx, b.broker.frontend_endpoint(), true);
  for (uint64_t rid = 1; rid <= 4; ++rid)
    client.send(make(detail::header_frame(Command::request),
                     detail::object_id_frame(ObjectId{0x51, 1}), detail::u64_frame(rid),
                     text("x")));
  CHECK(rogue.next(std::chrono::milliseconds(300)).empty());
}

TEST_CASE(
    "a restart proof: another incarnation with the id's first proof replaces the old process at "
    "once; without it, or with another, it is refused") {
  RunningBroker b;
  zmq::context_t ctx;
  const std::string secret(32, '\x5a');
  Peer old0(ctx, b.broker.backend_endpoint(), true), old1(ctx, b.broker.backend_endpoint(), true);
  CHECK(try_register(old0, 0x61, 0, 2, 1111, secret).empty());
  CHECK(try_register(old1, 0x61, 1, 2, 1111, secret).empty());
  Peer rogue(ctx, b.broker.backend_endpoint(), true);
  const std::string none = try_register(rogue, 0x61, 0, 2, 2222);
  CHECK(none.find("no restart proof") != std::string::npos);
  std::string wrong = secret;
  wrong.back() = 'x';  // differs in its last byte only
  CHECK(try_register(rogue, 0x61, 0, 2, 2222, wrong).find("restart proof is not the id's") !=
        std::string::npos);
  CHECK(!try_register(rogue, 0x61, 0, 2, 2222, secret.substr(1)).empty());       // a prefix
  CHECK(!try_register(rogue, 0x61, 0, 2, 2222, std::string(257, 'a')).empty());  // over the cap
  CHECK(refused(b, "server_id_taken", 3) == 3);
  CHECK(b.broker.stats().servers == 1);

  // The restarted process (another incarnation, the proof, even another lane count): accepted at
  // once, and the old one's lanes are gone.
  Peer fresh(ctx, b.broker.backend_endpoint(), true);
  CHECK(try_register(fresh, 0x61, 0, 1, 3333, secret).empty());
  Peer client(ctx, b.broker.frontend_endpoint(), true);
  for (uint64_t rid = 1; rid <= 3; ++rid)
    client.send(make(detail::header_frame(Command::request),
                     detail::object_id_frame(ObjectId{0x61, 1}), detail::u64_frame(rid),
                     text("x")));
  size_t reached = 0;
  for (int i = 0; i < 3; ++i) {
    const Multipart m = fresh.next(std::chrono::milliseconds(2000));
    uint64_t stamp = 0;  // a forwarded REQUEST's header carries when it was forwarded
    if (!m.empty() && detail::parse_header(m[0], stamp) == Command::request) ++reached;
  }
  CHECK(reached == 3);
  // The old process, back with its old incarnation but no proof, may not take the id again.
  CHECK(!try_register(old0, 0x61, 0, 2, 1111).empty());

  // An id first registered without a proof keeps the incarnation rule alone: a proof does not
  // open it.
  Peer plain(ctx, b.broker.backend_endpoint(), true), later(ctx, b.broker.backend_endpoint(), true);
  CHECK(try_register(plain, 0x62, 0, 1, 4444).empty());
  CHECK(!try_register(later, 0x62, 0, 1, 5555, secret).empty());
}

TEST_CASE("a client's requests wait for its own lane: never another one while it is away") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer lane0(ctx, b.broker.backend_endpoint(), true), lane1(ctx, b.broker.backend_endpoint(), true);
  CHECK(try_register(lane0, 0x5a, 0, 2, 4242).empty());  // lane 1 not yet registered
  constexpr int kClients = 16;
  std::vector<std::unique_ptr<Peer>> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.push_back(std::make_unique<Peer>(ctx, b.broker.frontend_endpoint(), true));
    clients.back()->send(make(detail::header_frame(Command::request),
                              detail::object_id_frame(ObjectId{0x5a, 1}),
                              detail::u64_frame(static_cast<uint64_t>(c + 1)), text("x")));
  }
  // Each request either reached lane 0 or was answered NO_ROUTE (server_unavailable); with 16
  // clients some hash to lane 1 (all to lane 0: a chance of 2^-16). Read within the broker's
  // window (3 s): the lanes here send no heartbeats.
  int at_lane0 = 0;
  for (Multipart m = lane0.next(std::chrono::milliseconds(300)); !m.empty();
       m = lane0.next(std::chrono::milliseconds(300)))
    ++at_lane0;
  std::vector<int> waiting;  // the clients whose lane is lane 1
  for (int c = 0; c < kClients; ++c) {
    // A NO_ROUTE is sent as the request arrives: it is here by now.
    const Multipart m = clients[static_cast<size_t>(c)]->next(std::chrono::milliseconds(20));
    if (m.empty()) continue;  // routed to lane 0
    CHECK(detail::parse_header(m[0]) == Command::no_route);
    CHECK(reply_code(m, static_cast<uint64_t>(c + 1)) == Errc::server_unavailable);
    waiting.push_back(c);
  }
  CHECK_FALSE(waiting.empty());
  CHECK(at_lane0 + static_cast<int>(waiting.size()) == kClients);
  // Lane 1 comes: their resends reach it, and none reaches lane 0.
  CHECK(try_register(lane1, 0x5a, 1, 2, 4242).empty());
  for (int c : waiting)
    clients[static_cast<size_t>(c)]->send(
        make(detail::header_frame(Command::request), detail::object_id_frame(ObjectId{0x5a, 1}),
             detail::u64_frame(static_cast<uint64_t>(c + 1)), text("x"), detail::u64_frame(2)));
  int at_lane1 = 0;
  for (Multipart m = lane1.next(std::chrono::milliseconds(500)); !m.empty();
       m = lane1.next(std::chrono::milliseconds(300)))
    ++at_lane1;
  CHECK(at_lane1 == static_cast<int>(waiting.size()));
  CHECK(lane0.next(std::chrono::milliseconds(100)).empty());
}

TEST_CASE("a REPLY is forwarded only from the server its request was routed to") {
  RunningBroker b;
  zmq::context_t ctx;
  Peer victim(ctx, b.broker.backend_endpoint(), true),
      rogue(ctx, b.broker.backend_endpoint(), true);
  Peer stranger(ctx, b.broker.backend_endpoint(), true);
  Peer client(ctx, b.broker.frontend_endpoint(), true);
  register_lane(victim, 0x61);
  register_lane(rogue, 0x62);
  // The client talks to both servers; the rogue learns its routing id from a request.
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0x62, 1}), detail::u64_frame(1), text("x")));
  Multipart to_rogue = rogue.next();
  REQUIRE(to_rogue.size() == 5);
  const std::string client_routing = to_rogue[1].to_string();
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0x61, 1}), detail::u64_frame(2), text("x")));
  Multipart to_victim = victim.next();
  REQUIRE(to_victim.size() == 5);
  // The rogue (a registered server) and a stranger (no lane) answer request 2: refused.
  for (Peer* p : {&rogue, &stranger})
    p->send(make(detail::header_frame(Command::reply), text(client_routing), detail::u64_frame(2),
                 detail::error_reply(2, Errc::ok, "forged")));
  CHECK(client.next(std::chrono::milliseconds(300)).empty());
  CHECK(refused(b, "reply_unrouted", 2) == 2);
  // The victim's answer goes through, once; a second copy of it does not.
  for (int i = 0; i < 2; ++i)
    victim.send(make(detail::header_frame(Command::reply), text(client_routing),
                     detail::u64_frame(2), detail::error_reply(2, Errc::not_found, "real")));
  CHECK(reply_code(client.next(), 2) == Errc::not_found);
  CHECK(client.next(std::chrono::milliseconds(300)).empty());
}

TEST_CASE("SERVER_ALIVE keeps a server only from its lanes, or with its incarnation") {
  BrokerOptions o = RunningBroker::options();
  o.heartbeat.interval = std::chrono::milliseconds(100);
  o.heartbeat.liveness = 4;  // a 400 ms window
  Broker broker(o);
  std::thread t([&] { broker.run(); });
  zmq::context_t ctx;
  auto alive_for = [&](uint64_t id, std::optional<uint64_t> incarnation) {
    Peer lane(ctx, broker.backend_endpoint(), true), other(ctx, broker.backend_endpoint(), true);
    lane.send(make(detail::header_frame(Command::register_server), register_body(id, 0, 1, 77)));
    REQUIRE(lane.next().size() == 2);
    // The lane falls silent; `other` beats for it for 1.5 s (almost four windows).
    bool kept = true;
    for (int i = 0; i < 75; ++i) {
      Multipart m = make(detail::header_frame(Command::server_alive), detail::u64_frame(id));
      if (incarnation) m.push_back(detail::u64_frame(*incarnation));
      other.send(std::move(m));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kept = broker.stats().servers == 1;
    // Dropped (bounded wait), so the next round starts from none.
    for (int i = 0; i < 200 && broker.stats().servers != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return kept;
  };
  CHECK_FALSE(alive_for(0x71, std::nullopt));  // a socket that is none of its lanes
  CHECK_FALSE(alive_for(0x72, 78));            // with the wrong incarnation
  CHECK(refused(broker, "alive_forged", 2) >= 2);
  CHECK(alive_for(0x73, 77));  // the server's own alive thread: its incarnation
  broker.stop();
  t.join();
}

TEST_CASE("REGISTER limits: names, bytes, strings, names of another server's objects") {
  BrokerOptions o = RunningBroker::options();
  o.max_register_names = 10;
  o.max_register_bytes = 500;
  o.max_name_bytes = 100;
  Broker broker(o);
  std::thread t([&] { broker.run(); });
  zmq::context_t ctx;
  auto body = [](uint64_t id, size_t n, size_t len, uint64_t owner) {
    flatbuffers::FlatBufferBuilder fb;
    std::vector<flatbuffers::Offset<wire::NameBinding>> v;
    for (size_t i = 0; i < n; ++i) {
      const std::string name = std::to_string(i) + std::string(len, 'n');
      v.push_back(wire::CreateNameBindingDirect(fb, name.c_str(), owner, i + 1, "T", "HASH"));
    }
    auto nv = fb.CreateVector(v);
    fb.Finish(wire::CreateControl(fb, wire::ControlBody::Register,
                                  wire::CreateRegister(fb, id, 0, 1, nv, 5).Union()),
              wire::ControlIdentifier());
    return detail::body_frame(fb);
  };
  auto refusal_of = [&](zmq::message_t b) {
    Peer p(ctx, broker.backend_endpoint(), true);
    p.send(make(detail::header_frame(Command::register_server), std::move(b)));
    const Multipart m = p.next();
    REQUIRE(m.size() == 2);
    detail::AlignedScratch s;
    const auto* r = detail::verified_control(m[1], Limits{}, s)->body_as_Registered();
    return r->refusal() ? r->refusal()->str() : std::string();
  };
  CHECK(refusal_of(body(0x81, 11, 1, 0x81)).find("11 names") != std::string::npos);
  CHECK(refusal_of(body(0x82, 1, 200, 0x82)).find("200") == std::string::npos);  // 201 bytes
  CHECK(!refusal_of(body(0x82, 1, 200, 0x82)).empty());
  CHECK(refusal_of(body(0x83, 10, 90, 0x83)).find("bytes") != std::string::npos);
  CHECK(broker.stats().refused_by_kind["register_over_limits"] == 4);
  CHECK(broker.stats().servers == 0);
  // Within the limits; one name points at another server's object: that one is not bound.
  CHECK(refusal_of(body(0x84, 3, 5, 0x84)).empty());
  CHECK(refusal_of(body(0x85, 1, 50, 0x84)).empty());
  CHECK(broker.stats().refused_by_kind["name_of_other_server"] == 1);
  const BrokerInfo info = broker_info(broker.frontend_endpoint());
  CHECK(info.names.size() == 3);
  broker.stop();
  t.join();
}

TEST_CASE("a log limiter lets a burst through per period and counts what it held back") {
  detail::LogLimiter limiter(std::chrono::hours(1), 3);
  uint64_t held = 99;
  for (int i = 0; i < 3; ++i) {
    CHECK(limiter.allow(held));
    CHECK(held == 0);
  }
  for (int i = 0; i < 1000; ++i) CHECK_FALSE(limiter.allow(held));
  detail::LogLimiter fast(std::chrono::milliseconds(1), 1);
  CHECK(fast.allow(held));
  CHECK_FALSE(fast.allow(held));
  CHECK_FALSE(fast.allow(held));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the next period: no event waits
  CHECK(fast.allow(held));
  CHECK(held == 2);  // "(2 more suppressed)"
}

TEST_CASE(
    "a client dropped for silence still gets the replies to its requests, from their server") {
  BrokerOptions o = RunningBroker::options();
  o.heartbeat.interval = std::chrono::milliseconds(100);
  // A 600 ms window: the lanes beat every round (~10 ms) and must outlive it on a loaded machine.
  o.heartbeat.liveness = 6;
  Broker broker(o);
  std::thread t([&] { broker.run(); });
  zmq::context_t ctx;
  Peer lane(ctx, broker.backend_endpoint(), true), rogue(ctx, broker.backend_endpoint(), true);
  Peer client(ctx, broker.frontend_endpoint(), true);
  register_lane(lane, 0x91);
  register_lane(rogue, 0x92);
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0x91, 1}), detail::u64_frame(3), text("x")));
  Multipart in = lane.next();
  REQUIRE(in.size() == 5);
  // The client never heartbeats (a raw one parked on a lock): the broker drops it. The lanes do.
  for (int i = 0; i < 200 && broker.stats().clients != 0; ++i) {
    lane.send(make(detail::header_frame(Command::heartbeat)));
    rogue.send(make(detail::header_frame(Command::heartbeat)));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(broker.stats().clients == 0);
  const std::string routing = in[1].to_string();
  rogue.send(make(detail::header_frame(Command::reply), text(routing), detail::u64_frame(3),
                  detail::error_reply(3, Errc::ok, "forged")));
  lane.send(make(detail::header_frame(Command::reply), std::move(in[1]), detail::u64_frame(3),
                 detail::error_reply(3, Errc::not_found, "granted at last")));
  CHECK(reply_code(client.next(), 3) == Errc::not_found);
  CHECK(refused(broker, "reply_unrouted", 1) == 1);
  broker.stop();
  t.join();
}

TEST_CASE(
    "a client's old connection expiring says nothing while it is here on a new one; its last "
    "connection's does") {
  BrokerOptions o = RunningBroker::options();
  o.heartbeat.interval = std::chrono::milliseconds(100);
  o.heartbeat.liveness = 15;  // a 1.5 s window; the live connection beats every round (~10 ms)
  RunningBroker b(o);
  zmq::context_t ctx;
  Peer lane(ctx, b.broker.backend_endpoint(), true);
  // One client (id 0xc1), its socket remade: the old connection goes silent, the new one lives.
  Peer old_conn(ctx, b.broker.frontend_endpoint(), true);
  Peer new_conn(ctx, b.broker.frontend_endpoint(), true);
  register_lane(lane, 0x93);
  const uint64_t client_id = 0xc1;
  auto beat = [&](Peer& p) {
    p.send(make(detail::header_frame(Command::heartbeat), detail::u64_frame(client_id)));
  };
  beat(old_conn);
  old_conn.send(make(detail::header_frame(Command::request),
                     detail::object_id_frame(ObjectId{0x93, 1}), detail::u64_frame(1), text("x")));
  Multipart in = lane.next();
  REQUIRE(in.size() == 5);
  beat(new_conn);
  // Counts the CLIENT_GONEs the lane hears while it heartbeats in ~10 ms rounds for `span` of
  // wall time, or until `until` holds; the new connection beats every round while `beating`.
  // Bounded by time, not rounds: on a loaded machine a round can take far longer than 10 ms, and
  // the new connection must never go a window without a beat.
  bool beating = true;
  auto last_beat = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration longest_gap{};  // said if the case fails: was it us?
  auto lane_hears_gone = [&](std::chrono::milliseconds span, auto until) {
    int gone = 0;
    const auto end = std::chrono::steady_clock::now() + span;
    while (std::chrono::steady_clock::now() < end && !until()) {
      if (beating) {
        beat(new_conn);
        const auto now = std::chrono::steady_clock::now();
        longest_gap = std::max(longest_gap, now - last_beat);
        last_beat = now;
      }
      lane.send(make(detail::header_frame(Command::heartbeat)));
      Multipart m;
      while (detail::recv_multipart(lane.s, m, true)) {
        if (m.size() == 2 && detail::parse_header(m[0]) == Command::client_gone) {
          CHECK(detail::parse_u64(m[1]) == client_id);
          ++gone;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return gone;
  };
  // The broker has both connections (the new one's first beat can still be on its way), then
  // the old connection expires (2 -> 1); then a full window more: nothing said.
  CHECK(lane_hears_gone(std::chrono::seconds(15), [&] { return b.broker.stats().clients == 2; }) ==
        0);
  REQUIRE(b.broker.stats().clients == 2);
  CHECK(lane_hears_gone(std::chrono::seconds(15), [&] { return b.broker.stats().clients < 2; }) ==
        0);
  INFO("the longest the test went between two beats of the live connection: "
       << std::chrono::duration_cast<std::chrono::milliseconds>(longest_gap).count() << " ms");
  REQUIRE(b.broker.stats().clients == 1);
  CHECK(lane_hears_gone(o.heartbeat.window() + std::chrono::milliseconds(200),
                        [] { return false; }) == 0);
  // The new connection goes: the client is gone, and the server is told.
  beating = false;
  new_conn.send(make(detail::header_frame(Command::disconnect)));
  int gone = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (gone == 0 && std::chrono::steady_clock::now() < end)
    gone = lane_hears_gone(std::chrono::milliseconds(10), [] { return false; });
  CHECK(gone == 1);
}

TEST_CASE("a client's unanswered requests are bounded in bytes; a reply makes room again") {
  BrokerOptions o = RunningBroker::options();
  o.max_client_bytes = 3000;
  RunningBroker b(o);
  zmq::context_t ctx;
  Peer lane(ctx, b.broker.backend_endpoint());
  Peer client(ctx, b.broker.frontend_endpoint());
  register_lane(lane, 0xb17e);
  const ObjectId id{0xb17e, 1};
  auto request = [&](uint64_t rid, size_t bytes) {
    client.send(make(detail::header_frame(Command::request), detail::object_id_frame(id),
                     detail::u64_frame(rid), text(std::string(bytes, 'b'))));
  };
  // 3 x 1,000 bytes fit; the fourth does not: overloaded, as not run (NO_ROUTE).
  for (uint64_t rid = 1; rid <= 3; ++rid) request(rid, 1000);
  std::vector<Multipart> taken;
  for (int i = 0; i < 3; ++i) {
    taken.push_back(lane.next());
    REQUIRE(taken.back().size() == 5);
  }
  request(4, 1000);
  Multipart refused = client.next();
  CHECK(detail::parse_header(refused[0]) == Command::no_route);
  CHECK(reply_code(refused, 4) == Errc::overloaded);
  // A resend of a request in flight takes its own place, and is routed.
  request(2, 1000);
  REQUIRE(lane.next().size() == 5);
  // The lane answers request 1: its bytes leave the count, and request 5 is routed.
  lane.send(make(detail::header_frame(Command::reply), std::move(taken[0][1]), detail::u64_frame(1),
                 detail::error_reply(1, Errc::not_found, "done")));
  CHECK(reply_code(client.next(), 1) == Errc::not_found);
  request(5, 1000);
  const Multipart fifth = lane.next();
  REQUIRE(fifth.size() == 5);
  CHECK(detail::parse_u64(fifth[3]) == 5);
  // Larger than the whole budget, with others unanswered: refused (alone, it would pass).
  request(6, 5000);
  CHECK(reply_code(client.next(), 6) == Errc::overloaded);
  // The connection count comes from libzmq's monitor events, read by the broker's own watch
  // thread: it can trail the messages on a loaded machine, so the test waits for it (bounded).
  BrokerStats st = b.broker.stats();
  for (int i = 0; i < 500 && st.connections != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    st = b.broker.stats();
  }
  CHECK(st.refused_by_kind.at("client_bytes") == 2);
  CHECK(st.connections == 2);  // the lane and the client
  CHECK(st.max_connections > 0);
}

TEST_CASE("connections past max_connections are closed as accepted; the count follows them") {
  BrokerOptions o = RunningBroker::options();
  // Three in all, the last of them (an eighth, at least one) for the server port alone: a lane
  // and a client fill the clients' share, whichever is accepted first.
  o.max_connections = 3;
  RunningBroker b(o);
  zmq::context_t ctx;
  Peer lane(ctx, b.broker.backend_endpoint());
  Peer client(ctx, b.broker.frontend_endpoint());
  register_lane(lane, 0xc0);
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0xc0, 1}), detail::u64_frame(1), text("a")));
  REQUIRE(lane.next().size() == 5);
  // The count comes from monitor events, which the broker's watch thread reads from the two
  // ports apart: the test lets it count the first two before the third is accepted.
  BrokerStats st = b.broker.stats();
  for (int i = 0; i < 500 && st.connections != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    st = b.broker.stats();
  }
  REQUIRE(st.connections == 2);
  {
    // A third peer: closed as it is accepted, and again each time it reconnects (a request it
    // got in before the close may still be routed: libzmq reads while the broker is told).
    Peer third(ctx, b.broker.frontend_endpoint());
    third.send(make(detail::header_frame(Command::request),
                    detail::object_id_frame(ObjectId{0xc0, 1}), detail::u64_frame(2), text("b")));
    (void)lane.next(std::chrono::milliseconds(300));
    st = b.broker.stats();
    for (int i = 0; i < 500 && st.refused_by_kind.count("connection_cap") == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      st = b.broker.stats();
    }
    CHECK(st.refused_by_kind.count("connection_cap") == 1);  // (the kind is there: counted)
    CHECK(st.connections <= 3);
  }
  // They left: the count goes back to two, and the first two are still served.
  st = b.broker.stats();
  for (int i = 0; i < 500 && st.connections != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    st = b.broker.stats();
  }
  CHECK(st.connections == 2);
  client.send(make(detail::header_frame(Command::request),
                   detail::object_id_frame(ObjectId{0xc0, 1}), detail::u64_frame(3), text("c")));
  const Multipart third_request = lane.next();
  REQUIRE(third_request.size() == 5);
  CHECK(detail::parse_u64(third_request[3]) == 3);
  // The clients' share is full (the third client was refused at two open), but a server's lane
  // still gets in: the last connection is the server port's.
  Peer second_lane(ctx, b.broker.backend_endpoint());
  register_lane(second_lane, 0xc1);
}
