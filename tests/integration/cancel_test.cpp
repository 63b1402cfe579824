// Cancelling a call (Future::cancel, docs/WIRE.md "Cancelling"), with a real broker and server
// process: a call waiting behind a slow one on the server's only lane, then cancelled, is never
// run (the server's count says so) and its caller gets cancelled, through the broker and on the
// direct path; a resent copy of a cancelled request does not run it; cancelling an answered call
// changes nothing; the call that was running finishes. Behaviour only: nothing here is timed.
#include <doctest/doctest.h>

#include <zmq.hpp>

#include <atomic>
#include <optional>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "../support/sanitizers.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;
using patro::test::wait_for_file;
namespace d = patro::detail;

namespace {

// The test server serves 3: a Slow object, add(ms) sleeps ms then counts one; count(). One lane,
// so a slow call holds every other request behind it.
struct Cluster {
  TempDir dir;
  BrokerProcess broker{dir};
  std::string conf;
  std::unique_ptr<Process> server;

  Cluster() {
    conf = dir.file("server.conf");
    server = std::make_unique<Process>(
        std::vector<std::string>{program("PATRO_TEST_SERVER"), conf, "--broker", broker.back,
                                 "--heartbeat-ms", "100", "--threads", "1"});
    REQUIRE(wait_for_file(conf, 20s));
  }
  ~Cluster() {
    if (server) server->stop();
    broker.proc->stop();
  }
  std::vector<patro::Proxy> connect(patro::Route route) const {
    patro::ClientOptions o;
    o.heartbeat.interval = 100ms;
    o.call_timeout = 60s;
    o.route = route;
    return patro::get_proxies(conf, o);
  }
};

Errc error_of(const patro::Future<patro::Value>& f) {
  try {
    (void)f.get();
  } catch (const patro::Error& e) {
    return e.code();
  }
  return Errc::ok;
}

zmq::message_t add_request(const patro::ObjectId& id, uint64_t client, uint64_t rid) {
  flatbuffers::FlatBufferBuilder fb;
  auto args = d::encode_values(fb, patro::ValueArray{patro::Value(0)}, {});
  auto name = fb.CreateString("add");
  patro::wire::RequestBuilder b(fb);
  b.add_request_id(rid);
  b.add_client_id(client);
  b.add_server(id.server);
  b.add_object(id.object);
  b.add_op(patro::wire::Op::Call);
  b.add_name(name);
  b.add_args(args);
  fb.Finish(b.Finish(), patro::wire::RequestIdentifier());
  return zmq::message_t(fb.GetBufferPointer(), fb.GetSize());
}

}  // namespace

TEST_CASE("a call cancelled before it ran never runs; its caller gets cancelled") {
  Cluster c;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(static_cast<int>(route));
    auto ps = c.connect(route);
    patro::Proxy slow = ps.at(3);
    const int64_t base = slow.call("count").as<int64_t>();  // the route is up (direct: live)

    const int rounds = static_cast<int>(patro::test::scaled(3, 3));
    for (int round = 0; round < rounds; ++round) {
      const int64_t before = slow.call("count").as<int64_t>();
      auto running = slow.async_call("add", 400);  // holds the server's only lane
      auto waiting = slow.async_call("add", 0);    // behind it, on the lane's socket
      std::this_thread::sleep_for(50ms);           // sent: the server has it (or will)
      CHECK(waiting.cancel());
      CHECK(waiting.ready());
      CHECK(error_of(waiting) == Errc::cancelled);
      CHECK_FALSE(waiting.cancel());  // cancelled already: nothing changes
      // The running call finishes; the cancelled one, behind it, never ran.
      CHECK(running.get() == before + 1);
      CHECK(slow.call("count") == before + 1);
      // Cancelling an answered call changes nothing.
      CHECK_FALSE(running.cancel());
      CHECK(running.get() == before + 1);
    }
    // A then-callback of a cancelled call runs, with the error.
    auto running = slow.async_call("add", 200);
    auto waiting = slow.async_call("add", 0);
    std::atomic<int> called{0};
    waiting.then([&](const patro::Future<patro::Value>& f) {
      if (error_of(f) == Errc::cancelled) ++called;
    });
    CHECK(waiting.cancel());
    for (int i = 0; i < 500 && called.load() == 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(called.load() == 1);
    CHECK(running.get().as<int64_t>() == base + rounds + 1);
    CHECK(slow.call("count").as<int64_t>() == base + rounds + 1);
    // The connection goes on as before.
    CHECK(slow.call("add", 0).as<int64_t>() == base + rounds + 2);
    (void)base;
  }
}

