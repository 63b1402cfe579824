// Calls on results not yet returned (promise pipelining, issue 26; docs/WIRE.md "Pipelined
// calls"): a chain of three dependent calls (make -> a method on the result -> a method on that
// result) all sent before the first is answered, run by the server in order on each result, giving
// what three synchronous calls give; an error in the first reaching the third; a result that is
// not a reference failing the calls made on it; a pipelined call waiting for a result that a
// Deferred gives later without holding a lane; a resent copy of a pipelined call run once. Both
// through the broker and on the direct path. Behaviour only: nothing here is timed.
#include <doctest/doctest.h>

#include <zmq.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::Future;
using patro::Proxy;
using patro::Value;
namespace d = patro::detail;

namespace {

// What the served objects ran, in order ("make 1", "next 1", "value 2"...), and a gate that holds
// a make until the test opens it.
struct Journal {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> ran;
  bool open = true;
  std::vector<patro::Deferred> later;  // make_later's replies, resolved by the test

  void add(std::string what) {
    std::lock_guard<std::mutex> lock(mu);
    ran.push_back(std::move(what));
  }
  std::vector<std::string> take() {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(ran, {});
  }
  void wait_open() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, 30s, [&] { return open; });
  }
  void set_open(bool o) {
    {
      std::lock_guard<std::mutex> lock(mu);
      open = o;
    }
    cv.notify_all();
  }
};
Journal journal;

struct Link {
  int64_t v = 0;
};
struct Maker {
  int64_t made = 0;
};

void register_classes() {
  static std::once_flag once;
  std::call_once(once, [] {
    patro::Class<Link>("Link")
        .method("next",
                [](Link& l) {
                  journal.add("next " + std::to_string(l.v));
                  return std::make_shared<Link>(Link{l.v + 1});
                })
        .method("value",
                [](Link& l) {
                  journal.add("value " + std::to_string(l.v));
                  return l.v;
                })
        .method("boom", [](Link& l) -> std::shared_ptr<Link> {
          journal.add("boom " + std::to_string(l.v));
          throw patro::Error(Errc::invalid_argument, "boom at " + std::to_string(l.v));
        });
    patro::Class<Maker>("Maker")
        .method("make",
                [](Maker& m, int64_t v) {
                  journal.wait_open();
                  journal.add("make " + std::to_string(v));
                  ++m.made;
                  return std::make_shared<Link>(Link{v});
                })
        .method("fail",
                [](Maker&) -> std::shared_ptr<Link> {
                  journal.add("fail");
                  throw std::runtime_error("no link today");
                })
        .method("number",
                [](Maker&) {
                  journal.add("number");
                  return int64_t{42};
                })
        .method("make_later",
                [](Maker&, patro::Deferred later) {
                  journal.add("make_later");
                  std::lock_guard<std::mutex> lock(journal.mu);
                  journal.later.push_back(later);
                })
        .method("made", [](Maker& m) { return m.made; });
  });
}

struct Served {
  std::shared_ptr<Maker> maker = std::make_shared<Maker>();
  patro::Config cfg;
  Served() {
    register_classes();
    patro::ServerOptions o;  // default heartbeats: a gate held shut must not look like silence
    o.threads = 2;
    cfg = patro::patronize(o, maker);
  }
  Proxy connect(patro::Route route) const {
    patro::ClientOptions o;
    o.call_timeout = 30s;
    o.route = route;
    Proxy p = patro::get_proxies(cfg, o).at(0);
    (void)p.call("made");  // the route is up (direct: live)
    journal.take();
    return p;
  }
};

template <class T>
std::optional<patro::Error> error_of(const Future<T>& f) {
  try {
    (void)f.get();
  } catch (const patro::Error& e) {
    return e;
  }
  return std::nullopt;
}

std::string name_of(patro::Route r) {
  return r == patro::Route::direct ? "direct" : "broker";
}

}  // namespace

