// A client for multi-process tests.
//   patro-test-client push CONFIG INDEX TAG N     pushes "TAG-0" .. "TAG-(N-1)" onto object INDEX
//   patro-test-client add CONFIG INDEX KEY N      N times p[KEY].add(1) on object INDEX
#include <cstdio>
#include <cstdlib>
#include <string>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s push|add CONFIG INDEX TAG|KEY N\n", argv[0]);
    return 2;
  }
  const std::string cmd = argv[1];
  const int n = std::atoi(argv[5]);
  try {
    auto ps = patro::get_proxies(argv[2]);
    patro::Proxy p = ps.at(static_cast<size_t>(std::atoi(argv[3])));
    const std::string tag = argv[4];
    for (int i = 0; i < n; ++i) {
      if (cmd == "push") {
        p.push(tag + "-" + std::to_string(i));
      } else if (cmd == "add") {
        p[tag].add(1);
      } else {
        return 2;
      }
    }
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "test-client: %s\n", e.what());
    return 1;
  }
  return 0;
}
