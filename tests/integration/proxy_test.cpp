// Proxies against a server in this process (real TCP sockets through the embedded broker).
#include <doctest/doctest.h>

#include <thread>

#include <patro/patro.hpp>

#include "../support/expect.hpp"

using patro::Errc;
using patro::Proxy;
using patro::Value;

using patro::test::error_of;

namespace {

patro::ServerOptions fast_options() {
  patro::ServerOptions o;
  o.heartbeat.interval = std::chrono::milliseconds(100);
  o.heartbeat.liveness = 10;
  o.threads = 2;
  return o;
}

struct Served {
  patro::Hash h{{"abc", 123}, {"def", patro::Array{456, patro::Hash{{"ghi", "jkl"}}, "mno"}}};
  patro::Array a{1, 2, 3, 4, 5};
  patro::Scalar s{7};
  patro::Config cfg = patro::patronize(fast_options(), h, a, s, patro::named("the-array", a));
  std::vector<Proxy> ps = patro::get_proxies(cfg);
};

}  // namespace

TEST_CASE("the README's hash example") {
  Served t;
  Proxy p = t.ps.at(0);
  CHECK(p["abc"].get() == 123);
  p["def"][2] = "pqr";
  CHECK(t.h.get("def").as<patro::Array>().get(2) == "pqr");  // the server sees it
  CHECK(p["def"][1]["ghi"].erase() == "jkl");
  CHECK_FALSE(p["def"][1]["ghi"].exists());
  CHECK(p["nope"].get().is_null());  // a missing key reads as null (Perl's undef)
  CHECK(patro::ref(p) == "HASH");
  CHECK(patro::reftype(p["def"]) == "ARRAY");
  CHECK(patro::ref(p["abc"]).empty());
  t.h.set("abc", 124);  // and clients see the server's changes
  CHECK(p["abc"].get() == 124);
}

TEST_CASE("a nested container comes back as a reference that becomes a proxy") {
  Served t;
  Proxy p = t.ps.at(0);
  Value v = p["def"].get();
  REQUIRE(v.is_reference());
  Proxy def = v;
  CHECK(def.size() == 3);
  def.push("new");
  CHECK(t.h.get("def").as<patro::Array>().size() == 4);
  CHECK(def[-1].get() == "new");
  Proxy inner = def[1].get();
  inner["x"] = 9;
  CHECK(p["def"][1]["x"].get() == 9);
}

TEST_CASE("storing a proxy stores the server's own object, not a copy") {
  Served t;
  Proxy p = t.ps.at(0);
  p["alias"] = p["def"];  // an element proxy: what is stored there
  p["arr"] = t.ps.at(1);  // a top-level object
  t.a.push(6);
  CHECK(p["arr"].size() == 6);
  CHECK(t.h.get("alias").as<patro::Array>().node() == t.h.get("def").as<patro::Array>().node());
  Proxy rebound = t.ps.at(0);
  rebound = t.ps.at(2);  // assigning to a named proxy rebinds it
  CHECK(rebound.get() == 7);
  CHECK(p.size() == 4);  // and stored nothing
}

TEST_CASE("writing below a missing key autovivifies, as Perl does") {
  Served t;
  Proxy p = t.ps.at(0);
  p["x"]["y"]["z"] = 1;
  p["list"][2] = "c";
  p["q"].push(1, 2);
  CHECK(p["x"]["y"]["z"].get() == 1);
  CHECK(patro::reftype(p["list"]) == "ARRAY");
  CHECK(p["list"].size() == 3);
  CHECK(p["list"][0].get().is_null());
  CHECK(p["q"].size() == 2);
  CHECK(p["missing"]["deeper"].get().is_null());  // reading does not autovivify
  CHECK_FALSE(p["missing"].exists());
}

TEST_CASE("array operations with Perl's semantics") {
  Served t;
  Proxy a = t.ps.at(1);
  CHECK(a.size() == 5);
  CHECK(a[-1].get() == 5);
  CHECK(a[-5].get() == 1);
  CHECK(a[-6].get().is_null());
  CHECK(a.push(6, 7) == 7);
  CHECK(a.pop() == 7);
  CHECK(a.shift() == 1);
  CHECK(a.unshift(-1, 0) == 7);
  CHECK(a[0].get() == -1);
  // [-1, 0, 2, 3, 4, 5, 6]
  auto removed = a.splice(1, 2, {Value("a"), Value("b"), Value("c")});
  CHECK(removed == std::vector<Value>{0, 2});
  CHECK(a.size() == 8);  // [-1, a, b, c, 3, 4, 5, 6]
  CHECK(a.splice(-2) == std::vector<Value>{5, 6});
  CHECK(a.splice(1, -3) == std::vector<Value>{"a", "b"});  // leaves 3 at the end
  CHECK(a.splice(100, 1, {Value("end")}).empty());         // past the end: appends
  CHECK(a[-1].get() == "end");
  CHECK(a.splice(0, 100).size() == 5);  // length past the end: to the end
  CHECK(a.size() == 0);
  CHECK(a.pop().is_null());
  a.resize(3);
  CHECK(a.size() == 3);
  a[1] = "x";
  CHECK(a.keys() == std::vector<Value>{0, 1, 2});
  CHECK(a.values() == std::vector<Value>{nullptr, "x", nullptr});
  CHECK(a[2].erase().is_null());
  CHECK(a.size() == 2);  // deleting the last element shrinks, as Perl's delete
  a.clear();
  CHECK(a.size() == 0);
  CHECK(error_of([&] { a.splice(-1); }).code() == Errc::index_out_of_range);
}

