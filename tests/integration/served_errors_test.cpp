// Every error case of served objects: wrong argument count or type, an exception thrown by served
// code (and the next call working), calling what is not callable, a file operation on a closed
// handle, and an errno set on the server travelling back.
#include <doctest/doctest.h>

#include <cerrno>

#include <patro/patro.hpp>

#include "../support/expect.hpp"

#include "../support/example_classes.hpp"
#include "../support/process.hpp"

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

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

struct Served {
  std::shared_ptr<Money> money = std::make_shared<Money>(Money{1000});
  patro::Hash h{{"abc", 123}, {"f", patro::Code([](int64_t x) { return x; })}};
  patro::Code boom = [](patro::Args&) -> Value { throw std::logic_error("kaboom"); };
  patro::Code sq = [](patro::Args& a) -> Value { return a[0].as<int64_t>() * a[0].as<int64_t>(); };
  patro::Config cfg;
  std::vector<Proxy> ps;
  Served() {
    register_example_classes();
    cfg = patro::patronize(fast_options(), money, h, boom, sq);
    ps = patro::get_proxies(cfg);
  }
};

}  // namespace

TEST_CASE("a wrong argument count names the method and both counts") {
  Served t;
  auto e = error_of([&] { t.ps[0].call("scale", 1, 2); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(contains(e.what(), "Money::scale"));
  CHECK(contains(e.what(), "takes 1 argument"));
  CHECK(contains(e.what(), "not 2"));
  e = error_of([&] { t.ps[0].call("scale"); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(contains(e.what(), "not 0"));
  // A callable over Args& that reads past its arguments gets an error, not garbage.
  e = error_of([&] { t.ps[3](); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(contains(e.what(), "CODE"));
  CHECK(contains(e.what(), "argument 1"));
  e = error_of([&] { t.ps[1]["f"](1, 2, 3); });
  CHECK(e.code() == Errc::invalid_argument);
  CHECK(patro::with_lock(t.money, [](Money& m) { return m.cents; }) == 1000);
}

TEST_CASE("a wrong argument type names the method, the argument and both types") {
  Served t;
  auto e = error_of([&] { t.ps[0].call("scale", "ten"); });
  CHECK(e.code() == Errc::type_mismatch);
  CHECK(contains(e.what(), "Money::scale"));
  CHECK(contains(e.what(), "argument 1"));
  CHECK(contains(e.what(), "an integer"));
  CHECK(contains(e.what(), "string \"ten\""));
  e = error_of([&] { t.ps[0].call("merge", 5); });  // wants a Money object
  CHECK(e.code() == Errc::type_mismatch);
  CHECK(contains(e.what(), "a Money object"));
  CHECK(contains(e.what(), "integer"));
  e = error_of([&] { t.ps[1]["f"](2.5); });
  CHECK(e.code() == Errc::type_mismatch);
  CHECK(contains(e.what(), "CODE: argument 1 must be an integer, not number"));
  CHECK(t.ps[0].call("scale", 2) == 2000);  // and the right call still works
}

TEST_CASE("an exception in a served method reaches the client as a RemoteError; serving goes on") {
  Served t;
  try {
    t.ps[0].call("withdraw", 5000);
    FAIL("no error");
  } catch (const patro::RemoteError& e) {
    CHECK(e.code() == Errc::remote_exception);
    CHECK(e.type() == "patro::test::Overdrawn");
    CHECK(contains(e.what(), "overdrawn by 4000"));
    CHECK(e.error_number() == 0);
  }
  // The next call on the same connection works and does not replay the old error (as Perl
  // Patro 0.16 does).
  CHECK(t.ps[0].call("withdraw", 100) == 900);
  try {
    t.ps[2]();
    FAIL("no error");
  } catch (const patro::RemoteError& e) {
    CHECK(e.type() == "std::logic_error");
    CHECK(contains(e.what(), "kaboom"));
  }
  CHECK(t.ps[3](7) == 49);
  // A std::system_error carries its errno.
  try {
    t.ps[0].call("fail_errno");
    FAIL("no error");
  } catch (const patro::RemoteError& e) {
    CHECK(e.type() == "std::system_error");
    CHECK(e.error_number() == ENOSPC);
    CHECK(contains(e.what(), "disk full"));
  }
  CHECK(t.ps[0].call("cents") == 900);
}

TEST_CASE("calling something that is not callable") {
  Served t;
  auto e = error_of([&] { t.ps[1](); });  // a HASH
  CHECK(e.code() == Errc::not_callable);
  CHECK(contains(e.what(), "HASH"));
  e = error_of([&] { t.ps[1]["abc"](1); });  // a plain value
  CHECK(e.code() == Errc::not_callable);
  CHECK(contains(e.what(), "Not a CODE reference"));
  e = error_of([&] { t.ps[1]["nope"](); });  // nothing there
  CHECK(e.code() == Errc::not_callable);
  e = error_of([&] { t.ps[0](); });  // an object
  CHECK(e.code() == Errc::not_callable);
  CHECK(contains(e.what(), "Money"));
  e = error_of([&] { t.ps[1].call("keys"); });  // a method of a container
  CHECK(e.code() == Errc::not_callable);
  e = error_of([&] { t.ps[2].call("m"); });  // a method of a CODE reference
  CHECK(e.code() == Errc::unknown_method);
  CHECK(t.ps[1]["abc"].get() == 123);
}

TEST_CASE("a file operation on a closed handle, and an errno from the server") {
  TempDir dir;
  auto fh = patro::FileHandle::open(dir.file("x"), ">");
  auto cfg = patro::patronize(fast_options(), fh);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(p.print("ok\n"));
  fh.close();
  for (const auto& op : std::vector<std::function<void()>>{
           [&] { p.print("x"); }, [&] { p.readline(); }, [&] { p.seek(0); }, [&] { p.tell(); },
           [&] { p.stat(); }, [&] { p.flock(2); }}) {
    try {
      op();
      FAIL("no error");
    } catch (const patro::RemoteError& e) {
      CHECK(e.error_number() == EBADF);
      CHECK(contains(e.what(), "closed filehandle"));
    }
  }
}

TEST_CASE("bad operator and conversion requests are errors, not crashes") {
  Served t;
  CHECK(error_of([&] { (void)(t.ps[0] / 0); }).code() == Errc::remote_exception);
  CHECK(error_of([&] { (void)(t.ps[1] + 1); }).code() == Errc::unsupported);
  CHECK(error_of([&] { (void)(t.ps[1]["abc"] + 1); }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { (void)t.ps[1].to_number(); }).code() == Errc::unsupported);
  CHECK(t.ps[1].to_string() == "HASH");
  CHECK(t.ps[1].to_bool());
}
