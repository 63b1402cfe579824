// The client's request table on its own: no socket, a fake clock (time points passed in). Deadlines
// (timeout; the broker's no-route answer where no copy can have run), the backoff after no route
// and its give-up after twice the broker's window, the resend of everything in flight when the
// broker restarts (in request order, same ids), a server that goes away (idempotent: resent; not:
// outcome_unknown), a direct connection that dies, a oneway batch's credit, and callbacks that are
// handed out once.
#include <doctest/doctest.h>

#include <chrono>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "oneway_batcher.hpp"
#include "request_table.hpp"

using namespace patro;
using namespace std::chrono_literals;
using detail::Command;
using detail::Multipart;
using detail::RequestTable;
using detail::RetryTiming;
using detail::SlotPtr;
using Clock = RequestTable::Clock;

namespace {
constexpr uint64_t kServer = 0x5e7;
constexpr uint64_t kOtherServer = 0x5e8;

// Any fixed time: the table never reads the clock.
const Clock::time_point t0 = Clock::time_point() + 1000h;
const RetryTiming timing{100ms, 70ms};  // broker window 100 ms: no route for 200 ms gives up

// A request's frames as Connection::start makes them: [hdr][object id][request id][body].
Multipart request_frames(uint64_t rid, uint64_t server = kServer) {
  Multipart m;
  m.push_back(detail::header_frame(Command::request));
  m.push_back(detail::object_id_frame(ObjectId{server, 1}));
  m.push_back(detail::u64_frame(rid));
  m.push_back(zmq::message_t(std::string("body of ") + std::to_string(rid)));
  return m;
}

SlotPtr add(RequestTable& table, uint64_t rid, wire::Op op, Clock::duration timeout = 10s,
            uint64_t server = kServer, uint32_t oneway_calls = 0) {
  const Multipart m = request_frames(rid, server);
  return table.add(rid, server, op, t0, t0 + timeout, &m, false, oneway_calls);
}

// The broker's answer when it has no route: an error Reply.
zmq::message_t no_route_body(uint64_t rid) {
  return detail::error_reply(rid, Errc::server_unavailable, "no server for the request");
}

// The error code a Reply body carries (ok: none, or not a Reply).
Errc reply_code(const zmq::message_t& body) {
  detail::AlignedScratch scratch;
  const wire::Reply* r = detail::verified_reply(body, Limits{}, scratch);
  return r && r->status() != wire::Status::Ok ? static_cast<Errc>(r->error_code()) : Errc::ok;
}

// An OK reply to rid whose results are vs (references written by refs).
zmq::message_t ok_reply(uint64_t rid, const ValueArray& vs, const detail::RefWriter& refs = {}) {
  flatbuffers::FlatBufferBuilder fb;
  auto results = detail::encode_values(fb, vs, refs);
  wire::ReplyBuilder b(fb);
  b.add_request_id(rid);
  b.add_status(wire::Status::Ok);
  b.add_results(results);
  fb.Finish(b.Finish(), wire::ReplyIdentifier());
  return detail::body_frame(fb);
}

// A server's acknowledgement of a oneway batch: [calls, failed, first failure's text].
zmq::message_t batch_ack(uint64_t rid, int64_t calls, int64_t failed, const std::string& first) {
  return ok_reply(rid, {Value(calls), Value(failed), Value(first)});
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::vector<uint64_t> ids(const std::vector<SlotPtr>& slots) {
  std::vector<uint64_t> out;
  for (const SlotPtr& s : slots) out.push_back(s->request_id);
  return out;
}
}  // namespace

TEST_CASE("the ops the tests lean on: Get is idempotent, Call is not") {
  CHECK(detail::op_info(wire::Op::Get).idempotent);
  CHECK_FALSE(detail::op_info(wire::Op::Call).idempotent);
}

TEST_CASE("a deadline: timeout, or the broker's no-route answer where no copy can have run") {
  RequestTable table(true, 20ms, Limits{});
  SlotPtr get = add(table, 1, wire::Op::Get, 1s);
  SlotPtr call = add(table, 2, wire::Op::Call, 1s);
  SlotPtr unrouted = add(table, 3, wire::Op::Get, 1s);
  SlotPtr later = add(table, 4, wire::Op::Get, 5s);
  // No route for 3: kept as its answer, and resent after a backoff.
  REQUIRE(table.no_route(3, no_route_body(3), false, t0, timing));
  CHECK_FALSE(unrouted->done);

  CHECK_FALSE(table.expire(t0 + 999ms));
  CHECK_FALSE(get->done);

  CHECK(table.expire(t0 + 1s));
  REQUIRE(get->done);
  CHECK(get->error == Errc::timeout);
  CHECK(contains(get->error_text, "no answer to request 1 by its deadline"));
  CHECK(contains(get->error_text, "is idempotent: safe to retry"));
  REQUIRE(call->done);
  CHECK(call->error == Errc::timeout);
  CHECK(contains(call->error_text, "it may have run on the server"));
  // No copy of 3 can have run: its answer is the broker's (server_unavailable), not a timeout.
  REQUIRE(unrouted->done);
  CHECK(unrouted->error == Errc::ok);
  CHECK(reply_code(unrouted->body) == Errc::server_unavailable);
  CHECK_FALSE(later->done);
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.in_flight() == 1);
  }

  // A slot whose copy may have run times out even with a no-route answer: its server went away
  // (an idempotent request waits to be resent), then had no route.
  SlotPtr gone = add(table, 5, wire::Op::Get, 1s);
  table.fail_pending(Errc::server_unavailable, "server gone", kServer, t0, timing);
  CHECK_FALSE(gone->done);
  CHECK(gone->maybe_ran);
  REQUIRE(table.no_route(5, no_route_body(5), false, t0 + 30ms, timing));
  CHECK(gone->body.size() == 0);  // not kept: a copy may have run
  table.time_out(gone, t0 + 1s);
  REQUIRE(gone->done);
  CHECK(gone->error == Errc::timeout);

  // time_out on an answered slot changes nothing.
  REQUIRE(table.answer(4, zmq::message_t(std::string("answer")), t0 + 2s, "broker"));
  table.time_out(later, t0 + 5s);
  CHECK(later->error == Errc::ok);
  CHECK(later->body.to_string() == "answer");
  // A late answer finds no slot.
  CHECK_FALSE(table.answer(4, zmq::message_t(std::string("again")), t0 + 3s, "broker"));
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.in_flight() == 0);
  }
}