TEST_CASE("hash operations") {
  Served t;
  Proxy p = t.ps.at(0);
  CHECK(p.keys() == std::vector<Value>{"abc", "def"});
  CHECK(p.size() == 2);
  CHECK(p["abc"].exists());
  CHECK(p["n"].add(5) == 5);
  CHECK(p["n"].add(2.5) == 7.5);
  p.clear();
  CHECK(p.size() == 0);
  Proxy s = t.ps.at(2);
  CHECK(s.get() == 7);
  s = Value(8);
  CHECK(t.s.get() == 8);
  CHECK(s.add(1) == 9);
}

TEST_CASE("get_proxy finds a name in the broker's registry") {
  Served t;
  Proxy p = patro::get_proxy(t.cfg.brokers().at(0), "the-array");
  CHECK(p.size() == 5);
  auto e = error_of([&] { (void)patro::get_proxy(t.cfg.brokers().at(0), "no-such-name"); });
  CHECK(e.code() == Errc::not_found);
  CHECK(std::string(e.what()).find("no-such-name") != std::string::npos);
}

TEST_CASE("type mismatches are clear errors") {
  Served t;
  Proxy p = t.ps.at(0);
  auto e = error_of([&] { (void)p["abc"]["x"].get(); });  // indexing into an integer
  CHECK(e.code() == Errc::type_mismatch);
  CHECK(std::string(e.what()).find("{abc}") != std::string::npos);
  CHECK(error_of([&] { p.push(1); }).code() == Errc::type_mismatch);  // pushing onto a hash
  CHECK(error_of([&] { (void)p[0].get(); }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { (void)t.ps.at(1)["k"].get(); }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { p["abc"]["x"] = 1; }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { p["abc"].add("text"); }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { (void)t.ps.at(2)["k"].get(); }).code() == Errc::type_mismatch);
  // The connection keeps working after errors.
  CHECK(p["abc"].get() == 123);
}

TEST_CASE("an index out of range on write where Perl would not extend") {
  Served t;
  Proxy a = t.ps.at(1);
  auto e = error_of([&] { a[-6] = 1; });
  CHECK(e.code() == Errc::index_out_of_range);
  CHECK(std::string(e.what()).find("-6") != std::string::npos);
  a[7] = 1;  // Perl extends for a positive index
  CHECK(a.size() == 8);
  CHECK(error_of([&] { a[int64_t{1} << 40] = 1; }).code() == Errc::index_out_of_range);
}

TEST_CASE("an unknown object id") {
  Served t;
  // The right server, an object it does not have: the server says so.
  Proxy ghost(t.ps.at(0).connection(), patro::ObjectId{t.ps.at(0).id().server, 12345});
  auto e = error_of([&] { (void)ghost.get(); });
  CHECK(e.code() == Errc::unknown_object);
  // A server that is not registered: the broker says so.
  Proxy nowhere(t.ps.at(0).connection(), patro::ObjectId{42, 42});
  CHECK(error_of([&] { (void)nowhere.get(); }).code() == Errc::server_unavailable);
  CHECK(t.ps.at(0)["abc"].get() == 123);
}

TEST_CASE("a request over the size limit is refused before it is sent") {
  Served t;
  patro::ClientOptions opts;
  opts.limits.max_message_size = 4096;
  auto ps = patro::get_proxies(t.cfg, opts);
  auto e = error_of([&] { ps.at(0)["big"] = std::string(10000, 'x'); });
  CHECK(e.code() == Errc::message_too_large);
  CHECK_FALSE(ps.at(0)["big"].exists());
}

TEST_CASE("many threads share one connection") {
  Served t;
  Proxy a = t.ps.at(1);
  std::vector<std::thread> ts;
  for (int k = 0; k < 4; ++k)
    ts.emplace_back([&, k] {
      for (int i = 0; i < 200; ++i) a.push(k * 1000 + i);
    });
  for (auto& th : ts) th.join();
  CHECK(a.size() == 805);
}
