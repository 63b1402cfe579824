// Issue 15, idiomatic C++: local values are copied to servers (Perl Patro's push @$proxy, [...]),
// range-for over remote arrays and hashes in pages, items() and copy(). Broker, server and this
// client each in their own process; round trips are counted by the broker.
#include <doctest/doctest.h>

#include <map>
#include <string>
#include <vector>

#include <patro/patro.hpp>

#include "../support/expect.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::Errc;
using patro::Proxy;
using patro::Value;
using patro::test::BrokerProcess;
using patro::test::error_of;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

patro::ClientOptions fast_client(patro::Route route = patro::Route::broker) {
  patro::ClientOptions o;
  o.route = route;  // through the broker, which counts the round trips
  o.heartbeat.interval = 100ms;
  o.call_timeout = 60s;
  return o;
}

// A broker and a patro-test-server in processes of their own. The server serves 0: the README's
// hash {"abc": 123, "def": [456, {"ghi": "jkl"}, "mno"]}, 1: an empty array, 2: {"n": 0},
// 3: a Slow object.
struct Remote {
  TempDir dir;
  BrokerProcess broker{dir};
  std::unique_ptr<Process> server;
  std::vector<Proxy> ps;

  Remote() {
    server = std::make_unique<Process>(
        std::vector<std::string>{program("PATRO_TEST_SERVER"), dir.file("server.conf"), "--broker",
                                 broker.back, "--heartbeat-ms", "100", "--liveness", "20"});
    REQUIRE(wait_for_file(dir.file("server.conf"), 10s));
    ps = connect();
  }
  /// Proxies on a connection of their own (another client).
  std::vector<Proxy> connect(patro::Route route = patro::Route::broker) const {
    return patro::get_proxies(dir.file("server.conf"), fast_client(route));
  }
  /// Requests the broker has forwarded to servers.
  uint64_t routed() const { return patro::broker_info(broker.front, fast_client()).stats.routed; }
};

}  // namespace

TEST_CASE("a local patro::Array pushed or stored lands as a server container") {
  Remote r;
  Proxy design = r.ps.at(0), jobs = r.ps.at(1);

  CHECK(jobs.push(patro::Array{15, 16, 17}) == 1);  // Perl: push @$proxy, [15, 16, 17]
  CHECK(patro::ref(jobs[-1]) == "ARRAY");
  CHECK(jobs[-1][0].get() == 15);
  CHECK(jobs[0].size() == 3);

  // Nested locals inside locals, stored through an element proxy.
  design["k"] = patro::Hash{{"a", patro::Array{1, patro::Hash{{"deep", "x"}}}}, {"s", "t"}};
  CHECK(patro::ref(design["k"]["a"][1]) == "HASH");
  CHECK(design["k"]["a"][1]["deep"].get() == "x");
  // A local scalar reference becomes a served scalar holding a copy.
  design["sc"] = patro::Scalar(patro::Array{7, 8});
  CHECK(patro::ref(design["sc"]) == "SCALAR");
  Proxy sc = design["sc"].get();
  CHECK(Proxy(sc.get())[1].get() == 8);

  // It is a copy: a later change to the local value does not travel.
  patro::Array local{1, 2};
  jobs.push(local);
  local.push(3);
  CHECK(jobs[-1].size() == 2);
  // A oneway push and an asynchronous one copy the same way.
  jobs.send_push(patro::Hash{{"oneway", true}});
  CHECK(patro::await_oneway(jobs, 10s) == 0);
  CHECK(jobs[-1]["oneway"].get() == true);
  CHECK(jobs.async_push(patro::Array{42}).get() == 4);
  CHECK(jobs[-1][0].get() == 42);

  // Another client (a connection of its own, on the direct path when it can) reads the server's
  // containers, and its local values are copied the same way.
  auto other = r.connect(patro::Route::automatic);
  CHECK(other.at(1)[0][2].get() == 17);
  CHECK(other.at(0)["k"]["s"].get() == "t");
  CHECK(other.at(1).push(patro::Hash{{"from", "other"}}) == 5);
  CHECK(jobs[-1]["from"].get() == "other");
}