TEST_CASE("no route: resent after a growing backoff, given up after twice the broker's window") {
  RequestTable table(true, 20ms, Limits{});
  SlotPtr s = add(table, 1, wire::Op::Get);
  CHECK(table.next_retry() == Clock::time_point::max());

  REQUIRE(table.no_route(1, no_route_body(1), false, t0, timing));
  CHECK_FALSE(s->done);
  CHECK(s->retry_at == t0 + 20ms);
  CHECK(table.next_retry() == t0 + 20ms);
  CHECK(s->backoff == 40ms);

  CHECK(table.take_due(t0 + 19ms).empty());
  CHECK(table.next_retry() == t0 + 20ms);
  CHECK(ids(table.take_due(t0 + 20ms)) == std::vector<uint64_t>{1});
  CHECK(s->retry_at == Clock::time_point::max());
  CHECK(table.next_retry() == Clock::time_point::max());
  CHECK(table.next_attempt(s) == 2);
  CHECK(table.take_due(t0 + 1s).empty());  // once

  // Still no route: the backoff doubles up to the most (70 ms here).
  REQUIRE(table.no_route(1, no_route_body(1), false, t0 + 25ms, timing));
  CHECK(s->retry_at == t0 + 65ms);
  CHECK(s->backoff == 70ms);
  CHECK(ids(table.take_due(t0 + 65ms)) == std::vector<uint64_t>{1});
  REQUIRE(table.no_route(1, no_route_body(1), false, t0 + 70ms, timing));
  CHECK(s->retry_at == t0 + 140ms);
  CHECK(s->backoff == 70ms);
  CHECK(ids(table.take_due(t0 + 140ms)) == std::vector<uint64_t>{1});
  // At twice the window it may still wait; past it, the server is not coming back. No copy ran:
  // the answer is the broker's.
  REQUIRE(table.no_route(1, no_route_body(1), false, t0 + 200ms, timing));
  CHECK_FALSE(s->done);
  CHECK(ids(table.take_due(t0 + 270ms)) == std::vector<uint64_t>{1});
  REQUIRE(table.no_route(1, no_route_body(1), false, t0 + 201ms + 70ms, timing));
  REQUIRE(s->done);
  CHECK(s->error == Errc::ok);
  CHECK(reply_code(s->body) == Errc::server_unavailable);
  CHECK_FALSE(table.no_route(1, no_route_body(1), false, t0 + 300ms, timing));  // no slot now

  // A backoff that would pass the deadline: answered at once.
  SlotPtr near = add(table, 2, wire::Op::Get, 15ms);
  REQUIRE(table.no_route(2, no_route_body(2), false, t0, timing));
  REQUIRE(near->done);
  CHECK(reply_code(near->body) == Errc::server_unavailable);
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.in_flight() == 0);
  }
}

