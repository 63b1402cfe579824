// A client of patro-test-objects-server, for multi-process tests.
//   patro-test-objects-client examples CONFIG    runs Patro's documented examples and prints what
//                                                each gives; exits 1 if one differs from the docs
//   patro-test-objects-client print CONFIG TAG N prints N numbered lines through the log handle
#include <cstdio>
#include <cstdlib>
#include <string>

#include <patro/patro.hpp>

namespace {

int failures = 0;

void expect(const char* what, const patro::Value& got, const patro::Value& want) {
  std::printf("%s = %s\n", what, got.to_string().c_str());
  if (!(got == want)) {
    std::printf("  MISMATCH: wanted %s\n", want.to_string().c_str());
    ++failures;
  }
}

int examples(const std::string& config) {
  auto ps = patro::get_proxies(config);
  patro::Proxy foo = ps.at(0), barfie = ps.at(1), p_foo = ps.at(2), p_d = ps.at(3), ph = ps.at(4),
               conn = ps.at(5);
  // Remote method calls: my @x = $foo->blerp; my $x = $foo->blerp;
  expect("foo.blerp (list)", patro::Value(foo.call_list("blerp")),
         patro::Value::array({5, 6, 7, 17}));
  expect("foo.blerp (scalar)", foo.call("blerp"), 18);
  // Overloaded operators.
  expect("barfie.prod", barfie.call("prod"), 10);
  barfie += 4;
  expect("barfie.prod after += 4", barfie.call("prod"), 54);
  // Code references and a dispatch table.
  expect("p_foo(17)", p_foo(17), 59);
  expect("p_d{f1}(7,33)", p_d["f1"](7, 33), 40);
  expect("p_d{f3}(33,7)", p_d["f3"](33, 7), 4);
  patro::Value x = 5, y = 6;
  expect("p_d{g1}(x,y)", p_d["g1"](std::ref(x), y), 18);
  expect("x", x, 11);
  // File handles.
  expect("print", patro::Value(ph.print("A log message for the server\n")), true);
  // Object::Remote.
  patro::Proxy counter = patro::make(conn, "Counter", 41);
  expect("counter.inc", counter.call("inc"), 42);
  expect("hostname is a string",
         patro::Value(patro::function(conn, "hostname")().type() == patro::Type::string), true);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s examples|print CONFIG [TAG N]\n", argv[0]);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "examples") return examples(argv[2]);
    if (cmd == "print" && argc == 5) {
      patro::Proxy log = patro::get_proxies(argv[2]).at(4);
      const std::string tag = argv[3];
      const int n = std::atoi(argv[4]);
      // Long lines, so that an interleaving of two prints would show.
      const std::string tail(64, tag.empty() ? 'x' : tag.back());
      for (int i = 0; i < n; ++i) log.print(tag + " " + std::to_string(i) + " " + tail + "\n");
      return 0;
    }
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "objects-client: %s\n", e.what());
    return 1;
  }
  return 2;
}
