// Calls through the typed stub that must not compile (tests/stubs/compile_check.py): each line
// marked "expect-error" must be reported as an error, at that line. compile_ok.cpp, compiled
// with the same command, shows the command itself works.
#include "counter_stub.hpp"

void misuse(const demo::CounterProxy& counter) {
  counter.add("seven");                         // expect-error: a string for an int64
  counter.ad(7);                                // expect-error: no such method
  counter.add(7.5);                             // expect-error: a double for an int64
  counter.add(true);                            // expect-error: a bool for an int64
  counter.rename(42);                           // expect-error: an integer for a string
  std::string total = counter.get();            // expect-error: an int64 result is not a string
  counter.add_all(std::vector<std::string>{});  // expect-error: strings for int64[]
  counter.reset(1);                             // expect-error: reset takes no argument
}