TEST_CASE("retries off: no frames kept, a no-route answer is the answer") {
  RequestTable table(false, 20ms, Limits{});
  SlotPtr s = add(table, 1, wire::Op::Get);
  CHECK(s->frames.empty());
  REQUIRE(table.no_route(1, no_route_body(1), false, t0, timing));
  REQUIRE(s->done);
  CHECK(reply_code(s->body) == Errc::server_unavailable);
  add(table, 2, wire::Op::Get);
  CHECK(table.take_all_for_resend().empty());  // nothing to resend without frames
  // The broker is gone and retries are off: everything in flight fails with that.
  SlotPtr get = add(table, 3, wire::Op::Get);
  table.fail_pending(Errc::broker_unreachable, "the broker is silent", std::nullopt, t0, timing);
  CHECK(get->done);
  CHECK(get->error == Errc::broker_unreachable);
  // A server that goes away: not resendable, so an idempotent request fails too.
  SlotPtr again = add(table, 4, wire::Op::Get);
  table.fail_pending(Errc::server_unavailable, "server gone", kServer, t0, timing);
  REQUIRE(again->done);
  CHECK(again->error == Errc::server_unavailable);
}

TEST_CASE("a broker restart: every request through it resent, in their order, with their ids") {
  RequestTable table(true, 20ms, Limits{});
  std::map<uint64_t, SlotPtr> slots;
  for (uint64_t rid : {5, 3, 9, 7, 11}) {
    slots[rid] = add(table, rid, wire::Op::Call);
    slots[rid]->sent = true;
  }
  // A control request (to the broker) made without frames to keep: not resent.
  SlotPtr control = table.add(12, 0, wire::Op::Get, t0, t0 + 10s, nullptr, true);
  // 7 went by a direct connection (the broker's fault lost none of it), 11 is answered, 9 waits
  // for a backoff after no route.
  slots[7]->sent_direct = true;
  REQUIRE(table.answer(11, zmq::message_t(std::string("ok")), t0, "broker"));
  REQUIRE(table.no_route(9, no_route_body(9), false, t0, timing));
  CHECK(table.next_retry() == t0 + 20ms);

  std::vector<SlotPtr> resend = table.take_all_for_resend();
  CHECK(ids(resend) == std::vector<uint64_t>{3, 5, 9});
  for (const SlotPtr& s : resend) {
    CHECK(s->maybe_ran);
    CHECK(s->retry_at == Clock::time_point::max());
    // The frames kept are the request as it went, with its id.
    REQUIRE(s->frames.size() == 4);
    CHECK(detail::parse_u64(s->frames[2]) == s->request_id);
    CHECK(s->frames[3].to_string() == "body of " + std::to_string(s->request_id));
    CHECK(table.next_attempt(s) == 2);
  }
  CHECK_FALSE(slots[7]->maybe_ran);
  // 9's backoff is void: it went with the others, and is not resent again when it runs out.
  CHECK(table.take_due(t0 + 1s).empty());
  CHECK_FALSE(control->done);
  CHECK(control->frames.empty());
  // A second restart resends them again, as the next attempt.
  resend = table.take_all_for_resend();
  REQUIRE(ids(resend) == std::vector<uint64_t>{3, 5, 9});
  CHECK(table.next_attempt(resend[0]) == 3);
}

