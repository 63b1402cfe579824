// The classes of Perl Patro's documented examples (Foofie, Barfie) and a few more, registered
// with patro::Class for the tests and their helper programs.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <patro/patro.hpp>

namespace patro::test {

// Patro's Foofie: blerp gives (5, 6, 7, $$self) in list context and ++$$self in scalar context.
struct Foofie {
  int64_t v;
};
// A base that Foofie's registration names (nothing served is of it alone).
struct Fooish {};

// Patro's Barfie: '+=' adds to every value; prod multiplies them.
struct Barfie {
  std::vector<int64_t> vals;
  int64_t prod() const {
    int64_t z = 1;
    for (int64_t v : vals) z *= v;
    return z;
  }
};

// A class with every kind of operator, conversion and parameter.
struct Money {
  int64_t cents = 0;
  int64_t scale(int64_t factor) {
    cents *= factor;
    return cents;
  }
};

struct Counter {
  int64_t n = 0;
};

/// A custom exception type, to see it travel by name.
struct Overdrawn : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline int64_t cents_of(const Value& v) {
  if (auto m = object_cast<Money>(v)) return m->cents;
  return v.as<int64_t>();
}

inline void register_example_classes() {
  Class<Foofie>("Foofie")
      .method("blerp",
              [](Foofie& f, Context ctx) -> Value {
                if (ctx.list()) return List{5, 6, 7, f.v};
                return ++f.v;
              })
      .property("v", &Foofie::v)
      .base("Fooish");  // isa through two levels: Foofie, Fooish, Thingish
  Class<Fooish>("Fooish").base("Thingish");

  Class<Barfie>("Barfie")
      .method("prod", &Barfie::prod)
      .op("+=",
          [](Barfie& b, int64_t n) -> Barfie& {
            for (auto& v : b.vals) v += n;
            return b;
          })
      .method("absorb",
              [](Barfie& b, const Barfie& other) {
                b.vals.insert(b.vals.end(), other.vals.begin(), other.vals.end());
                return static_cast<int64_t>(b.vals.size());
              })
      .method("twin", [](const Barfie& b) { return Barfie{b.vals}; })
      .method("size", [](const Barfie& b) { return static_cast<int64_t>(b.vals.size()); });

  Class<Money>("Money")
      .method("scale", &Money::scale)
      .read_only_method("cents", [](const Money& m) { return m.cents; })
      .method("double_it",
              [](Money&, Value& x) {
                x = x.as<int64_t>() * 2;
                return true;
              })
      .method("sum",
              [](Money& m, Args& a) {
                int64_t s = m.cents;
                for (const Value& v : a) s += v.as<int64_t>();
                return s;
              })
      .method("withdraw",
              [](Money& m, int64_t c) {
                if (c > m.cents) throw Overdrawn("overdrawn by " + std::to_string(c - m.cents));
                m.cents -= c;
                return m.cents;
              })
      .method("fail_errno",
              [](Money&) -> int64_t {
                throw std::system_error(ENOSPC, std::generic_category(), "disk full");
              })
      .method("merge",
              [](Money& m, std::shared_ptr<Money> other) {
                m.cents += other->cents;
                return m.cents;
              })
      .method("self", [](Money& m) -> Money& { return m; })
      .op("+", [](const Money& m, const Value& o) { return Money{m.cents + cents_of(o)}; })
      .op("-",
          [](const Money& m, const Value& o, Context ctx) -> int64_t {
            return ctx.swapped() ? cents_of(o) - m.cents : m.cents - cents_of(o);
          })
      .op("*", [](const Money& m, int64_t k) { return Money{m.cents * k}; })
      .op("/",
          [](const Money& m, int64_t k) {
            if (k == 0) throw std::domain_error("Illegal division by zero");
            return m.cents / k;
          })
      .op("%",
          [](const Money& m, int64_t k) {
            if (k == 0) throw std::domain_error("Illegal modulus zero");
            return m.cents % k;
          })
      .op("-=", [](Money& m, int64_t c) { m.cents -= c; })
      .op("*=", [](Money& m, int64_t k) { m.cents *= k; })
      .op("/=", [](Money& m, int64_t k) { m.cents /= k; })
      .op("%=", [](Money& m, int64_t k) { m.cents %= k; })
      .op("==", [](const Money& m, const Value& o) { return m.cents == cents_of(o); })
      .op("!=", [](const Money& m, const Value& o) { return m.cents != cents_of(o); })
      .op("<",
          [](const Money& m, const Value& o, Context ctx) {
            return ctx.swapped() ? cents_of(o) < m.cents : m.cents < cents_of(o);
          })
      .op("neg", [](const Money& m) { return Money{-m.cents}; })
      .to_string([](const Money& m) {
        return "$" + std::to_string(m.cents / 100) + "." + (m.cents % 100 < 10 ? "0" : "") +
               std::to_string(m.cents % 100);
      })
      .to_number([](const Money& m) { return static_cast<double>(m.cents) / 100.0; })
      .to_bool([](const Money& m) { return m.cents != 0; })
      .property("cents", &Money::cents);

  Class<Counter>("Counter")
      .method("inc", [](Counter& c) { return ++c.n; })
      .method("value", [](const Counter& c) { return c.n; });
}

/// The dispatch table of Patro's documentation.
inline Hash dispatch_table() {
  return Hash{
      {"f1", Code([](int64_t a, int64_t b) { return a + b; })},
      {"f2", Code([](int64_t a, int64_t b) { return a * b; })},
      {"f3", Code([](Args& a) -> Value {
         const int64_t d = a.size() > 1 && a[1].as<int64_t>() != 0 ? a[1].as<int64_t>() : 1;
         return a[0].as<int64_t>() / d;
       })},
      {"g1", Code([](Args& a) -> Value {
         a[0] = a[0].as<int64_t>() + a[1].as<int64_t>();
         return 18;
       })},
  };
}

/// A Registry with a Counter factory and a hostname function (Object::Remote's examples).
inline Registry example_registry() {
  Registry r;
  r.factory("Counter", [](Args& a) {
    auto c = std::make_shared<Counter>();
    if (!a.empty()) c->n = a[0].as<int64_t>();
    return c;
  });
  r.function("hostname", Code([]() {
               char buf[256] = {};
               ::gethostname(buf, sizeof buf - 1);
               return std::string(buf);
             }));
  return r;
}

}  // namespace patro::test
