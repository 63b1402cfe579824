// 1,000 clients waiting on one lock with 4 worker threads: every waiter is granted, in FIFO order,
// and a reader of another object sees no stall while they wait. The waiters are raw ZeroMQ
// DEALER sockets speaking the wire protocol (1,000 full client connections would cost 2,000
// threads); each has its own client id, so each is its own monitor.
#include <doctest/doctest.h>

#include <zmq.hpp>

#include <thread>

#include <patro/patro.hpp>

#include "lock_table.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
namespace d = patro::detail;

namespace {

struct RawMonitor {
  zmq::socket_t s;
  uint64_t client_id;
  uint64_t next_request = 1;

  RawMonitor(zmq::context_t& ctx, const std::string& endpoint, uint64_t id)
      : s(ctx, zmq::socket_type::dealer), client_id(id) {
    s.set(zmq::sockopt::linger, 0);
    s.connect(endpoint);
  }

  uint64_t send(const patro::ObjectId& obj, patro::wire::Op op, const patro::ValueArray& args) {
    flatbuffers::FlatBufferBuilder fb;
    const d::RefWriter no_refs = [](flatbuffers::FlatBufferBuilder&, const patro::Reference&) {
      return flatbuffers::Offset<patro::wire::Ref>();
    };
    auto a = d::encode_values(fb, args, no_refs);
    const uint64_t rid = next_request++;
    patro::wire::RequestBuilder b(fb);
    b.add_request_id(rid);
    b.add_client_id(client_id);
    b.add_server(obj.server);
    b.add_object(obj.object);
    b.add_op(op);
    b.add_args(a);
    fb.Finish(b.Finish(), patro::wire::RequestIdentifier());
    d::Multipart m;
    m.push_back(d::header_frame(d::Command::request));
    m.push_back(d::object_id_frame(obj));
    m.push_back(d::u64_frame(rid));
    m.push_back(d::body_frame(fb));
    REQUIRE(d::send_multipart(s, m, false));
    return rid;
  }

  // The results of the reply to rid (skipping heartbeats), or nothing within the timeout.
  std::optional<patro::ValueArray> reply(uint64_t rid, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    d::Multipart m;
    d::AlignedScratch scratch;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!d::poll_in(s, 50ms)) continue;
      while (d::recv_multipart(s, m, true)) {
        if (d::parse_header(m[0]) != d::Command::reply || m.size() != 3) continue;
        if (d::parse_u64(m[1]) != rid) continue;
        const auto* r = d::verified_reply(m[2], patro::Limits{}, scratch);
        REQUIRE(r != nullptr);
        const d::RefReader no_refs = [](const patro::wire::Ref&) { return patro::Value(); };
        return d::decode_values(r->results(), no_refs);
      }
    }
    return std::nullopt;
  }
};

size_t lock_waiters(const std::string& server) {
  size_t n = 0;
  for (const auto& l : d::LockTable::inspect(server)) n += l.lock_waiters;
  return n;
}

}  // namespace

TEST_CASE("1,000 waiters on one lock with 4 worker threads: FIFO grants, no stall for others") {
  constexpr int kWaiters = 1000;
  patro::ServerOptions so;
  so.threads = 4;
  so.name = "waiters-test";
  so.heartbeat.interval = 200ms;
  so.heartbeat.liveness = 10;
  patro::Hash locked{{"x", 1}}, other{{"y", 2}};
  auto cfg = patro::patronize(so, locked, other);
  const patro::ObjectId obj = cfg.objects().at(0).id;
  zmq::context_t ctx;
  RawMonitor holder(ctx, cfg.brokers().at(0), 1);
  auto r = holder.reply(holder.send(obj, patro::wire::Op::Lock, {patro::Value(), false}), 10s);
  REQUIRE(r);
  REQUIRE((*r)[0] == true);

  std::vector<std::unique_ptr<RawMonitor>> waiters;
  std::vector<uint64_t> requests;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.push_back(std::make_unique<RawMonitor>(ctx, cfg.brokers().at(0), 1000 + i));
    requests.push_back(waiters.back()->send(obj, patro::wire::Op::Lock, {patro::Value(), false}));
    // The order of arrival is the order of the test: wait until this one is parked (bounded).
    for (int k = 0; k < 2000 && lock_waiters("waiters-test") < static_cast<size_t>(i + 1); ++k)
      std::this_thread::sleep_for(1ms);
    REQUIRE(lock_waiters("waiters-test") == static_cast<size_t>(i + 1));
  }

  // All 1,000 are parked; none occupies a worker thread, so another object reads at once.
  patro::ClientOptions co;
  co.call_timeout = 5s;
  auto reader = patro::get_proxies(cfg, co).at(1);
  for (int i = 0; i < 200; ++i) REQUIRE(reader["y"].get() == 2);

  // Each unlock grants the next waiter in arrival order; the granted one unlocks in turn.
  uint64_t last_token = (*r)[3].as<uint64_t>();
  auto u = holder.reply(holder.send(obj, patro::wire::Op::Unlock, {patro::Value(1)}), 10s);
  REQUIRE(u);
  for (int i = 0; i < kWaiters; ++i) {
    auto g = waiters[i]->reply(requests[i], 10s);
    REQUIRE_MESSAGE(g, "waiter " << i << " was not granted next");
    CHECK((*g)[0] == true);
    const uint64_t token = (*g)[3].as<uint64_t>();
    CHECK(token > last_token);
    last_token = token;
    auto rel =
        waiters[i]->reply(waiters[i]->send(obj, patro::wire::Op::Unlock, {patro::Value(1)}), 10s);
    REQUIRE(rel);
    CHECK((*rel)[0] == true);
  }
  CHECK(lock_waiters("waiters-test") == 0);
}
