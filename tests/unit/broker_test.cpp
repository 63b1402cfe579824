// The broker's routing, driven with raw sockets playing a server lane and a client: a request is
// routed by its object id to the lane of the server that owns it and the reply back to the
// client; an unknown or departed server gets a definite server_unavailable; frames it cannot
// parse are dropped and counted, and the broker goes on. (patro::Broker owns its ZeroMQ context,
// so the peers reach it over loopback TCP rather than inproc.)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

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

TEST_CASE("a reply sent after the broker restarted reaches the client that asked, and no other") {
  // The lane took the request from the broker's first run; the reply leaves after the restart,
  // routed by the client's routing id at the first run. ZeroMQ's generated ids are not unique
  // across broker processes (libzmq draws them from rand() unseeded, in connection order), so
  // Patro's sockets carry ids of their own (detail::make_socket): the reply reaches the asker,
  // and a client that reached the restarted broker first does not get it.
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
  lane.send(make(detail::header_frame(Command::reply), std::move(in[1]), detail::u64_frame(7),
                 detail::error_reply(7, Errc::not_found, "the answer")));
  CHECK(reply_code(asker.next(), 7) == Errc::not_found);
  CHECK(other.next(std::chrono::milliseconds(300)).empty());
}
