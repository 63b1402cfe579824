// A server for multi-process tests. Serves, in this order:
//   0: the hash of DESIGN.md, 1: an empty array (also named "jobs"), 2: a hash {"n": 0}
// and writes its config to CONFIG. Runs until SIGTERM/SIGINT.
//
//   patro-test-server CONFIG [--broker ENDPOINT] [--heartbeat-ms N] [--liveness N] [--threads N]
//                            [--name NAME] [--steal 0|1]
#include <cstdio>
#include <cstdlib>
#include <string>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [options]\n", argv[0]);
    return 2;
  }
  patro::ServerOptions opts;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--broker")
      opts.broker = argv[i + 1];
    else if (a == "--heartbeat-ms")
      opts.heartbeat.interval = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    else if (a == "--liveness")
      opts.heartbeat.liveness = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (a == "--threads")
      opts.threads = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (a == "--name")
      opts.name = argv[i + 1];
    else if (a == "--steal")
      opts.steal_lock_ok = std::string(argv[i + 1]) == "1";
    else {
      std::fprintf(stderr, "bad option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    auto h =
        patro::Hash{{"abc", 123}, {"def", patro::Array{456, patro::Hash{{"ghi", "jkl"}}, "mno"}}};
    patro::Array jobs;
    patro::Hash counter{{"n", 0}};
    auto cfg = patro::patronize(opts, h, patro::named("jobs", jobs), counter);
    cfg.to_file(argv[1]);
    signals.wait();
    cfg.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