TEST_CASE("local values that cannot be copied are refused with a clear error") {
  Remote r;
  Proxy jobs = r.ps.at(1);
  patro::Array self;
  self.push(self);  // an array that contains itself
  auto e = error_of([&] { jobs.push(self); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(std::string(e.what()).find("contains itself") != std::string::npos);
  e = error_of([&] { jobs.send_push(self); });  // refused before it enters a oneway batch
  CHECK(e.code() == Errc::invalid_argument);
  self.clear();  // the cycle is the test's own: break it, or the array is never freed

  CHECK(jobs.size() == 0);  // nothing was sent

  // A local object is not copied: the client serves it (a callback), and the server stores a
  // reference to it that any client can call.
  patro::Code code = [](int64_t a) { return a + 1; };
  CHECK(jobs.push(code) == 1);
  CHECK(patro::ref(jobs[0]) == "CODE");
  CHECK(patro::Proxy(jobs[0].get())(41) == 42);
}

TEST_CASE("range-for visits a 10,000-element remote array in 10 round trips") {
  Remote r;
  Proxy jobs = r.ps.at(1);
  std::vector<Value> items;
  for (int64_t i = 0; i < 10000; ++i) items.emplace_back(i * 3);
  jobs.splice(0, 0, items);
  REQUIRE(jobs.size() == 10000);

  const uint64_t before = r.routed();
  int64_t count = 0;
  bool in_order = true;
  for (const auto& [index, value] : jobs) {
    in_order = in_order && index == count && value == count * 3;
    ++count;
  }
  const uint64_t trips = r.routed() - before;
  MESSAGE("10,000 elements in " << trips << " round trips");
  CHECK(count == 10000);
  CHECK(in_order);
  CHECK(trips <= 10);
  CHECK(trips >= 1);

  // Values only, with a page size of one's own.
  int64_t sum = 0, seen = 0;
  for (auto it = jobs.begin(4096); it != jobs.end(); ++it) {
    sum += it->value.as<int64_t>();
    ++seen;
  }
  CHECK(seen == 10000);
  CHECK(sum == 3 * (9999 * 10000 / 2));
  // An empty or missing container iterates as empty.
  Proxy empty = r.ps.at(2)["nothing"];
  CHECK(empty.begin() == empty.end());
  for (Value v : r.ps.at(2)) CHECK(v == 0);  // {"n": 0}: its one value
}

TEST_CASE("range-for over a remote hash in pages, items() in one round trip") {
  Remote r;
  Proxy h = r.ps.at(2);
  std::map<std::string, int64_t> want{{"n", 0}};
  patro::ValueHash many;
  for (int64_t i = 0; i < 2500; ++i) {
    many["key" + std::to_string(i)] = i;
    want["key" + std::to_string(i)] = i;
  }
  h["many"] = Value(many);  // a copied hash: the server stores it as a served hash
  Proxy m = h["many"];

  uint64_t before = r.routed();
  std::map<std::string, int64_t> got;
  std::string last;
  bool sorted = true;
  for (const auto& [key, value] : m) {
    sorted = sorted && key.as<std::string>() > last;
    last = key.as<std::string>();
    got[last] = value.as<int64_t>();
  }
  CHECK(r.routed() - before <= 3);  // 2,500 keys in pages of 1,000
  CHECK(sorted);
  want.erase("n");
  CHECK(got == want);

  before = r.routed();
  auto items = r.ps.at(0).items();  // {"abc": 123, "def": [...]}
  CHECK(r.routed() - before == 1);
  REQUIRE(items.size() == 2);
  CHECK(items[0].key == "abc");
  CHECK(items[0].value == 123);
  CHECK(items[1].key == "def");
  CHECK(items[1].value.is_reference());  // shallow, as values() is
  CHECK(Proxy(items[1].value)[0].get() == 456);
}

TEST_CASE("copy() gives the values, nested, in one round trip") {
  Remote r;
  Proxy design = r.ps.at(0);
  const uint64_t before = r.routed();
  Value c = design.copy();
  CHECK(r.routed() - before == 1);
  // get() of a container: a reference (after the count: dropping it sends a release, a request
  // the broker counts too)
  CHECK(design["def"].get().is_reference());
  CHECK(c == Value::hash({{"abc", 123},
                          {"def", Value::array({456, Value::hash({{"ghi", "jkl"}}), "mno"})}}));
  CHECK(c["def"][1]["ghi"] == "jkl");
  CHECK(design["def"][1].copy() == Value::hash({{"ghi", "jkl"}}));
  CHECK(design["abc"].copy() == 123);
  CHECK(design["missing"].copy().is_null());
  // A copy is local: changing it changes nothing on the server.
  c.set("abc", 0);
  CHECK(design["abc"].get() == 123);
}

TEST_CASE("copy and paging beyond limits or of the wrong thing give clear errors") {
  Remote r;
  Proxy design = r.ps.at(0), jobs = r.ps.at(1), slow = r.ps.at(3);

  // Nested deeper than copies go (autovivified on the server by one set).
  Proxy deep = jobs;
  for (int i = 0; i < 150; ++i) deep = deep[0];
  deep = "bottom";
  auto e = error_of([&] { (void)jobs.copy(); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(std::string(e.what()).find("nested deeper") != std::string::npos);
  // A hash that contains itself.
  design["self"] = design;
  e = error_of([&] { (void)design.copy(); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(design["abc"].get() == 123);  // the server goes on

  // Bigger than a message may be (16 MiB).
  const std::string mib(1 << 20, 'x');
  for (int i = 0; i < 20; ++i) r.ps.at(2)["big"].push(mib);
  e = error_of([&] { (void)r.ps.at(2)["big"].copy(); });
  CHECK(e.code() == Errc::message_too_large);

  // Paging what is not an array or a hash.
  e = error_of([&] { (void)design["abc"].begin(); });
  CHECK(e.code() == Errc::type_mismatch);
  e = error_of([&] { (void)slow.items(); });
  CHECK(e.code() == Errc::type_mismatch);
  CHECK(std::string(e.what()).find("not an array or a hash") != std::string::npos);
  e = error_of([&] { (void)jobs.begin(0); });
  CHECK(e.code() == Errc::ok);  // 0: everything in one page
}
