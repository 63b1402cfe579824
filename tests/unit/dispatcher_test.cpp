// The server's request path without a socket: requests built with the FlatBuffers builders, run by
// a lane's Dispatcher (and its Executor) against an object table in memory, and their replies
// read back. Covers the stages of dispatcher.hpp — the reply cache, the deadline, the handler
// table — for single requests and the calls of a oneway batch alike.
#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "dispatcher.hpp"
#include "patro/object.hpp"
#include "routing.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::ObjectId;
using patro::Path;
using patro::Value;
using patro::ValueArray;
using patro::detail::AlignedScratch;
using patro::detail::DeferredReply;
using patro::detail::Dispatched;
using patro::detail::Dispatcher;
using patro::detail::Executor;
using patro::detail::LockLimits;
using patro::detail::LockTable;
using patro::detail::ObjectTable;
using patro::detail::ReplyCache;
using patro::detail::Taken;
namespace wire = patro::wire;

namespace {

constexpr uint64_t kServer = 0x5e11e5;
constexpr uint64_t kClient = 77;

/// One call of a request, as a client would send it.
struct Call {
  uint64_t request_id = 1;
  ObjectId object{};
  wire::Op op = wire::Op::Get;
  Path path{};
  ValueArray args{};
  std::string name{};
  uint32_t timeout_ms = 0;
  uint64_t client = kClient;
  uint64_t fence_token = 0;
};

flatbuffers::Offset<wire::Request> build(flatbuffers::FlatBufferBuilder& fb, const Call& c) {
  const patro::detail::RefWriter no_refs;  // the tests send plain values only
  auto path = patro::detail::encode_path(fb, c.path);
  auto args = patro::detail::encode_values(fb, c.args, no_refs);
  auto name = c.name.empty() ? 0 : fb.CreateString(c.name);
  wire::RequestBuilder b(fb);
  b.add_request_id(c.request_id);
  b.add_client_id(c.client);
  b.add_timeout_ms(c.timeout_ms);
  b.add_server(c.object.server);
  b.add_object(c.object.object);
  b.add_op(c.op);
  b.add_path(path);
  if (!c.name.empty()) b.add_name(name);
  b.add_args(args);
  b.add_fence_token(c.fence_token);
  return b.Finish();
}

zmq::message_t request_body(const Call& c) {
  flatbuffers::FlatBufferBuilder fb;
  fb.Finish(build(fb, c), wire::RequestIdentifier());
  return patro::detail::body_frame(fb);
}

zmq::message_t batch_body(const std::vector<Call>& calls) {
  flatbuffers::FlatBufferBuilder fb;
  std::vector<flatbuffers::Offset<wire::Request>> rs;
  for (const Call& c : calls) rs.push_back(build(fb, c));
  auto v = fb.CreateVector(rs);
  fb.Finish(wire::CreateBatch(fb, v), wire::BatchIdentifier());
  return patro::detail::body_frame(fb);
}

/// A reply as the client reads it.
struct Reply {
  uint64_t request_id = 0;
  bool ok = false;
  Errc code = Errc::ok;
  std::string text;
  ValueArray results;
};

Reply read(const zmq::message_t& body) {
  AlignedScratch scratch;
  const wire::Reply* r = patro::detail::verified_reply(body, patro::Limits{}, scratch);
  REQUIRE(r != nullptr);
  Reply out;
  out.request_id = r->request_id();
  out.ok = r->status() == wire::Status::Ok;
  out.code = static_cast<Errc>(r->error_code());
  out.text = r->error_text() ? r->error_text()->str() : std::string();
  const patro::detail::RefReader refs = [](const wire::Ref& ref) {
    return Value(patro::Reference{
        nullptr, nullptr, ObjectId{ref.server(), ref.object()}, {}, "", "", {}, false});
  };
  out.results = patro::detail::decode_values(r->results(), refs);
  return out;
}

/// A lane's dispatcher over served objects of its own: a hash, a callable and a counter.
// Server options with these limits.
patro::ServerOptions with_limits(const patro::Limits& limits) {
  patro::ServerOptions o;
  o.limits = limits;
  return o;
}

struct TestLane {
  patro::ServerOptions options;
  ObjectTable objects{kServer, options.reference_lease};
  ReplyCache cache{options.limits};
  LockTable locks{"dispatcher-test-" + std::to_string(::getpid()), false, LockLimits{}};
  Dispatcher dispatcher{objects, options, locks, cache, {}, {}};
  AlignedScratch scratch;
  ObjectId hash, code, scalar;