TEST_CASE("a chain of three dependent calls is sent at once and runs in order on each result") {
  Served s;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(name_of(route));
    Proxy maker = s.connect(route);
    const patro::ClientStats before = patro::client(maker).stats();

    // The same three calls, synchronously, for what they give.
    journal.set_open(true);
    const Proxy made(maker.call("make", 10));
    const Proxy next(made.call("next"));
    const Value sync_value = next.call("value");
    CHECK(sync_value == 11);
    CHECK(journal.take() == std::vector<std::string>{"make 10", "next 10", "value 11"});

    // Pipelined: make is held on the server until all three were sent.
    journal.set_open(false);
    const auto sent_before = patro::client(maker).stats();
    Future<Value> f = maker.async_call("make", 10);
    Future<Value> g = f.async_call("next");
    Future<Value> h = g.async_call("value");
    const auto sent = patro::client(maker).stats();
    // All three left before any answer came (none can: make waits for the gate).
    CHECK(sent.requests == sent_before.requests + 3);
    CHECK(sent.replies == sent_before.replies);
    CHECK_FALSE(f.ready());
    CHECK_FALSE(g.ready());
    CHECK_FALSE(h.ready());
    journal.set_open(true);
    CHECK(h.get() == sync_value);
    CHECK(g.get().is_reference());
    CHECK(f.get().is_reference());
    CHECK(journal.take() == std::vector<std::string>{"make 10", "next 10", "value 11"});
    const auto after = patro::client(maker).stats();
    CHECK(after.replies == sent_before.replies + 3);
    if (route == patro::Route::direct) CHECK(after.direct_replies >= before.direct_replies + 3);

    // Calls on one result run in the order they were made.
    journal.set_open(false);
    Future<Value> m = maker.async_call("make", 20);
    std::vector<Future<Value>> calls;
    for (int i = 0; i < 5; ++i) calls.push_back(m.async_call(i % 2 ? "value" : "next"));
    journal.set_open(true);
    for (int i = 0; i < 5; ++i) {
      if (i % 2)
        CHECK(calls[static_cast<size_t>(i)].get() == 20);
      else
        CHECK(calls[static_cast<size_t>(i)].get().is_reference());
    }
    CHECK(journal.take() == std::vector<std::string>{"make 20", "next 20", "value 20", "next 20",
                                                     "value 20", "next 20"});

    // A call on a result already here is a plain call on it.
    CHECK(f.async_call("value").get() == 10);
    CHECK(f.async_get().get().is_reference());
  }
}

TEST_CASE("a chain made in a patro::Bundle leaves in one message and gives the same") {
  Served s;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(name_of(route));
    Proxy maker = s.connect(route);
    journal.set_open(true);
    const patro::ClientStats before = patro::client(maker).stats();
    Future<Value> h;
    {
      const patro::Bundle together(maker);
      h = maker.async_call("make", 30).async_call("next").async_call("value");
      // Nothing left yet: the three calls wait for the Bundle's end.
      CHECK(patro::client(maker).stats().bundles_sent == before.bundles_sent);
    }
    CHECK(h.get() == 31);
    CHECK(journal.take() == std::vector<std::string>{"make 30", "next 30", "value 31"});
    const patro::ClientStats after = patro::client(maker).stats();
    CHECK(after.requests == before.requests + 3);
    CHECK(after.replies == before.replies + 3);
    // Direct: one message took all three (a bundle); through the broker, which reads none, each
    // went alone.
    CHECK(after.bundles_sent == before.bundles_sent + (route == patro::Route::direct ? 1 : 0));

    // An error in the first reaches the third, bundled or not.
    Future<Value> failed;
    {
      const patro::Bundle together(maker);
      failed = maker.async_call("fail").async_call("next").async_call("value");
    }
    const auto e = error_of(failed);
    REQUIRE(e);
    CHECK(std::string(e->what()).find("no link today") != std::string::npos);
    CHECK(journal.take() == std::vector<std::string>{"fail"});

    // A wait inside the Bundle sends what waits first (no deadlock), and send() sends at once.
    {
      patro::Bundle together(maker);
      Future<Value> f = maker.async_call("make", 40);
      CHECK(f.async_call("value").get() == 40);
      Future<Value> g = maker.async_call("number");
      together.send();
      CHECK(g.get() == 42);
    }
    CHECK(journal.take() == std::vector<std::string>{"make 40", "value 40", "number"});
  }
}

TEST_CASE("an error in the first call reaches every call down the chain") {
  Served s;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(name_of(route));
    Proxy maker = s.connect(route);
    journal.set_open(true);
    Future<Value> f = maker.async_call("fail");
    Future<Value> g = f.async_call("next");
    Future<Value> h = g.async_call("value");
    const auto ef = error_of(f), eg = error_of(g), eh = error_of(h);
    REQUIRE(ef);
    REQUIRE(eg);
    REQUIRE(eh);
    CHECK(eh->code() == ef->code());
    CHECK(eg->code() == ef->code());
    CHECK(std::string(eh->what()).find("no link today") != std::string::npos);
    CHECK(std::string(eh->what()).find("which this call was made on the result of") !=
          std::string::npos);
    // The dependents never ran.
    CHECK(journal.take() == std::vector<std::string>{"fail"});

    // An error in the middle: the first result is fine, the second call throws.
    Future<Value> a = maker.async_call("make", 5);
    Future<Value> b = a.async_call("boom");
    Future<Value> c = b.async_call("value");
    CHECK(a.get().is_reference());
    const auto eb = error_of(b), ec = error_of(c);
    REQUIRE(ec);
    CHECK(ec->code() == Errc::invalid_argument);
    CHECK(std::string(ec->what()).find("boom at 5") != std::string::npos);
    CHECK(journal.take() == std::vector<std::string>{"make 5", "boom 5"});

    // On a failure already here: the error comes at once, and nothing is sent.
    CHECK(error_of(f.async_call("value"))->code() == ef->code());
  }
}

