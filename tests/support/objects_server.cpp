// A server of Perl Patro's documented examples, for multi-process tests. Serves, in this order:
//   0: Foofie(17)   1: Barfie(2, 5)   2: the code reference sub { $_[0] + 42 }
//   3: the dispatch table   4: the log file LOGFILE opened with ">>"   5: a patro::Registry
// writes its config to CONFIG, and runs until SIGTERM/SIGINT; then prints what its objects hold.
//
//   patro-test-objects-server CONFIG LOGFILE [--broker ENDPOINT] [--heartbeat-ms N] [--threads N]
#include <cstdio>
#include <cstdlib>
#include <string>

#include <patro/patro.hpp>

#include "example_classes.hpp"

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CONFIG LOGFILE [options]\n", argv[0]);
    return 2;
  }
  patro::ServerOptions opts;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--broker")
      opts.broker = argv[i + 1];
    else if (a == "--heartbeat-ms")
      opts.heartbeat.interval = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    else if (a == "--threads")
      opts.threads = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "bad option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    patro::test::register_example_classes();
    auto foofie = std::make_shared<patro::test::Foofie>(patro::test::Foofie{17});
    auto barfie = std::make_shared<patro::test::Barfie>(patro::test::Barfie{{2, 5}});
    patro::Code foo = [](int64_t x) { return x + 42; };
    auto log = patro::FileHandle::open(argv[2], ">>");
    auto cfg = patro::patronize(opts, foofie, barfie, foo, patro::test::dispatch_table(), log,
                                patro::test::example_registry());
    cfg.to_file(argv[1]);
    signals.wait();
    cfg.stop();
    std::printf("foofie=%lld barfie.prod=%lld\n", static_cast<long long>(foofie->v),
                static_cast<long long>(barfie->prod()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "objects-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