  explicit TestLane(const patro::Limits& limits = {}) : options(with_limits(limits)) {
    hash = objects.pin(std::make_shared<patro::detail::HashNode>());
    patro::Code twice = [](int64_t x) { return 2 * x; };
    code = objects.pin(twice.node());
    scalar = objects.pin(std::make_shared<patro::detail::ScalarNode>());
  }

  struct Outcome {
    Dispatched how;
    std::optional<Reply> reply;
    std::optional<std::string> reroute;
  };

  Outcome take(const zmq::message_t& body, uint64_t request_id, std::vector<DeferredReply>& owed,
               std::chrono::nanoseconds age = 0ns, std::string_view routing = "route") {
    zmq::message_t reply;
    std::optional<std::string> reroute;
    const Dispatched d = dispatcher.dispatch_body(request_id, body, Taken{routing, age, nullptr},
                                                  scratch, reply, reroute, owed);
    Outcome o{d, std::nullopt, reroute};
    if (d == Dispatched::reply) o.reply = read(reply);
    return o;
  }
  Reply send(const Call& c, std::chrono::nanoseconds age = 0ns) {
    std::vector<DeferredReply> owed;
    const Outcome o = take(request_body(c), c.request_id, owed, age);
    REQUIRE(o.how == Dispatched::reply);
    CHECK(owed.empty());
    return *o.reply;
  }
};

}  // namespace

TEST_CASE("every operation of the op table has exactly one handler, and no other op has one") {
  size_t known = 0;
  for (int op = 0; op < 256; ++op) {
    const auto o = static_cast<wire::Op>(op);
    CHECK(Executor::handlers_of(o) == (patro::detail::op_info(o).known() ? 1u : 0u));
    known += patro::detail::op_info(o).known() ? 1 : 0;
  }
  CHECK(known == 31);
}

TEST_CASE("set then get an element; a missing one is undef") {
  TestLane lane;
  Reply r = lane.send({.request_id = 1,
                       .object = lane.hash,
                       .op = wire::Op::Set,
                       .path = {std::string("a")},
                       .args = {Value(5)}});
  CHECK(r.ok);
  CHECK(r.request_id == 1);
  r = lane.send(
      {.request_id = 2, .object = lane.hash, .op = wire::Op::Get, .path = {std::string("a")}});
  REQUIRE(r.ok);
  REQUIRE(r.results.size() == 1);
  CHECK(r.results[0].as<int64_t>() == 5);
  r = lane.send({.request_id = 3,
                 .object = lane.hash,
                 .op = wire::Op::Get,
                 .path = {std::string("missing")}});
  REQUIRE(r.ok);
  REQUIRE(r.results.size() == 1);
  CHECK(r.results[0].is_null());
  r = lane.send({.request_id = 4, .object = lane.hash, .op = wire::Op::Size});
  REQUIRE(r.ok);
  CHECK(r.results.at(0).as<int64_t>() == 1);
}