TEST_CASE("a result that is not a reference fails the calls made on it clearly") {
  Served s;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(name_of(route));
    Proxy maker = s.connect(route);
    Future<Value> f = maker.async_call("number");
    Future<Value> g = f.async_call("next");
    Future<Value> h = g.async_call("value");
    CHECK(f.get() == 42);
    const auto eg = error_of(g), eh = error_of(h);
    REQUIRE(eg);
    REQUIRE(eh);
    CHECK(eg->code() == Errc::type_mismatch);
    CHECK(eh->code() == Errc::type_mismatch);
    CAPTURE(eg->what());
    CHECK(std::string(eg->what()).find("not a reference") != std::string::npos);
    CHECK(journal.take() == std::vector<std::string>{"number"});
    // The same once the result is here.
    const auto late = error_of(f.async_call("next"));
    REQUIRE(late);
    CHECK(late->code() == Errc::type_mismatch);
  }
}

TEST_CASE("a pipelined call waits for a late result without holding a lane") {
  Served s;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(name_of(route));
    Proxy maker = s.connect(route);
    Future<Value> f = maker.async_call("make_later");
    Future<Value> g = f.async_call("next");
    Future<Value> h = g.async_call("value");
    // The server has them all; the lane goes on serving this client meanwhile.
    bool parked = false;
    for (int i = 0; i < 500 && !parked; ++i) {
      std::lock_guard<std::mutex> lock(journal.mu);
      parked = !journal.later.empty();
      if (!parked) std::this_thread::sleep_for(10ms);
    }
    REQUIRE(parked);
    for (int i = 0; i < 3; ++i) CHECK(maker.call("number") == 42);
    CHECK_FALSE(h.ready());
    {
      std::lock_guard<std::mutex> lock(journal.mu);
      journal.later.front().resolve(Value(std::make_shared<Link>(Link{7})));
      journal.later.clear();
    }
    CHECK(h.get() == 8);
    CHECK(journal.take() == std::vector<std::string>{"make_later", "number", "number", "number",
                                                     "next 7", "value 8"});

    // A late failure reaches them too.
    Future<Value> x = maker.async_call("make_later");
    Future<Value> y = x.async_call("value");
    for (int i = 0; i < 500; ++i) {
      std::lock_guard<std::mutex> lock(journal.mu);
      if (!journal.later.empty()) break;
      journal.mu.unlock();
      std::this_thread::sleep_for(10ms);
      journal.mu.lock();
    }
    {
      std::lock_guard<std::mutex> lock(journal.mu);
      REQUIRE_FALSE(journal.later.empty());
      journal.later.front().reject(patro::Error(Errc::not_found, "nothing made"));
      journal.later.clear();
    }
    const auto ey = error_of(y);
    REQUIRE(ey);
    CHECK(ey->code() == Errc::not_found);
    journal.take();
  }
}