TEST_CASE("a server that goes away: idempotent resent, not idempotent outcome_unknown") {
  RequestTable table(true, 20ms, Limits{});
  SlotPtr get = add(table, 1, wire::Op::Get);
  SlotPtr call = add(table, 2, wire::Op::Call);
  SlotPtr elsewhere = add(table, 3, wire::Op::Call, 10s, kOtherServer);

  table.fail_pending(Errc::server_unavailable, "server 5e7 went away", kServer, t0, timing);
  REQUIRE(call->done);
  CHECK(call->error == Errc::outcome_unknown);
  CHECK(call->error_text == "server 5e7 went away; the call may or may not have run");
  CHECK_FALSE(get->done);
  CHECK(get->maybe_ran);
  CHECK(get->retry_at == t0 + 20ms);
  CHECK_FALSE(elsewhere->done);
  CHECK(elsewhere->retry_at == Clock::time_point::max());

  // Resent when the backoff runs out; the server came back and answered.
  CHECK(ids(table.take_due(t0 + 20ms)) == std::vector<uint64_t>{1});
  REQUIRE(table.answer(1, zmq::message_t(std::string("value")), t0 + 30ms, "broker"));
  CHECK(get->error == Errc::ok);

  // One that never comes back: no route past twice the window (counted from when it went).
  SlotPtr get2 = add(table, 4, wire::Op::Get);
  table.fail_pending(Errc::server_unavailable, "server 5e7 went away", kServer, t0, timing);
  CHECK_FALSE(get2->done);
  REQUIRE(table.no_route(4, no_route_body(4), false, t0 + 201ms, timing));
  REQUIRE(get2->done);
  CHECK(get2->error == Errc::server_unavailable);
  CHECK(get2->body.size() == 0);
  // A non-idempotent request that may have run and finds no route: outcome_unknown.
  SlotPtr call2 = add(table, 5, wire::Op::Call);
  call2->sent = call2->sent_direct = true;
  CHECK(ids(table.lost_direct(kServer)) == std::vector<uint64_t>{5});
  REQUIRE(
      table.no_route(5, no_route_body(5), false, t0 + 10s - 10ms, timing));  // past the deadline
  REQUIRE(call2->done);
  CHECK(call2->error == Errc::outcome_unknown);
}

TEST_CASE(
    "lost with its direct connection, then no route at the broker: a call fails as "
    "outcome_unknown at once (a restarted process would run it again); a get waits for one") {
  RequestTable table(true, 20ms, Limits{});
  SlotPtr call = add(table, 1, wire::Op::Call);
  SlotPtr get = add(table, 2, wire::Op::Get);
  for (const SlotPtr& s : {call, get}) s->sent = s->sent_direct = true;
  REQUIRE(ids(table.lost_direct(kServer)) == std::vector<uint64_t>{1, 2});
  for (const SlotPtr& s : {call, get}) s->sent_direct = false;  // resent through the broker
  REQUIRE(table.no_route(1, no_route_body(1), false, t0, timing));
  REQUIRE(call->done);
  CHECK(call->error == Errc::outcome_unknown);
  CHECK(call->error_text.find("direct connection closed") != std::string::npos);
  REQUIRE(table.no_route(2, no_route_body(2), false, t0, timing));
  CHECK_FALSE(get->done);  // idempotent: resent after the backoff
  CHECK(ids(table.take_due(t0 + 20ms)) == std::vector<uint64_t>{2});
  REQUIRE(table.answer(2, zmq::message_t(std::string("value")), t0 + 30ms, "broker"));

  // SERVER_DOWN whose list does not name a call lost directly and resent through the broker
  // (it went to the process that went): it fails all the same, and once.
  SlotPtr call2 = add(table, 3, wire::Op::Call);
  SlotPtr brokered = add(table, 4, wire::Op::Call);
  call2->sent = call2->sent_direct = true;
  brokered->sent = true;
  REQUIRE(ids(table.lost_direct(kServer)) == std::vector<uint64_t>{3});
  call2->sent_direct = false;
  const std::vector<uint64_t> only{4};
  table.fail_pending(Errc::server_unavailable, "server went away", kServer, t0, timing, &only);
  REQUIRE(call2->done);
  CHECK(call2->error == Errc::outcome_unknown);
  REQUIRE(brokered->done);
  CHECK(brokered->error == Errc::outcome_unknown);
}

TEST_CASE(
    "a reply held back at the broker (NO_ROUTE that ran): resent; given up as outcome_unknown") {
  RequestTable table(true, 20ms, Limits{});
  SlotPtr call = add(table, 1, wire::Op::Call);
  REQUIRE(table.no_route(1, no_route_body(1), true, t0, timing));
  CHECK_FALSE(call->done);
  CHECK(call->maybe_ran);
  CHECK(ids(table.take_due(t0 + 20ms)) == std::vector<uint64_t>{1});
  // Still held back at the deadline: it may have run, so not server_unavailable.
  REQUIRE(table.no_route(1, no_route_body(1), false, t0 + 10s - 10ms, timing));
  REQUIRE(call->done);
  CHECK(call->error == Errc::outcome_unknown);
}