TEST_CASE("call runs a served callable; errors name what was wrong") {
  TestLane lane;
  Reply r =
      lane.send({.request_id = 1, .object = lane.code, .op = wire::Op::Call, .args = {Value(21)}});
  REQUIRE(r.ok);
  CHECK(r.results.at(0).as<int64_t>() == 42);

  SUBCASE("an unknown object") {
    r = lane.send({.request_id = 2, .object = ObjectId{kServer, 999999}, .op = wire::Op::Get});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::unknown_object);
  }
  SUBCASE("an unknown method") {
    r = lane.send({.request_id = 2, .object = lane.code, .op = wire::Op::Call, .name = "nope"});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::unknown_method);
  }
  SUBCASE("a hash is not callable") {
    r = lane.send({.request_id = 2, .object = lane.hash, .op = wire::Op::Call});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::not_callable);
  }
  SUBCASE("an argument of the wrong type") {
    r = lane.send({.request_id = 2,
                   .object = lane.code,
                   .op = wire::Op::Call,
                   .args = {Value("not a number")}});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::type_mismatch);
  }
  SUBCASE("an index on a hash") {
    r = lane.send(
        {.request_id = 2, .object = lane.hash, .op = wire::Op::Get, .path = {int64_t{3}}});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::type_mismatch);
  }
  SUBCASE("push onto a hash") {
    r = lane.send({.request_id = 2, .object = lane.hash, .op = wire::Op::Push, .args = {Value(1)}});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::type_mismatch);
  }
  SUBCASE("an operation this server does not know") {
    r = lane.send({.request_id = 2, .object = lane.hash, .op = static_cast<wire::Op>(200)});
    CHECK_FALSE(r.ok);
    CHECK(r.code == Errc::unsupported);
  }
  SUBCASE("a body that is not a request") {
    std::vector<DeferredReply> owed;
    const std::string junk = "definitely not a flatbuffer";
    const auto o = lane.take(zmq::message_t(junk.data(), junk.size()), 9, owed);
    REQUIRE(o.reply);
    CHECK(o.reply->request_id == 9);
    CHECK(o.reply->code == Errc::bad_message);
  }
}

TEST_CASE("a resent request id is answered from the reply cache, not run again") {
  TestLane lane;
  const Call add{.request_id = 7, .object = lane.scalar, .op = wire::Op::Add, .args = {Value(1)}};
  Reply first = lane.send(add);
  REQUIRE(first.ok);
  CHECK(first.results.at(0).as<int64_t>() == 1);
  Reply again = lane.send(add);
  REQUIRE(again.ok);
  CHECK(again.results.at(0).as<int64_t>() == 1);  // the first answer, not a second add
  CHECK(lane.cache.hits() == 1);
  const Reply value = lane.send({.request_id = 8, .object = lane.scalar, .op = wire::Op::Get});
  CHECK(value.results.at(0).as<int64_t>() == 1);
  // Another client's request 7 is its own.
  Call other = add;
  other.client = kClient + 1;
  CHECK(lane.send(other).results.at(0).as<int64_t>() == 2);
}

TEST_CASE("a resend whose reply the cache dropped is answered outcome_unknown, not run again") {
  // A byte bound smaller than any reply: each is sent, and not kept.
  patro::Limits tiny;
  tiny.reply_cache_bytes = 1;
  TestLane lane(tiny);
  const Call add{.request_id = 9, .object = lane.scalar, .op = wire::Op::Add, .args = {Value(5)}};
  REQUIRE(lane.send(add).ok);
  CHECK(lane.cache.bytes() == 0);
  const Reply again = lane.send(add);
  CHECK_FALSE(again.ok);
  CHECK(again.code == Errc::outcome_unknown);
  CHECK(again.text.find("not run again") != std::string::npos);
  const Reply value = lane.send({.request_id = 10, .object = lane.scalar, .op = wire::Op::Get});
  CHECK(value.results.at(0).as<int64_t>() == 5);  // added once
}

TEST_CASE("a request whose deadline passed before a lane took it is not run") {
  TestLane lane;
  const Reply r = lane.send({.request_id = 1,
                             .object = lane.scalar,
                             .op = wire::Op::Add,
                             .args = {Value(1)},
                             .timeout_ms = 50},
                            100ms);
  CHECK_FALSE(r.ok);
  CHECK(r.code == Errc::timeout);
  CHECK(lane.cache.expired() == 1);
  const Reply value = lane.send({.request_id = 2, .object = lane.scalar, .op = wire::Op::Get});
  CHECK(value.results.at(0).is_null());  // never added to
}

