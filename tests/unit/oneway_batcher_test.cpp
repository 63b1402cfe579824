// The client's oneway batcher on its own (no sockets, a fake clock): a batch is sealed when it is
// full (calls or bytes), when a call for another server comes, and when it is older than the
// delay; its calls keep their order and their request ids; the releases a client queued are
// counted by object, one Release call per object.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "oneway_batcher.hpp"
#include "patro/options.hpp"

using namespace patro;
using namespace std::chrono_literals;
using detail::OnewayBatcher;
using detail::ReleaseQueue;
using Clock = OnewayBatcher::Clock;

namespace {

// One call as it went out in a batch.
struct Call {
  uint64_t request_id;
  uint64_t server;
  uint64_t object;
  wire::Op op;
  ValueArray args;
};

// What a sealed batch holds, read back from its frames as a server would.
struct Batch {
  uint64_t request_id;
  ObjectId target;
  std::vector<Call> calls;
};

Batch read_batch(const OnewayBatcher::Sealed& s) {
  REQUIRE(s.frames.size() == 4);
  Batch b;
  CHECK(detail::parse_header(s.frames[0]) == detail::Command::request);
  auto target = detail::parse_object_id(s.frames[1]);
  REQUIRE(target);
  b.target = *target;
  auto rid = detail::parse_u64(s.frames[2]);
  REQUIRE(rid);
  b.request_id = *rid;
  CHECK(b.request_id == s.request_id);
  CHECK(b.target == s.target);
  detail::AlignedScratch scratch;
  const wire::Batch* batch = detail::verified_batch(s.frames[3], Limits{}, scratch);
  REQUIRE(batch != nullptr);
  REQUIRE(batch->requests() != nullptr);
  for (const wire::Request* r : *batch->requests())
    b.calls.push_back(Call{r->request_id(), r->server(), r->object(), r->op(),
                           detail::decode_values(r->args(), {})});
  CHECK(b.calls.size() == s.calls);
  return b;
}

// Encodes a call as the connection does, without its client and deadline details.
auto encoder(const ObjectId& id, wire::Op op = wire::Op::Set, ValueArray args = {}) {
  return [id, op, args](flatbuffers::FlatBufferBuilder& fb, uint64_t rid) {
    auto a = args.empty() ? 0 : detail::encode_values(fb, args, {});
    wire::RequestBuilder b(fb);
    b.add_request_id(rid);
    b.add_server(id.server);
    b.add_object(id.object);
    b.add_op(op);
    if (!a.IsNull()) b.add_args(a);
    return b.Finish();
  };
}

OnewayBatcher::Limits limits(size_t calls, size_t bytes = 1u << 20,
                             std::chrono::microseconds delay = 1000us) {
  OnewayBatcher::Limits l;
  l.calls = calls;
  l.bytes = bytes;
  l.delay = delay;
  return l;
}

const ObjectId kA{1, 10};
const ObjectId kA2{1, 11};
const ObjectId kB{2, 20};

}  // namespace

TEST_CASE("an empty batcher has nothing to seal and nothing due") {
  std::atomic<uint64_t> ids{1};
  OnewayBatcher batcher(limits(4), ids);
  CHECK(!batcher.seal());
  CHECK(!batcher.due());
  CHECK(!batcher.overdue(Clock::now() + 1h));
  CHECK(batcher.open_calls() == 0);
  CHECK(ids == 1);  // no request id spent
}