TEST_CASE("a CANCEL recorded before its request (or a resent copy) arrives keeps it from running") {
  Cluster c;
  const patro::ObjectId slow_id = patro::Config::from_file(c.conf).objects().at(3).id;
  patro::Proxy slow = c.connect(patro::Route::broker).at(3);
  const int64_t before = slow.call("count").as<int64_t>();

  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 5000);
  s.connect(c.broker.front);
  auto send = [&](d::Multipart frames) { (void)d::send_multipart(s, frames, false); };
  auto reply_error = [&](uint64_t rid) -> std::optional<Errc> {
    for (int i = 0; i < 50; ++i) {
      d::Multipart m;
      if (!d::recv_multipart(s, m)) break;
      if (m.size() != 3 || d::parse_header(m[0]) != d::Command::reply) continue;
      if (d::parse_u64(m[1]) != rid) continue;
      patro::Limits limits;
      d::AlignedScratch scratch;
      const auto* r = d::verified_reply(m[2], limits, scratch);
      REQUIRE(r != nullptr);
      return static_cast<Errc>(r->error_code());
    }
    FAIL_CHECK("no reply to request " << rid);
    return std::nullopt;
  };
  auto cancel = [&](uint64_t client, uint64_t rid) {
    d::Multipart f;
    f.push_back(d::header_frame(d::Command::cancel));
    f.push_back(d::object_id_frame(slow_id));
    f.push_back(d::u64_frame(rid));
    f.push_back(d::u64_frame(client));
    send(std::move(f));
  };
  auto request = [&](uint64_t client, uint64_t rid, bool resent) {
    d::Multipart f;
    f.push_back(d::header_frame(d::Command::request));
    f.push_back(d::object_id_frame(slow_id));
    f.push_back(d::u64_frame(rid));
    f.push_back(add_request(slow_id, client, rid));
    if (resent) f.push_back(d::u64_frame(2));
    send(std::move(f));
  };
  constexpr uint64_t kClient = 0x5eed5eed5eedull;
  cancel(kClient, 7);
  request(kClient, 7, false);
  CHECK(reply_error(7) == Errc::cancelled);
  request(kClient, 7, true);  // a resent copy
  CHECK(reply_error(7) == Errc::cancelled);
  // A request that ran is left alone by a later CANCEL: its resent copy gets its reply.
  request(kClient, 8, false);
  CHECK(reply_error(8) == Errc::ok);
  cancel(kClient, 8);
  request(kClient, 8, true);
  CHECK(reply_error(8) == Errc::ok);
  // Malformed CANCELs and one for an unknown server are dropped; nothing else changes.
  send([] {
    d::Multipart f;
    f.push_back(d::header_frame(d::Command::cancel));
    f.push_back(zmq::message_t("short", 5));
    return f;
  }());
  send([&] {
    d::Multipart f;
    f.push_back(d::header_frame(d::Command::cancel));
    f.push_back(d::object_id_frame(patro::ObjectId{slow_id.server + 1, 1}));
    f.push_back(d::u64_frame(9));
    f.push_back(d::u64_frame(kClient));
    return f;
  }());
  CHECK(slow.call("count").as<int64_t>() == before + 1);  // request 8 alone ran
}
