#include <doctest/doctest.h>

#include <thread>

#include <patro/patro.hpp>

using patro::Array;
using patro::Hash;
using patro::Scalar;
using patro::Value;

TEST_CASE("served containers have reference semantics") {
  Hash h{{"a", 1}};
  Hash copy = h;
  copy.set("b", 2);
  CHECK(h.size() == 2);
  Array inner{1, 2};
  Hash outer{{"list", inner}};
  inner.push(3);
  CHECK(outer.get("list").as<Array>().size() == 3);
}

TEST_CASE("copied values stored in a served container become served containers") {
  Hash h;
  h.set("list", Value::array({1, Value::hash({{"x", 1}})}));
  Array a = h.get("list").as<Array>();
  CHECK(a.size() == 2);
  CHECK(a.get(1).as<Hash>().get("x") == 1);
}

TEST_CASE("array operations follow Perl") {
  Array a{1, 2, 3};
  CHECK(a.get(-1) == 3);
  CHECK(a.get(5).is_null());
  a.set(5, "x");  // extends with nulls
  CHECK(a.size() == 6);
  CHECK(a.get(4).is_null());
  CHECK_THROWS_AS(a.set(-10, 1), patro::Error);
  CHECK(a.pop() == "x");
  CHECK(a.shift() == 1);
  a.unshift(0);
  CHECK(a.get(0) == 0);
  Array empty;
  CHECK(empty.pop().is_null());
}

TEST_CASE("scalars and hashes add atomically") {
  Scalar s;
  Hash h;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        s.add(1);
        h.add("n", 2);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(s.get() == 4000);
  CHECK(h.get("n") == 8000);
  CHECK_THROWS_AS(Scalar("text").add(1), patro::Error);
}