TEST_CASE("a oneway batch runs its calls in order through the same stages, acknowledged once") {
  TestLane lane;
  const std::vector<Call> calls = {
      {.request_id = 11, .object = lane.scalar, .op = wire::Op::Add, .args = {Value(1)}},
      {.request_id = 12, .object = lane.scalar, .op = wire::Op::Lock},  // never oneway
      {.request_id = 13,
       .object = ObjectId{kServer, 424242},
       .op = wire::Op::Set,
       .args = {Value(1)}},
      {.request_id = 14, .object = lane.scalar, .op = wire::Op::Add, .args = {Value(10)}},
  };
  const zmq::message_t body = batch_body(calls);
  std::vector<DeferredReply> owed;
  auto o = lane.take(body, 100, owed);
  REQUIRE(o.reply);
  CHECK(o.reply->ok);
  CHECK(o.reply->request_id == 100);
  REQUIRE(o.reply->results.size() == 3);
  CHECK(o.reply->results[0].as<int64_t>() == 4);  // calls run
  CHECK(o.reply->results[1].as<int64_t>() == 2);  // calls failed
  CHECK(o.reply->results[2].as<std::string>().find("a lock cannot be a oneway call") !=
        std::string::npos);
  CHECK(owed.empty());
  CHECK(lane.send({.request_id = 1, .object = lane.scalar, .op = wire::Op::Get})
            .results.at(0)
            .as<int64_t>() == 11);

  SUBCASE("a resent batch is answered from the reply cache, its calls not run again") {
    zmq::message_t copy(body.data(), body.size());
    o = lane.take(copy, 100, owed);
    REQUIRE(o.reply);
    CHECK(o.reply->results.at(0).as<int64_t>() == 4);
    CHECK(lane.send({.request_id = 2, .object = lane.scalar, .op = wire::Op::Get})
              .results.at(0)
              .as<int64_t>() == 11);
  }
  SUBCASE("calls whose deadline passed are not run, and count as failed") {
    const zmq::message_t late = batch_body({
        {.request_id = 21,
         .object = lane.scalar,
         .op = wire::Op::Add,
         .args = {Value(100)},
         .timeout_ms = 10},
        {.request_id = 22,
         .object = lane.scalar,
         .op = wire::Op::Add,
         .args = {Value(1000)},
         .timeout_ms = 60'000},
    });
    o = lane.take(late, 101, owed, 50ms);
    REQUIRE(o.reply);
    CHECK(o.reply->results.at(0).as<int64_t>() == 2);
    CHECK(o.reply->results.at(1).as<int64_t>() == 1);
    CHECK(o.reply->results.at(2).as<std::string>().rfind("timeout:", 0) == 0);
    CHECK(lane.cache.expired() == 1);
    CHECK(lane.send({.request_id = 3, .object = lane.scalar, .op = wire::Op::Get})
              .results.at(0)
              .as<int64_t>() == 1011);
  }
}

TEST_CASE("a lock operation parks its caller; the unlock owes it the grant") {
  TestLane lane;
  std::vector<DeferredReply> owed;
  const Call lock1{.request_id = 1, .object = lane.hash, .op = wire::Op::Lock, .client = 1};
  auto o = lane.take(request_body(lock1), 1, owed);
  REQUIRE(o.reply);
  REQUIRE(o.reply->ok);
  CHECK(o.reply->results.at(0).as<bool>());  // granted

  const Call lock2{.request_id = 1, .object = lane.hash, .op = wire::Op::Lock, .client = 2};
  o = lane.take(request_body(lock2), 1, owed);
  CHECK(o.how == Dispatched::parked);
  CHECK(owed.empty());

  const Call info{.request_id = 2, .object = lane.hash, .op = wire::Op::LockInfo, .client = 1};
  o = lane.take(request_body(info), 2, owed);
  REQUIRE(o.reply);
  CHECK(o.reply->results.at(0).as<int64_t>() == 1);  // the holder
  CHECK(o.reply->results.at(2).as<int64_t>() == 1);  // one waits for the lock

  const Call unlock{.request_id = 3, .object = lane.hash, .op = wire::Op::Unlock, .client = 1};
  o = lane.take(request_body(unlock), 3, owed);
  REQUIRE(o.reply);
  CHECK(o.reply->ok);
  REQUIRE(owed.size() == 1);
  CHECK(owed[0].client_id == 2);
  CHECK(owed[0].request_id == 1);
  CHECK(owed[0].outcome.ok);

  SUBCASE("a lock on an object the server does not have") {
    const Call bad{.request_id = 4,
                   .object = ObjectId{kServer, 31337},
                   .op = wire::Op::LockState,
                   .client = 1};
    o = lane.take(request_body(bad), 4, owed);
    REQUIRE(o.reply);
    CHECK(o.reply->code == Errc::unknown_object);
  }
}

TEST_CASE("a client whose routing id starts as a marked routing is marked as through its broker") {
  using namespace patro::detail;
  const std::string id(
      "\xff"
      "D\x00\x01xyz",
      7);
  CHECK(needs_marking(0, id));
  const std::string r = broker_routing(0, id);
  CHECK_FALSE(direct_lane(r));  // never read as another lane's direct client
  CHECK(routing_broker(r) == 0u);
  CHECK(broker_peer(r) == id);
  CHECK_FALSE(needs_marking(0, "pclient"));
  CHECK(broker_routing(0, "pclient") == "pclient");
  CHECK(routing_broker(broker_routing(2, "pclient")) == 2u);
}

TEST_CASE("a mutating call with a fencing token older than the newest grant is refused") {
  TestLane lane;
  std::vector<DeferredReply> owed;
  const Call lock{.request_id = 1, .object = lane.scalar, .op = wire::Op::Lock, .client = 1};
  auto o = lane.take(request_body(lock), 1, owed);
  REQUIRE(o.reply);
  REQUIRE(o.reply->ok);
  const int64_t token = o.reply->results.at(3).as<int64_t>();
  REQUIRE(token > 0);
  Reply r = lane.send({.request_id = 2,
                       .object = lane.scalar,
                       .op = wire::Op::Set,
                       .args = {Value(1)},
                       .client = 1,
                       .fence_token = static_cast<uint64_t>(token)});
  CHECK(r.ok);
  r = lane.send({.request_id = 3,
                 .object = lane.scalar,
                 .op = wire::Op::Set,
                 .args = {Value(2)},
                 .client = 1,
                 .fence_token = static_cast<uint64_t>(token - 1)});
  CHECK_FALSE(r.ok);
  CHECK(r.code == Errc::fenced);
  // A read is not fenced.
  r = lane.send({.request_id = 4,
                 .object = lane.scalar,
                 .op = wire::Op::Get,
                 .client = 1,
                 .fence_token = static_cast<uint64_t>(token - 1)});
  REQUIRE(r.ok);
  CHECK(r.results.at(0).as<int64_t>() == 1);
}

TEST_CASE("a release is checked before the object is looked up, and may name a freed one") {
  TestLane lane;
  Reply r = lane.send({.request_id = 1,
                       .object = ObjectId{kServer, 5555},
                       .op = wire::Op::Release,
                       .args = {Value(1)}});
  CHECK(r.ok);
  r = lane.send({.request_id = 2, .object = ObjectId{kServer, 5555}, .op = wire::Op::Release});
  CHECK_FALSE(r.ok);
  CHECK(r.code == Errc::invalid_argument);
}

TEST_CASE("a callback object's passes: released under the table's pass key, freed after all") {
  TestLane lane;
  const auto later = [](int seconds) {
    return ObjectTable::Clock::now() + std::chrono::seconds(seconds);
  };
  patro::Code cb = [](int64_t x) { return x; };
  const ObjectId id = lane.objects.serve(cb.node());
  CHECK(lane.objects.serve(cb.node()) == id);  // served again: the same id
  // Served but never passed: never collected.
  CHECK(lane.objects.collect(later(3600)) == 0);
  const uint64_t key = lane.objects.count_pass(id.object);
  REQUIRE(key != 0);
  CHECK(lane.objects.count_pass(id.object) == key);       // a second pass, before any release
  CHECK(lane.objects.count_pass(12345) == 0);             // not served: nothing counted
  CHECK(lane.objects.count_pass(lane.hash.object) == 0);  // pinned: never counted
  const auto release = [&](uint64_t request_id, ValueArray args) {
    return lane.send(
        {.request_id = request_id, .object = id, .op = wire::Op::Release, .args = std::move(args)});
  };
  // A wrong key, and a plain release by a client never sent a reference: ignored.
  CHECK(release(1, {Value(2), Value(static_cast<int64_t>(key + 1))}).ok);
  CHECK(release(2, {Value(2)}).ok);
  CHECK(lane.objects.collect(later(3600)) == 0);
  // One pass released: the other still holds it.
  CHECK(release(3, {Value(1), Value(static_cast<int64_t>(key))}).ok);
  CHECK(lane.objects.collect(later(3600)) == 0);
  // Passed again while idle would be: a third pass, then both released.
  CHECK(lane.objects.count_pass(id.object) == key);
  CHECK(release(4, {Value(2), Value(static_cast<int64_t>(key))}).ok);
  CHECK(lane.objects.find(id) != nullptr);  // within its lease
  CHECK(lane.objects.collect(later(3600)) == 1);
  CHECK(lane.objects.find(id) == nullptr);
  // A malformed key is refused as any malformed release.
  CHECK_FALSE(release(5, {Value(1), Value("key")}).ok);

  // Every pass released, then served again before the lease ran out (a new pass on its way): it
  // is kept until that pass is counted and released.
  patro::Code other = [](int64_t x) { return x; };
  const ObjectId again = lane.objects.serve(other.node());
  CHECK(lane.objects.count_pass(again.object) == key);
  CHECK(lane.send({.request_id = 6,
                   .object = again,
                   .op = wire::Op::Release,
                   .args = {Value(1), Value(static_cast<int64_t>(key))}})
            .ok);
  CHECK(lane.objects.serve(other.node()) == again);
  CHECK(lane.objects.collect(later(3600)) == 0);
  CHECK(lane.objects.count_pass(again.object) == key);
  CHECK(lane.send({.request_id = 7,
                   .object = again,
                   .op = wire::Op::Release,
                   .args = {Value(1), Value(static_cast<int64_t>(key))}})
            .ok);
  CHECK(lane.objects.collect(later(7200)) == 1);
}

TEST_CASE("rights per key: a limited client is refused before its call runs, naming op and name") {
  TestLane lane;
  const ObjectId hidden = lane.objects.pin(std::make_shared<patro::detail::HashNode>());
  patro::detail::ClientRights rights(
      {{lane.hash.object, {"kv"}}, {lane.scalar.object, {"jobs"}}, {hidden.object, {"secret"}}},
      lane.objects);
  Dispatcher dispatcher{lane.objects, lane.options, lane.locks, lane.cache, {}, {}, &rights};
  const std::string key = patro::curve_keypair().public_key;
  REQUIRE(rights.set_key(key, "names=kv,job* read-only"));
  CHECK_FALSE(rights.set_key(key, "read-write"));  // does not parse: the rights in force stay
  REQUIRE(rights.any());
  rights.bind("route", kClient, key);
  const patro::detail::Rights r = rights.of_routing("route");
  REQUIRE(r != nullptr);
  CHECK(rights.of_routing("another") == nullptr);  // not bound: everything
  CHECK(rights.of_key(key) == r);
  uint64_t request_id = 100;
  auto send = [&](Call c) {
    c.request_id = ++request_id;
    zmq::message_t reply;
    std::optional<std::string> reroute;
    std::vector<DeferredReply> owed;
    const Dispatched d = dispatcher.dispatch_body(
        c.request_id, request_body(c), Taken{"route", 0ns, r}, lane.scratch, reply, reroute, owed);
    REQUIRE(d == Dispatched::reply);
    return read(reply);
  };
  // Read-only: get passes, set is refused and does not run.
  CHECK(send({.object = lane.hash, .op = wire::Op::Get, .path = {std::string("k")}}).ok);
  const Reply set = send(
      {.object = lane.hash, .op = wire::Op::Set, .path = {std::string("k")}, .args = {Value(1)}});
  CHECK(set.code == Errc::not_authorized);
  CHECK(set.text.find("set on 'kv'") != std::string::npos);
  CHECK(send({.object = lane.hash, .op = wire::Op::Get, .path = {std::string("k")}})
            .results.at(0)
            .is_null());
  // Names: jobs matches job*; secret does not, and an unnamed object not sent to the client
  // neither.
  CHECK(send({.object = lane.scalar, .op = wire::Op::Get}).ok);
  const Reply refused = send({.object = hidden, .op = wire::Op::Get});
  CHECK(refused.code == Errc::not_authorized);
  CHECK(refused.text.find("get on 'secret'") != std::string::npos);
  const Reply code = send({.object = lane.code, .op = wire::Op::Get});
  CHECK(code.code == Errc::not_authorized);
  CHECK(rights.refused() == 3);
  // Everything again: the key's restriction is lifted.
  REQUIRE(rights.set_key(key, ""));
  CHECK(rights.of_routing("route") == nullptr);
  rights.drop_client(kClient, 0);
}
