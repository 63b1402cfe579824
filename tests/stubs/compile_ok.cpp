// The control for compile_fail.cpp: correct calls through the typed stub, compiled with the same
// command (tests/stubs/compile_check.py), must compile.
#include "counter_stub.hpp"

int64_t use(const demo::CounterProxy& counter) {
  std::string name = counter.name();
  counter.rename(name + "!");
  counter.rename("taps");
  const int n = 7;
  int64_t total = counter.add(n) + counter.add(int64_t{5}) + counter.get();
  double mean = counter.mean();
  std::vector<int64_t> history = counter.history();
  total += counter.add_all(history) + counter.add_all({1, 2, 3});
  patro::Bytes bytes = counter.snapshot();
  patro::Value any = counter.describe();
  counter.reset();
  return total + static_cast<int64_t>(mean) + (counter.empty() ? 1 : 0) +
         static_cast<int64_t>(bytes.data.size() + any.size());
}
