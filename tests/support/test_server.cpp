// A server for multi-process tests. Serves, in this order:
//   0: the hash of DESIGN.md, 1: an empty array (also named "jobs"), 2: a hash {"n": 0},
//   3: a Slow object: add(ms) sleeps ms, then counts one and returns the count; count()
//   4: a Factory: make() returns a new Thing (a served object: get() -> its number), live() the
//      Things alive, rss_kb() this process's resident set; a hash {"nested": {"x": 1}} ("tree")
// and writes its config to CONFIG. Runs until SIGTERM/SIGINT.
//
//   patro-test-server CONFIG [--broker ENDPOINT]... [--heartbeat-ms N] [--liveness N] [--threads N]
//                            [--name NAME] [--steal 0|1] [--server-id N] [--lease-ms N]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include <patro/patro.hpp>

namespace {
struct Slow {
  std::atomic<int64_t> count{0};
};

std::atomic<int64_t> things_alive{0};
struct Thing {
  int64_t number;
  explicit Thing(int64_t n) : number(n) { ++things_alive; }
  ~Thing() { --things_alive; }
  Thing(const Thing&) = delete;
  Thing& operator=(const Thing&) = delete;
};
struct Factory {
  std::atomic<int64_t> made{0};
};

int64_t rss_kb() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kb = -1;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  std::fclose(f);
  return kb;
}
}  // namespace

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [options]\n", argv[0]);
    return 2;
  }
  patro::ServerOptions opts;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--broker")  // again for several brokers
      opts.brokers.push_back(argv[i + 1]);
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
    else if (a == "--server-id")
      opts.server_id = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--direct")
      opts.direct = argv[i + 1];
    else if (a == "--direct-advertise")
      opts.direct_advertise = argv[i + 1];
    else if (a == "--lease-ms")
      opts.reference_lease = std::chrono::milliseconds(std::atoi(argv[i + 1]));
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
    patro::Class<Slow>("Slow")
        .method("add",
                [](Slow& s, int64_t ms) {
                  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
                  return ++s.count;
                })
        .method("count", [](Slow& s) { return s.count.load(); });
    patro::Class<Thing>("Thing").method("get", [](Thing& t) { return t.number; });
    patro::Class<Factory>("Factory")
        .method("make", [](Factory& f) { return std::make_shared<Thing>(++f.made); })
        .method("live", [](Factory&) { return things_alive.load(); })
        .method("rss_kb", [](Factory&) { return rss_kb(); });
    patro::Hash tree{{"nested", patro::Hash{{"x", 1}}}};
    auto cfg =
        patro::patronize(opts, h, patro::named("jobs", jobs), counter, std::make_shared<Slow>(),
                         std::make_shared<Factory>(), patro::named("tree", tree));
    cfg.to_file(argv[1]);
    signals.wait();
    cfg.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