TEST_CASE("a resent copy of a pipelined call is answered once, from the reply cache") {
  // A raw client: it sends make, a call pipelined on it, and the pipelined call again with the
  // same request id; the method runs once and both copies get its answer.
  Served s;
  Proxy maker = s.connect(patro::Route::broker);
  const std::string front = patro::client(maker).broker();
  zmq::context_t ctx;
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.connect(front);
  const uint64_t client = 0x5eed0001;
  const patro::ObjectId id = maker.id();
  auto request = [&](uint64_t rid, uint64_t on, const char* name, patro::ObjectId target) {
    flatbuffers::FlatBufferBuilder fb;
    auto n = fb.CreateString(name);
    auto args =
        on == 0
            ? d::encode_values(fb, patro::ValueArray{Value(3)}, {})
            : flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<patro::wire::Value>>>();
    patro::wire::RequestBuilder b(fb);
    b.add_request_id(rid);
    b.add_client_id(client);
    b.add_server(target.server);
    b.add_object(target.object);
    b.add_op(patro::wire::Op::Call);
    b.add_name(n);
    if (!args.IsNull()) b.add_args(args);
    if (on != 0) b.add_pipeline_of(on);
    fb.Finish(b.Finish(), patro::wire::RequestIdentifier());
    std::vector<zmq::message_t> m;
    m.push_back(d::header_frame(d::Command::request));
    m.push_back(d::object_id_frame(target));
    m.push_back(d::u64_frame(rid));
    m.emplace_back(fb.GetBufferPointer(), fb.GetSize());
    for (size_t i = 0; i < m.size(); ++i)
      sock.send(m[i], i + 1 < m.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  };
  // The replies by request id: [hdr][request id][Reply].
  auto read_reply = [&]() -> std::pair<uint64_t, std::string> {
    for (;;) {
      std::vector<zmq::message_t> m;
      zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, 10s) == 0) return {0, "no reply"};
      do {
        m.emplace_back();
        (void)sock.recv(m.back());
      } while (m.back().more());
      if (m.size() != 3) continue;  // not a reply
      d::AlignedScratch scratch;
      const auto* r = d::verified_reply(m[2], patro::Limits{}, scratch);
      if (r == nullptr) return {0, "bad reply"};
      std::string what = r->status() == patro::wire::Status::Ok ? "ok" : "error";
      if (r->results() && r->results()->size() > 0) {
        const auto* v = r->results()->Get(0);
        if (v->kind() == patro::wire::Kind::Int) what += " " + std::to_string(v->i());
        if (v->kind() == patro::wire::Kind::Ref) what += " ref";
      }
      if (r->error_text()) what += " " + r->error_text()->str();
      return {r->request_id(), what};
    }
  };
  journal.set_open(false);
  request(1, 0, "make", id);
  request(2, 1, "value", patro::ObjectId{id.server, 0});
  request(2, 1, "value", patro::ObjectId{id.server, 0});  // a resent copy
  // A call naming itself or a later request is refused (no waiting for oneself).
  request(3, 3, "value", patro::ObjectId{id.server, 0});
  std::this_thread::sleep_for(100ms);
  journal.set_open(true);
  std::map<uint64_t, std::vector<std::string>> got;
  for (int i = 0; i < 3; ++i) {
    auto [rid, what] = read_reply();
    got[rid].push_back(what);
  }
  CHECK(got[1] == std::vector<std::string>{"ok ref"});
  CHECK(got[2] == std::vector<std::string>{"ok 3"});  // answered once: to the latest copy
  REQUIRE(got[3].size() == 1);
  CHECK(got[3][0].rfind("error", 0) == 0);
  CHECK(journal.take() == std::vector<std::string>{"make 3", "value 3"});
  // A copy sent after it was answered gets the same answer from the cache, and does not run.
  request(2, 1, "value", patro::ObjectId{id.server, 0});
  const auto again = read_reply();
  CHECK(again.first == 2);
  CHECK(again.second == "ok 3");
  CHECK(journal.take().empty());
}

namespace {
patro::Task<Value> await_within(Future<Value> f, std::chrono::milliseconds limit) {
  co_return co_await patro::with_deadline(f, limit);
}
}  // namespace

TEST_CASE("co_await with_deadline: past it the call is cancelled and the coroutine gets timeout") {
  Served s;
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(name_of(route));
    Proxy maker = s.connect(route);
    // In time: the answer as usual.
    CHECK(patro::run_sync(await_within(maker.async_call("number"), 10s)) == 42);
    journal.take();
    // A call held behind another on its lane: the deadline passes while the gate is shut, the
    // coroutine gets timeout then (the gate still shut), and the call never runs.
    const int64_t made = maker.call("made").as<int64_t>();
    journal.set_open(false);
    Future<Value> blocker = maker.async_call("make", 1);
    std::optional<Errc> got;
    try {
      (void)patro::run_sync(await_within(maker.async_call("make", 2), 200ms));
    } catch (const patro::Error& e) {
      got = e.code();
    }
    CHECK(got == Errc::timeout);
    {
      std::lock_guard<std::mutex> lock(journal.mu);
      CHECK_FALSE(journal.open);  // it came while the first call still waited for the gate
    }
    // The CANCEL left with the timeout; it needs to reach the lane (through the broker: one hop
    // more) before the gate opens and the lane reads ahead. Not a timing assertion: a bound.
    std::this_thread::sleep_for(300ms);
    journal.set_open(true);
    CHECK(blocker.get().is_reference());
    CHECK(maker.call("made") == made + 1);  // make 2 never ran
    CHECK(journal.take() == std::vector<std::string>{"make 1"});
    // The same without a coroutine: Future::expire_after.
    journal.set_open(false);
    Future<Value> blocker2 = maker.async_call("make", 3);
    Future<Value> late = maker.async_call("make", 4);
    CHECK(late.expire_after(100ms));
    CHECK(error_of(late)->code() == Errc::timeout);
    std::this_thread::sleep_for(300ms);  // as above: the CANCEL reaches the lane
    journal.set_open(true);
    CHECK(blocker2.get().is_reference());
    CHECK(maker.call("made").as<int64_t>() == made + 2);
    CHECK(journal.take() == std::vector<std::string>{"make 3"});
    CHECK_FALSE(blocker2.expire_after(1ms));  // answered: nothing changes
  }
}
