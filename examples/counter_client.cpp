// The typed-stub example, client side: calls the served Counter through the generated
// demo::CounterProxy (counter.patro), whose methods take and return C++ types.
//
//   patro-example-counter-client CONFIG_FILE
//
// counter.add("seven") or counter.ad(7) would not compile (tests/stubs/compile_fail.cpp).
#include <cstdio>
#include <string>
#include <vector>

#include <patro/patro.hpp>

#include "counter_stub.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CONFIG_FILE\n", argv[0]);
    return 2;
  }
  try {
    std::vector<patro::Proxy> ps = patro::get_proxies(argv[1]);
    // checked() asks the server whether the object is a Counter (patro::isa) before using it.
    const demo::CounterProxy counter = demo::CounterProxy::checked(ps.at(0));
    std::printf("isa Counter: %s\n", patro::isa(counter.proxy(), "Counter") ? "yes" : "no");
    std::printf("name: %s\n", counter.name().c_str());
    counter.reset();
    const int64_t after_add = counter.add(5);
    std::printf("add(5) = %lld\n", static_cast<long long>(after_add));
    std::printf("add_all({1, 2, 3}) = %lld\n",
                static_cast<long long>(counter.add_all(std::vector<int64_t>{1, 2, 3})));
    std::string history;
    for (int64_t n : counter.history()) history += (history.empty() ? "" : ",") + std::to_string(n);
    std::printf("history: %s\n", history.c_str());
    std::printf("mean: %.2f\n", counter.mean());
    std::printf("empty: %s\n", counter.empty() ? "yes" : "no");
    counter.rename("taps");
    std::printf("describe: %s\n", counter.describe().to_string().c_str());
    std::printf("snapshot: %zu bytes, first %d\n", counter.snapshot().data.size(),
                static_cast<int>(static_cast<unsigned char>(counter.snapshot().data.at(0))));
    std::printf("get = %lld\n", static_cast<long long>(counter.get()));
    try {
      demo::CounterProxy::checked(ps.at(1));
      std::printf("a hash passed as a Counter\n");
    } catch (const patro::Error& e) {
      std::printf("not a Counter: %s\n", e.what());
    }
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "counter-client: %s\n", e.what());
    return 1;
  }
  return 0;
}
