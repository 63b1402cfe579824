// Served objects of registered classes, callables and registries, against a server in this
// process: Patro's Foofie, Barfie, code reference and dispatch table, operators, conversions,
// properties, contexts, written-back arguments, returned objects and Object::Remote's ways in.
#include <doctest/doctest.h>

#include <unistd.h>

#include <thread>

#include <patro/patro.hpp>

#include "../support/expect.hpp"

#include "../support/example_classes.hpp"

using patro::Errc;
using patro::Proxy;
using patro::Value;
using namespace patro::test;

using patro::test::error_of;

namespace {

patro::ServerOptions fast_options() {
  patro::ServerOptions o;
  o.heartbeat.interval = std::chrono::milliseconds(100);
  o.threads = 2;
  return o;
}

int64_t cents(const std::shared_ptr<Money>& m) {
  return patro::with_lock(m, [](Money& x) { return x.cents; });
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("Patro's Foofie: blerp in list context and in scalar context") {
  register_example_classes();
  auto foofie = std::make_shared<Foofie>(Foofie{17});
  auto cfg = patro::patronize(fast_options(), foofie);
  Proxy foo = patro::get_proxies(cfg).at(0);
  CHECK(foo.call_list("blerp") == std::vector<Value>{5, 6, 7, 17});
  CHECK(foo.call("blerp") == 18);
  CHECK(patro::with_lock(foofie, [](Foofie& f) { return f.v; }) == 18);  // the server's own
  CHECK(patro::ref(foo) == "Foofie");
  CHECK(patro::reftype(foo) == "OBJECT");
}

TEST_CASE("Patro's Barfie: prod, +=, prod") {
  register_example_classes();
  auto barfie = std::make_shared<Barfie>(Barfie{{2, 5}});
  auto cfg = patro::patronize(fast_options(), barfie);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(p.call("prod") == 10);
  const auto id = p.id();
  p += 4;
  CHECK(p.id() == id);  // the same object, changed in place
  CHECK(p.call("prod") == 54);
  CHECK(patro::with_lock(barfie, [](Barfie& b) { return b.vals; }) == std::vector<int64_t>{6, 9});
}

TEST_CASE("a list result gives its last item in scalar context") {
  register_example_classes();
  patro::Code three = [](patro::Context) { return patro::List{1, 2, 3}; };
  auto cfg = patro::patronize(fast_options(), three);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(p() == 3);
  CHECK(p.call_code_list() == std::vector<Value>{1, 2, 3});
}

namespace {
struct Ping {};
struct Pong {};
}  // namespace

TEST_CASE("isa through bases that name each other ends: a cycle is looked at once") {
  patro::Class<Ping>("Ping").base("Pong");
  patro::Class<Pong>("Pong").base("Ping");
  auto cfg = patro::patronize(fast_options(), std::make_shared<Ping>());
  auto p = patro::get_proxies(cfg).at(0);
  CHECK(patro::isa(p, "Ping"));
  CHECK(patro::isa(p, "Pong"));
  CHECK_FALSE(patro::isa(p, "Elsewhere"));
  CHECK_THROWS_AS(patro::Class<Ping>("Ping").base(""), patro::Error);
}

TEST_CASE("can, isa and unknown methods behave as Perl's can, isa and method resolution") {
  register_example_classes();
  auto h = patro::Hash{{"abc", 1}, {"foo", std::make_shared<Foofie>(Foofie{2})}};
  patro::Code code = [] { return 1; };
  auto cfg = patro::patronize(fast_options(), std::make_shared<Foofie>(Foofie{1}), h, code);
  auto ps = patro::get_proxies(cfg);
  CHECK(patro::can(ps[0], "blerp"));
  CHECK_FALSE(patro::can(ps[0], "nope"));
  CHECK_FALSE(patro::can(ps[1], "blerp"));  // a HASH has no methods
  CHECK_FALSE(patro::can(ps[1]["abc"], "x"));
  // isa: the object's registered class and the bases registrations name, through two levels
  // (Foofie names Fooish, Fooish names Thingish); anything that is not a served object is false,
  // whatever name is asked.
  CHECK(patro::isa(ps[0], "Foofie"));
  CHECK(patro::isa(ps[0], "Fooish"));
  CHECK(patro::isa(ps[0], "Thingish"));
  CHECK_FALSE(patro::isa(ps[0], "Barfie"));
  CHECK_FALSE(patro::isa(ps[0], "foofie"));
  CHECK(patro::isa(ps[1]["foo"], "Foofie"));  // an object stored in a container, by path
  CHECK_FALSE(patro::isa(ps[1], "HASH"));
  CHECK_FALSE(patro::isa(ps[1]["abc"], "Foofie"));
  CHECK_FALSE(patro::isa(ps[1]["missing"], "Foofie"));
  CHECK_FALSE(patro::isa(ps[2], "CODE"));
  auto e = error_of([&] { ps[0].call("nope"); });
  CHECK(e.code() == Errc::unknown_method);
  CHECK(contains(e.what(), "\"nope\""));
  CHECK(contains(e.what(), "\"Foofie\""));
}

TEST_CASE("properties are read and written as elements") {
  register_example_classes();
  auto money = std::make_shared<Money>(Money{250});
  auto cfg = patro::patronize(fast_options(), money);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(p["cents"].get() == 250);
  p["cents"] = 300;
  CHECK(cents(money) == 300);
  CHECK(error_of([&] { p["nope"].get(); }).code() == Errc::not_found);
  CHECK(error_of([&] { p["cents"] = "lots"; }).code() == Errc::type_mismatch);
  CHECK(cents(money) == 300);
}

TEST_CASE("operators: arithmetic, compound assignment, comparison, unary, conversions") {
  register_example_classes();
  auto money = std::make_shared<Money>(Money{1050});
  auto cfg = patro::patronize(fast_options(), money);
  Proxy p = patro::get_proxies(cfg).at(0);

  // + returns a new served object: a proxy to it, never a copy.
  Proxy sum = p + 25;
  CHECK(sum.id() != p.id());
  CHECK(sum.call("cents") == 1075);
  CHECK(patro::ref(sum) == "Money");
  Proxy total = p + sum;  // a proxy operand arrives as the server's own object
  CHECK(total.call("cents") == 1050 + 1075);
  CHECK((p - 50) == 1000);
  CHECK((2000 - p) == 950);  // swapped
  CHECK(Proxy(p * 2).call("cents") == 2100);
  CHECK((p / 100) == 10);
  CHECK((p % 100) == 50);
  CHECK(p == 1050);
  CHECK_FALSE(p != 1050);
  CHECK(p < 2000);
  CHECK_FALSE(2000 < p);
  CHECK(p <= 1050);  // falls back to the number conversion: 10.5 <= 1050
  CHECK(Proxy(-p).call("cents") == -1050);
  CHECK_FALSE(!p);
  CHECK(p.to_string() == "$10.50");
  CHECK(p.to_number() == doctest::Approx(10.5));
  CHECK(p.to_bool());

  p -= 50;
  CHECK(cents(money) == 1000);
  p *= 3;
  CHECK(cents(money) == 3000);
  p /= 2;
  CHECK(cents(money) == 1500);
  p %= 1000;
  CHECK(cents(money) == 500);
  // += is not registered: + makes a new object, and the proxy names it afterwards.
  const auto before = p.id();
  p += 5;
  CHECK(p.id() != before);
  CHECK(p.call("cents") == 505);
  CHECK(cents(money) == 500);

  // What the class does not register is refused.
  auto cfg2 = patro::patronize(fast_options(), std::make_shared<Foofie>(Foofie{1}));
  Proxy foo = patro::get_proxies(cfg2).at(0);
  CHECK(error_of([&] { (void)(foo + 1); }).code() == Errc::unsupported);
  CHECK(error_of([&] { foo += 1; }).code() == Errc::unsupported);
  CHECK(error_of([&] { (void)foo.to_number(); }).code() == Errc::unsupported);
  CHECK(foo.to_string() == "Foofie=OBJECT");
  CHECK(foo.to_bool());
  const bool same = foo == foo;  // no == registered: identity, as Perl compares references
  CHECK(same);
}

TEST_CASE("Patro's code reference and dispatch table") {
  register_example_classes();
  patro::Code foo = [](int64_t x) { return x + 42; };
  auto cfg = patro::patronize(fast_options(), foo, dispatch_table());
  auto ps = patro::get_proxies(cfg);
  Proxy p_foo = ps.at(0), p_d = ps.at(1);
  CHECK(p_foo(17) == 59);
  CHECK(p_d["f1"](7, 33) == 40);
  CHECK(p_d["f2"](7, 33) == 231);
  CHECK(p_d["f3"](33, 7) == 4);
  CHECK(patro::ref(p_foo) == "CODE");
  CHECK(patro::reftype(p_d["f1"]) == "CODE");
  Value x = 5, y = 6;
  CHECK(p_d["g1"](std::ref(x), y) == 18);
  CHECK(x == 11);  // $_[0] += $_[1]
  CHECK(y == 6);
  // A callable read back from the table is a proxy too.
  Proxy f1 = p_d["f1"].get();
  CHECK(f1(1, 2) == 3);
}

TEST_CASE("arguments changed by the callee come back; the others stay") {
  register_example_classes();
  patro::Code sq = [](patro::Args& a) -> patro::Value {
    a[0] = a[0].as<int64_t>() * a[0].as<int64_t>();
    return 19;
  };
  auto money = std::make_shared<Money>(Money{1});
  auto cfg = patro::patronize(fast_options(), sq, money);
  auto ps = patro::get_proxies(cfg);
  Value x = 5;
  CHECK(ps[0](std::ref(x)) == 19);
  CHECK(x == 25);
  int64_t n = 7;  // any variable Value converts to
  ps[0](std::ref(n));
  CHECK(n == 49);
  Value c = 3;
  ps[0](std::cref(c));  // const: not written back
  CHECK(c == 3);
  Value z = 21, untouched = 8;
  CHECK(ps[1].call("double_it", std::ref(z)) == true);
  CHECK(z == 42);
  CHECK(ps[1].call("sum", 1, std::ref(untouched), 3) == 1 + 1 + 8 + 3);
  CHECK(untouched == 8);
}

TEST_CASE("returned objects and containers are proxies; proxy arguments are the server's objects") {
  register_example_classes();
  auto b1 = std::make_shared<Barfie>(Barfie{{1, 2}});
  auto b2 = std::make_shared<Barfie>(Barfie{{3}});
  auto money = std::make_shared<Money>(Money{7});
  patro::Hash h{{"b", b1}, {"list", patro::Array{1, 2}}};
  patro::Code get_h = [h]() { return h; };
  auto cfg = patro::patronize(fast_options(), b1, b2, money, h, get_h);
  auto ps = patro::get_proxies(cfg);

  CHECK(ps[0].call("absorb", ps[1]) == 3);  // arrives as the server's own Barfie
  CHECK(patro::with_lock(b1, [](Barfie& b) { return b.vals; }) == std::vector<int64_t>{1, 2, 3});
  Proxy twin = ps[0].call("twin");  // returned by value: served as a new object
  CHECK(twin.id() != ps[0].id());
  twin += 1;
  CHECK(twin.call("prod") == 2 * 3 * 4);
  CHECK(patro::with_lock(b1, [](Barfie& b) { return b.vals; }) == std::vector<int64_t>{1, 2, 3});

  Proxy self = ps[2].call("self");  // a reference to itself: the same object
  CHECK(self.id() == ps[2].id());
  Proxy in_hash = ps[3]["b"].get();  // the same object, wherever it is reached from
  CHECK(in_hash.id() == ps[0].id());
  CHECK(ps[3]["b"].call("size") == 3);

  Proxy got = ps[4]();  // a callable returning a container gives a proxy to it
  CHECK(got.id() == ps[3].id());
  CHECK(got["list"][1].get() == 2);

  CHECK(ps[2].call("merge", ps[2]) == 14);  // std::shared_ptr<Money> parameter
  auto e = error_of([&] { ps[2].call("merge", ps[0]); });
  CHECK(e.code() == Errc::type_mismatch);
  CHECK(contains(e.what(), "Money::merge"));
  CHECK(contains(e.what(), "a Money object"));
  CHECK(contains(e.what(), "a Barfie object"));
}

TEST_CASE("Object::Remote's ways in: factories and functions by name") {
  register_example_classes();
  auto cfg = patro::patronize(fast_options(), example_registry());
  Proxy conn = patro::get_proxies(cfg).at(0);
  CHECK(patro::ref(conn) == "Patro::Registry");

  Proxy counter = patro::make(conn, "Counter", 10);
  CHECK(patro::ref(counter) == "Counter");
  CHECK(counter.call("inc") == 11);
  CHECK(counter.call("inc") == 12);
  Proxy other = conn.call("new_object", "Counter");  // the connection object's member
  CHECK(other.call("inc") == 1);
  CHECK(counter.call("value") == 12);

  Proxy hostname = patro::function(conn, "hostname");
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  CHECK(hostname() == std::string(buf));
  CHECK(conn.call("remote_sub", "hostname").is_reference());

  CHECK(error_of([&] { patro::make(conn, "Nope"); }).code() == Errc::not_found);
  CHECK(error_of([&] { patro::function(conn, "nope"); }).code() == Errc::not_found);
}

TEST_CASE("a class changed while its object is served: the next call and reference see it") {
  // A served object keeps its class's entry between calls; registering more must not leave it
  // with the old one (a method added, a class renamed).
  struct Late {
    int64_t v = 4;
  };
  patro::Class<Late>("Late").method("v", [](Late& l) { return l.v; });
  auto cfg = patro::patronize(fast_options(), std::make_shared<Late>());
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(p.call("v") == 4);
  CHECK(error_of([&] { p.call("twice"); }).code() == Errc::unknown_method);
  patro::Class<Late>("Later")
      .method("twice", [](Late& l) { return 2 * l.v; })
      .method("self", [](Late& l) -> Late& { return l; });
  CHECK(p.call("twice") == 8);
  const Proxy self(p.call("self"));
  CHECK(patro::ref(self) == "Later");
  CHECK(self.call("twice") == 8);
}

TEST_CASE("serving an object of an unregistered class is refused") {
  struct Unregistered {
    int x;
  };
  auto e = error_of([] { patro::patronize(fast_options(), std::make_shared<Unregistered>()); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(contains(e.what(), "patro::Class"));
  CHECK(error_of([] { patro::Class<Counter>("Counter").op("<<", [](Counter&) {}); }).code() ==
        Errc::invalid_argument);
}

TEST_CASE("many clients call one object's methods at once: no update is lost") {
  register_example_classes();
  auto counter = std::make_shared<Counter>();
  auto cfg = patro::patronize(fast_options(), counter);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      Proxy c = patro::get_proxies(cfg).at(0);  // a connection each
      for (int i = 0; i < 250; ++i) c.call("inc");
    });
  for (auto& t : threads) t.join();
  CHECK(patro::with_lock(counter, [](Counter& c) { return c.n; }) == 1000);
}