TEST_CASE("a direct connection that dies: its requests, in order, may have run") {
  RequestTable table(true, 20ms, Limits{});
  std::map<uint64_t, SlotPtr> slots;
  for (uint64_t rid : {4, 2, 3, 1}) {
    slots[rid] = add(table, rid, rid % 2 ? wire::Op::Call : wire::Op::Get);
    slots[rid]->sent = true;
    slots[rid]->sent_direct = rid != 3;  // 3 went through the broker
  }
  SlotPtr other = add(table, 5, wire::Op::Get, 10s, kOtherServer);
  other->sent = other->sent_direct = true;
  CHECK(table.brokered_in_flight(kServer));
  CHECK_FALSE(table.brokered_in_flight(kOtherServer));
  slots[3]->sent_direct = true;
  CHECK_FALSE(table.brokered_in_flight(kServer));
  slots[3]->sent_direct = false;

  std::vector<SlotPtr> lost = table.lost_direct(kServer);
  REQUIRE(ids(lost) == std::vector<uint64_t>{1, 2, 4});
  for (const SlotPtr& s : lost) CHECK(s->maybe_ran);
  CHECK_FALSE(slots[3]->maybe_ran);
  CHECK_FALSE(other->maybe_ran);
  // route=direct: they fail; Call (1) may have run, Gets are safe to call again.
  table.fail(lost, "its direct connection went silent", t0);
  CHECK(lost[0]->error == Errc::outcome_unknown);
  CHECK(lost[1]->error == Errc::server_unavailable);
  CHECK(lost[2]->error == Errc::server_unavailable);
  CHECK(lost[1]->error_text == "its direct connection went silent");
  // A slot answered meanwhile is left as it is.
  REQUIRE(table.answer(3, zmq::message_t(std::string("x")), t0, "broker"));
  table.fail({slots[3]}, "too late", t0);
  CHECK(slots[3]->error == Errc::ok);
  detail::MutexLock lock(table.mutex());
  CHECK(table.in_flight() == 1);
}

TEST_CASE("a oneway batch's credit is settled when it completes, however it completes") {
  RequestTable table(true, 20ms, Limits{});
  add(table, 1, wire::Op::Call, 1s, kServer, 3);
  add(table, 2, wire::Op::Call, 2s, kServer, 2);
  SlotPtr bad = add(table, 3, wire::Op::Call, 10s, kServer, 4);
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.oneway_unacked() == 9);
    CHECK(table.take_oneway_failed() == 0);
  }
  // Acknowledged: 3 calls, 1 failed.
  REQUIRE(table.answer(1, batch_ack(1, 3, 1, "boom"), t0 + 10ms, "broker"));
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.oneway_unacked() == 6);
    CHECK(table.take_oneway_failed() == 1);
    CHECK(table.take_oneway_failed() == 0);
  }
  // An acknowledgement that is not one: every call in the batch counts as failed.
  REQUIRE(table.answer(3, zmq::message_t(std::string("garbage")), t0 + 20ms, "broker"));
  CHECK(bad->body.size() == 0);
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.oneway_unacked() == 2);
    CHECK(table.take_oneway_failed() == 4);
  }
  // Never acknowledged: its deadline fails both calls.
  CHECK(table.expire(t0 + 2s));
  detail::MutexLock lock(table.mutex());
  CHECK(table.oneway_unacked() == 0);
  CHECK(table.take_oneway_failed() == 2);
  CHECK(table.in_flight() == 0);
}

TEST_CASE("callbacks: collected once when their slot is answered, run once, a throw contained") {
  RequestTable table(true, 20ms, Limits{});
  SlotPtr s = add(table, 1, wire::Op::Get);
  SlotPtr plain = add(table, 2, wire::Op::Get);
  int ran = 0;
  {
    detail::MutexLock lock(table.mutex());
    std::function<void()> f1 = [&ran] { ++ran; };
    std::function<void()> f2 = [] { throw std::runtime_error("a callback's fault"); };
    std::function<void()> f3 = [&ran] { ran += 10; };
    CHECK(table.add_callback(s, f1));
    CHECK(table.add_callback(s, f2));
    CHECK(table.add_callback(s, f3));
    CHECK(table.callbacks_waiting() == 1);  // counted by slot
    CHECK(table.take_ready().empty());
  }
  REQUIRE(table.answer(2, zmq::message_t(std::string("x")), t0, "broker"));
  REQUIRE(table.answer(1, zmq::message_t(std::string("y")), t0, "broker"));
  std::vector<SlotPtr> ready;
  {
    detail::MutexLock lock(table.mutex());
    CHECK(table.callbacks_waiting() == 0);
    ready = table.take_ready();
    CHECK(table.take_ready().empty());
  }
  REQUIRE(ids(ready) == std::vector<uint64_t>{1});
  RequestTable::run_callbacks(ready);
  CHECK(ran == 11);
  CHECK(s->callbacks.empty());
  RequestTable::run_callbacks(ready);  // nothing left to run
  CHECK(ran == 11);
  // An answered slot takes no callback: the caller runs it.
  detail::MutexLock lock(table.mutex());
  std::function<void()> late = [&ran] { ++ran; };
  CHECK_FALSE(table.add_callback(s, late));
  REQUIRE(late);
  CHECK(table.take_ready().empty());
}