TEST_CASE("a batch is sealed when it is full, and its calls keep their order and ids") {
  std::atomic<uint64_t> ids{100};
  OnewayBatcher batcher(limits(3), ids);
  const auto t0 = Clock::time_point{} + 1h;
  auto a1 = batcher.append(kA, t0, encoder(kA));
  CHECK(a1.opened);
  CHECK(a1.sealed.empty());
  auto a2 = batcher.append(kA2, t0, encoder(kA2));  // the same server, another object
  CHECK(!a2.opened);
  CHECK(a2.sealed.empty());
  CHECK(batcher.open_calls() == 2);
  auto a3 = batcher.append(kA, t0, encoder(kA, wire::Op::Release));
  CHECK(!a3.opened);
  REQUIRE(a3.sealed.size() == 1);
  CHECK(batcher.open_calls() == 0);
  CHECK(!batcher.due());

  const Batch b = read_batch(a3.sealed[0]);
  CHECK(b.target == kA);
  REQUIRE(b.calls.size() == 3);
  CHECK(b.calls[0].request_id == 100);
  CHECK(b.calls[1].request_id == 101);
  CHECK(b.calls[2].request_id == 102);
  CHECK(b.request_id == 103);  // drawn when sealed, after its calls
  CHECK(b.calls[0].object == kA.object);
  CHECK(b.calls[1].object == kA2.object);
  CHECK(b.calls[2].op == wire::Op::Release);
  CHECK(ids == 104);

  // The builder is reused: the next batch holds only its own calls.
  auto a4 = batcher.append(kA, t0, encoder(kA));
  CHECK(a4.opened);
  auto sealed = batcher.seal();
  REQUIRE(sealed);
  const Batch next = read_batch(*sealed);
  REQUIRE(next.calls.size() == 1);
  CHECK(next.calls[0].request_id == 104);
  CHECK(next.request_id == 105);
}

TEST_CASE("a batch is sealed when it reaches its byte limit") {
  std::atomic<uint64_t> ids{1};
  OnewayBatcher batcher(limits(1000, 512), ids);
  const auto t0 = Clock::time_point{} + 1h;
  const ValueArray big{Value(std::string(600, 'x'))};
  auto a = batcher.append(kA, t0, encoder(kA, wire::Op::Set, big));
  REQUIRE(a.sealed.size() == 1);
  CHECK(!a.opened);
  const Batch b = read_batch(a.sealed[0]);
  REQUIRE(b.calls.size() == 1);
  REQUIRE(b.calls[0].args.size() == 1);
  CHECK(b.calls[0].args[0].as<std::string>() == std::string(600, 'x'));
}

TEST_CASE("a call for another server seals the open batch first") {
  std::atomic<uint64_t> ids{1};
  OnewayBatcher batcher(limits(10), ids);
  const auto t0 = Clock::time_point{} + 1h;
  batcher.append(kA, t0, encoder(kA));
  batcher.append(kA2, t0, encoder(kA2));
  auto a = batcher.append(kB, t0 + 10us, encoder(kB));
  REQUIRE(a.sealed.size() == 1);
  CHECK(a.opened);  // a new batch, for kB's server
  const Batch first = read_batch(a.sealed[0]);
  CHECK(first.target == kA);
  REQUIRE(first.calls.size() == 2);
  CHECK(first.calls[0].request_id == 1);
  CHECK(first.calls[1].request_id == 2);
  CHECK(first.request_id == 3);  // sealed before the new call took its id
  CHECK(batcher.open_calls() == 1);
  CHECK(batcher.due() == t0 + 10us + 1000us);  // the new batch's age counts from its first call

  auto sealed = batcher.seal();
  REQUIRE(sealed);
  const Batch second = read_batch(*sealed);
  CHECK(second.target == kB);
  REQUIRE(second.calls.size() == 1);
  CHECK(second.calls[0].request_id == 4);
  CHECK(second.calls[0].server == kB.server);
}

TEST_CASE("a call for another server that fills its batch seals two batches, in order") {
  std::atomic<uint64_t> ids{1};
  OnewayBatcher batcher(limits(10, 512), ids);
  const auto t0 = Clock::time_point{} + 1h;
  CHECK(batcher.append(kA, t0, encoder(kA)).sealed.empty());
  auto a = batcher.append(kB, t0, encoder(kB, wire::Op::Set, {Value(std::string(600, 'y'))}));
  REQUIRE(a.sealed.size() == 2);
  CHECK(!a.opened);  // nothing is left open
  CHECK(batcher.open_calls() == 0);
  const Batch first = read_batch(a.sealed[0]);
  const Batch second = read_batch(a.sealed[1]);
  CHECK(first.target == kA);
  CHECK(second.target == kB);
  CHECK(first.request_id < second.request_id);
  REQUIRE(second.calls.size() == 1);
  CHECK(second.calls[0].server == kB.server);
}

