#include <doctest/doctest.h>

#include <patro/patro.hpp>

using patro::Errc;
using patro::Type;
using patro::Value;

namespace {
template <class F>
Errc code_of(F&& f) {
  try {
    f();
  } catch (const patro::Error& e) {
    return e.code();
  }
  return Errc::ok;
}
}  // namespace

TEST_CASE("values are built from C++ values and compare with them") {
  Value i = 42, s = "x", n = nullptr, d = 1.5, b = true;
  CHECK(i == 42);
  CHECK(i.type() == Type::integer);
  CHECK(s == "x");
  CHECK(s.type() == Type::string);
  CHECK(n.is_null());
  CHECK(d == 1.5);
  CHECK(b == true);
  CHECK(Value(42) == Value(42.0));  // numbers compare by value, as Perl's ==
  CHECK_FALSE(Value(42) == Value("42"));
  CHECK(Value(uint8_t{7}) == 7);
  CHECK(Value(std::string("abc")).size() == 3);
}

TEST_CASE("as<T> converts or names both types") {
  CHECK(Value(7).as<int64_t>() == 7);
  CHECK(Value(7).as<int>() == 7);
  CHECK(Value(7).as<double>() == 7.0);
  CHECK(Value(2.0).as<int64_t>() == 2);
  CHECK(Value("t").as<std::string>() == "t");
  CHECK(code_of([] { (void)Value("x").as<int64_t>(); }) == Errc::type_mismatch);
  CHECK(code_of([] { (void)Value(2.5).as<int64_t>(); }) == Errc::type_mismatch);
  CHECK(code_of([] { (void)Value(300).as<int8_t>(); }) == Errc::type_mismatch);
  CHECK(code_of([] { (void)Value(-1).as<unsigned>(); }) == Errc::type_mismatch);
  CHECK(code_of([] { (void)Value(1).as<std::string>(); }) == Errc::type_mismatch);
  try {
    (void)Value("x").as<int64_t>();
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(std::string(e.what()).find("cannot convert string \"x\" to integer") !=
          std::string::npos);
  }
}

TEST_CASE("copied arrays and hashes index with [] and print JSON-like") {
  Value a = Value::array({1, "two", Value::hash({{"k", nullptr}})});
  CHECK(a.size() == 3);
  CHECK(a[0] == 1);
  CHECK(a[-1]["k"].is_null());
  CHECK(a[10].is_null());
  CHECK(a.to_string() == R"([1,"two",{"k":null}])");
  CHECK(Value("q\"\n").to_string() == R"("q\"\n")");
  CHECK(code_of([&] { (void)a["key"]; }) == Errc::type_mismatch);
  CHECK(code_of([] { (void)Value(5)[0]; }) == Errc::type_mismatch);
}

TEST_CASE("copied values have value semantics") {
  Value a = Value::array({1, 2});
  Value b = a;
  b.push_back(3);
  CHECK(a.size() == 2);
  CHECK(b.size() == 3);
  Value h;
  h.set("x", 1);
  Value h2 = h;
  h2.set("x", 2);
  CHECK(h["x"] == 1);
  CHECK(h2["x"] == 2);
}

TEST_CASE("object ids print and parse as 32 hex digits") {
  patro::ObjectId id{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  CHECK(id.to_hex() == "0123456789abcdeffedcba9876543210");
  CHECK(patro::ObjectId::from_hex(id.to_hex()) == id);
  CHECK(code_of([] { (void)patro::ObjectId::from_hex("12"); }) == Errc::bad_config);
  CHECK(code_of([] { (void)patro::ObjectId::from_hex(std::string(32, 'g')); }) == Errc::bad_config);
}

TEST_CASE("values encode to bytes and decode back; bad bytes are a clear error") {
  Value v = Value::array({1, "two", 3.5, nullptr, true, Value::hash({{"k", Value::array({})}}),
                          patro::Bytes{std::string("\0\1", 2)}});
  CHECK(patro::decode(patro::encode(v)) == v);
  CHECK(code_of([] { (void)patro::decode("garbage"); }) == Errc::bad_message);
  std::string truncated = patro::encode(v);
  truncated.resize(truncated.size() / 2);
  CHECK(code_of([&] { (void)patro::decode(truncated); }) == Errc::bad_message);
}