TEST_CASE("a reply's references: let go of as its slot ends if never read, kept if read") {
  auto queue = std::make_shared<detail::ReleaseQueue>();
  // An OK reply whose results are references to objects 7 and 8 of server 0x5e (the same one twice
  // for 8: the server counted each).
  auto reply = [](uint64_t rid) {
    const detail::RefWriter refs = [](flatbuffers::FlatBufferBuilder& b, const Reference& r) {
      return wire::CreateRef(b, r.id.server, r.id.object);
    };
    ValueArray vs;
    for (uint64_t o : {7, 8, 8}) {
      Reference r;
      r.id = ObjectId{0x5e, o};
      vs.emplace_back(std::move(r));
    }
    return ok_reply(rid, vs, refs);
  };
  RequestTable table(true, 50ms, Limits{}, detail::reply_release(queue, Limits{}));
  const auto t0 = Clock::now();
  Multipart frames;
  frames.push_back(detail::header_frame(Command::request));
  // Answered and dropped unread: each reference it brought is released.
  {
    SlotPtr s = table.add(1, 0x5e, wire::Op::Call, t0, t0 + 1s, &frames, false);
    REQUIRE(table.answer(1, reply(1), t0, "direct"));
  }
  using R = detail::ReleaseQueue::Released;
  CHECK(queue->take() == std::vector<R>{{ObjectId{0x5e, 7}, 0, 1}, {ObjectId{0x5e, 8}, 0, 2}});
  // Read (its holds made): nothing more at its end; what was read lets go as its values go.
  {
    SlotPtr s = table.add(2, 0x5e, wire::Op::Call, t0, t0 + 1s, &frames, false);
    REQUIRE(table.answer(2, reply(2), t0, "direct"));
    detail::MutexLock lock(s->refs_mu);
    s->result_holds.start();
    for (int i = 0; i < 3; ++i) (void)s->result_holds.next([] { return std::make_shared<int>(); });
    s->result_holds.read();
  }
  CHECK(queue->take().empty());
  // A control request's slot brings no references: nothing.
  {
    SlotPtr c = table.add(4, 0, wire::Op::Get, t0, t0 + 1s, &frames, true);
    REQUIRE(table.answer(4, reply(4), t0, "broker"));
  }
  CHECK(queue->take().empty());
  // Cancelled, and timed out: an answer that comes after is dropped, and what it brings let go
  // of, once (a second copy of it brings nothing new).
  SlotPtr cancelled = table.add(3, 0x5e, wire::Op::Call, t0, t0 + 1s, &frames, false);
  SlotPtr late = table.add(5, 0x5e, wire::Op::Call, t0, t0 + 1s, &frames, false);
  CHECK(table.cancel(cancelled, t0));
  CHECK(table.expire(t0 + 2s));
  CHECK(late->error == Errc::timeout);
  CHECK(queue->take().empty());  // nothing came: nothing to let go of
  const std::vector<R> brought{{ObjectId{0x5e, 7}, 0, 1}, {ObjectId{0x5e, 8}, 0, 2}};
  CHECK_FALSE(table.answer(3, reply(3), t0, "direct"));
  CHECK(queue->take() == brought);
  CHECK_FALSE(table.answer(3, reply(3), t0, "broker"));
  CHECK(queue->take().empty());
  CHECK_FALSE(table.answer(5, reply(5), t0, "direct"));
  CHECK(queue->take() == brought);
  // An answer nobody asked for: nothing.
  CHECK_FALSE(table.answer(99, reply(99), t0, "direct"));
  CHECK(queue->take().empty());
}
