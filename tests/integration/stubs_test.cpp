// Typed stubs and isa across processes: a broker, the counter example's server, and
// this process calling the served Counter through the generated demo::CounterProxy (typed
// arguments and results), then the example's own client process.
#include <doctest/doctest.h>

#include <string>
#include <type_traits>
#include <vector>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "counter_stub.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

// The results are the C++ types counter.patro names, not patro::Value.
static_assert(std::is_same_v<decltype(std::declval<demo::CounterProxy>().add(1)), int64_t>);
static_assert(std::is_same_v<decltype(std::declval<demo::CounterProxy>().name()), std::string>);
static_assert(std::is_same_v<decltype(std::declval<demo::CounterProxy>().mean()), double>);
static_assert(std::is_same_v<decltype(std::declval<demo::CounterProxy>().empty()), bool>);
static_assert(std::is_same_v<decltype(std::declval<demo::CounterProxy>().reset()), void>);
static_assert(
    std::is_same_v<decltype(std::declval<demo::CounterProxy>().history()), std::vector<int64_t>>);
static_assert(
    std::is_same_v<decltype(std::declval<demo::CounterProxy>().snapshot()), patro::Bytes>);

TEST_CASE("a typed stub calls a Counter served by another process, and isa answers") {
  TempDir dir;
  BrokerProcess broker(dir);
  const std::string conf = dir.file("counter.conf");
  Process server({program("PATRO_EXAMPLE_COUNTER_SERVER"), conf, broker.back},
                 dir.file("server.out"));
  REQUIRE(wait_for_file(conf, 10s));
  {
    std::vector<patro::Proxy> ps = patro::get_proxies(conf);
    REQUIRE(ps.size() == 2);

    SUBCASE("typed calls") {
      const auto counter = demo::CounterProxy::checked(ps[0]);
      CHECK(counter.name() == "clicks");
      CHECK(counter.empty());
      CHECK(counter.add(5) == 5);
      CHECK(counter.add(int64_t{-2}) == 3);
      CHECK(counter.add_all({10, 20}) == 33);
      CHECK(counter.get() == 33);
      CHECK(counter.history() == std::vector<int64_t>{5, -2, 10, 20});
      CHECK(counter.mean() == doctest::Approx(33.0 / 4));
      CHECK(!counter.empty());
      counter.rename("taps");
      CHECK(counter.name() == "taps");
      const patro::Bytes snap = counter.snapshot();
      REQUIRE(snap.data.size() == 8);
      CHECK(static_cast<unsigned char>(snap.data[0]) == 33);
      const patro::Value d = counter.describe();
      CHECK(d["name"] == "taps");
      CHECK(d["total"] == 33);
      CHECK(d["count"] == 4);
      counter.reset();
      CHECK(counter.get() == 0);
      CHECK(counter.history().empty());
      // Untyped calls reach the same methods; an array argument of the wrong element type is an
      // error naming the method and the argument (the server's generated registration).
      CHECK(ps[0].call("add", 4).as<int64_t>() == 4);
      try {
        ps[0].call("add_all", patro::Value::array({1, "two"}));
        FAIL("add_all accepted a string element");
      } catch (const patro::Error& e) {
        CHECK(e.code() == patro::Errc::invalid_argument);
        CHECK(std::string(e.what()).find("Counter::add_all: argument 0") != std::string::npos);
      }
      CHECK(counter.get() == 4);
    }

    SUBCASE("isa through proxies") {
      CHECK(patro::isa(ps[0], "Counter"));
      CHECK(patro::isa(ps[0], demo::CounterProxy::class_name));
      CHECK(!patro::isa(ps[0], "Counte"));
      CHECK(!patro::isa(ps[0], "HASH"));
      CHECK(!patro::isa(ps[0], ""));
      CHECK(patro::can(ps[0], "add"));  // can and isa side by side, as in Perl
      // Not served objects: a container, an element holding a plain value, a missing element.
      CHECK(patro::ref(ps[1]) == "HASH");
      CHECK(!patro::isa(ps[1], "HASH"));
      CHECK(!patro::isa(ps[1], "Counter"));
      CHECK(!patro::isa(ps[1]["total"], "Counter"));
      CHECK(!patro::isa(ps[1]["missing"], "Counter"));
      // checked() asks isa, so a hash is refused before any call.
      try {
        demo::CounterProxy::checked(ps[1]);
        FAIL("a hash passed as a Counter");
      } catch (const patro::Error& e) {
        CHECK(e.code() == patro::Errc::type_mismatch);
        CHECK(std::string(e.what()).find("HASH, not a Counter") != std::string::npos);
      }
      // The unchecked constructor makes no round trip: the first call says what is wrong.
      const demo::CounterProxy wrong(ps[1]);
      CHECK_THROWS_AS(wrong.get(), patro::Error);
    }
  }

  SUBCASE("the example client") {
    Process client({program("PATRO_EXAMPLE_COUNTER_CLIENT"), conf}, dir.file("client.out"));
    CHECK(client.wait(60s) == 0);
    const std::string out = read_file(dir.file("client.out"));
    INFO(out);
    CHECK(out.find("isa Counter: yes") != std::string::npos);
    CHECK(out.find("add(5) = 5") != std::string::npos);
    CHECK(out.find("add_all({1, 2, 3}) = 11") != std::string::npos);
    CHECK(out.find("history: 5,1,2,3") != std::string::npos);
    CHECK(out.find("mean: 2.75") != std::string::npos);
    CHECK(out.find("get = 11") != std::string::npos);
    CHECK(out.find("not a Counter: ") != std::string::npos);
  }
  CHECK(server.stop() == 0);
  CHECK(broker.proc->stop() == 0);
}