TEST_CASE("a batch is due once it is older than the delay, counted from its first call") {
  std::atomic<uint64_t> ids{1};
  OnewayBatcher batcher(limits(10, 1u << 20, 500us), ids);
  const auto t0 = Clock::time_point{} + 1h;
  batcher.append(kA, t0, encoder(kA));
  batcher.append(kA, t0 + 400us, encoder(kA));  // a later call does not make the batch younger
  REQUIRE(batcher.due());
  CHECK(*batcher.due() == t0 + 500us);
  CHECK(!batcher.overdue(t0));
  CHECK(!batcher.overdue(t0 + 499us));
  CHECK(batcher.overdue(t0 + 500us));
  CHECK(batcher.overdue(t0 + 1s));
  // Its holder seals it when it is overdue; the next batch counts from its own first call.
  auto sealed = batcher.seal();
  REQUIRE(sealed);
  CHECK(read_batch(*sealed).calls.size() == 2);
  CHECK(!batcher.overdue(t0 + 1s));
  auto a = batcher.append(kA, t0 + 2s, encoder(kA));
  CHECK(a.opened);
  CHECK(!batcher.overdue(t0 + 2s + 499us));
  CHECK(batcher.overdue(t0 + 2s + 500us));
}

TEST_CASE("released references are counted by object, and go as one Release call per object") {
  ReleaseQueue queue;
  CHECK(queue.queued() == 0);
  CHECK(queue.take().empty());
  // Dropped from any order and any server.
  for (const ObjectId& id : {kB, kA, kA2, kA, kB, kA}) queue.add(id);
  CHECK(queue.queued() == 6);
  const auto dropped = queue.take();
  CHECK(queue.queued() == 0);
  CHECK(queue.take().empty());  // taken once
  REQUIRE(dropped.size() == 3);
  CHECK(dropped[0] == ReleaseQueue::Released{kA, 0, 3});
  CHECK(dropped[1] == ReleaseQueue::Released{kA2, 0, 1});
  CHECK(dropped[2] == ReleaseQueue::Released{kB, 0, 2});

  // As the connection sends them: a batch per server, in the order taken.
  std::atomic<uint64_t> ids{1};
  OnewayBatcher batcher(limits(256), ids);
  const auto t0 = Clock::time_point{} + 1h;
  std::vector<OnewayBatcher::Sealed> sealed;
  for (const auto& [id, pass, count] : dropped) {
    auto a = batcher.append(id, t0,
                            encoder(id, wire::Op::Release, {Value(static_cast<int64_t>(count))}));
    for (auto& s : a.sealed) sealed.push_back(std::move(s));
  }
  if (auto last = batcher.seal()) sealed.push_back(std::move(*last));
  REQUIRE(sealed.size() == 2);
  const Batch to_a = read_batch(sealed[0]);
  const Batch to_b = read_batch(sealed[1]);
  CHECK(to_a.target.server == kA.server);
  CHECK(to_b.target.server == kB.server);
  REQUIRE(to_a.calls.size() == 2);
  REQUIRE(to_b.calls.size() == 1);
  CHECK(to_a.calls[0].object == kA.object);
  CHECK(to_a.calls[0].op == wire::Op::Release);
  CHECK(to_a.calls[0].args == ValueArray{Value(int64_t{3})});
  CHECK(to_a.calls[1].object == kA2.object);
  CHECK(to_a.calls[1].args == ValueArray{Value(int64_t{1})});
  CHECK(to_b.calls[0].object == kB.object);
  CHECK(to_b.calls[0].args == ValueArray{Value(int64_t{2})});
}

TEST_CASE("callback passes are counted apart from plain references, by their pass key") {
  ReleaseQueue queue;
  // The same object: two plain references, three of one pass key, one of another.
  queue.add(kA, 7);
  queue.add(kA);
  queue.add(kA, 7);
  queue.add(kA, 9);
  queue.add(kA);
  queue.add(kA, 7);
  const auto dropped = queue.take();
  REQUIRE(dropped.size() == 3);
  CHECK(dropped[0] == ReleaseQueue::Released{kA, 0, 2});
  CHECK(dropped[1] == ReleaseQueue::Released{kA, 7, 3});
  CHECK(dropped[2] == ReleaseQueue::Released{kA, 9, 1});
}
