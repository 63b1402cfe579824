// A server for multi-process tests. Serves, in this order:
//   0: the README's hash, 1: an empty array (also named "jobs"), 2: a hash {"n": 0},
//   3: a Slow object: add(ms) sleeps ms, then counts one and returns the count; count()
//   4: a Factory: make() returns a new Thing (a served object: get() -> its number),
//      make_slowly(ms) the same after sleeping ms, made() how many it made, live() the
//      Things alive, rss_kb() this process's resident set (after malloc_trim), heap_kb() what
//      the allocator has handed out; 5: a hash {"nested": {"x": 1}} ("tree")
//   6: a Notifier, which calls back what clients pass it: call_code(cb, x) -> cb(x);
//      call_method(obj, name, x) -> obj.name(x); get_key(container, key) and set_key(container,
//      key, value) through a client's served container; listen(cb) keeps cb (replacing the one
//      kept before), fire(x) -> cb(x) of the last kept, unlisten() lets go of it; push(obj, name,
//      n): n oneway calls obj.name(i), i = 1..n, then returns n
// and writes its config to CONFIG. Runs until SIGTERM/SIGINT.
//
//   patro-test-server CONFIG [--broker ENDPOINT]... [--heartbeat-ms N] [--liveness N] [--threads N]
//                            [--name NAME] [--steal 0|1] [--server-id N] [--lease-ms N]
//                            [--malloc-arenas N]
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
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
struct Notifier {
  std::mutex mu;
  patro::Value listener;
};

// The resident set of what is in use: freed memory the allocator still holds goes back to the
// system first (malloc_trim), so the figure follows live objects, not the allocator's peak.
int64_t rss_kb() {
  ::malloc_trim(0);
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kb = -1;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  std::fclose(f);
  return kb;
}

// What the allocator has handed out and not had back (kB): live allocations, whatever their pages.
int64_t heap_kb() {
  const struct mallinfo2 m = ::mallinfo2();
  return static_cast<int64_t>((m.uordblks + m.hblkhd) / 1024);
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
    else if (a == "--malloc-arenas")  // before any thread: glibc's arenas, at most N
      ::mallopt(M_ARENA_MAX, std::atoi(argv[i + 1]));
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
        .method("make_slowly",
                [](Factory& f, int64_t ms) {
                  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
                  return std::make_shared<Thing>(++f.made);
                })
        .method("made", [](Factory& f) { return f.made.load(); })
        .method("live", [](Factory&) { return things_alive.load(); })
        .method("rss_kb", [](Factory&) { return rss_kb(); })
        .method("heap_kb", [](Factory&) { return heap_kb(); });
    patro::Class<Notifier>("Notifier")
        .method("call_code",
                [](Notifier&, patro::Value cb, patro::Value x) { return patro::Proxy(cb)(x); })
        .method("call_method", [](Notifier&, patro::Value obj, std::string name,
                                  patro::Value x) { return patro::Proxy(obj).call(name, x); })
        .method("get_key", [](Notifier&, patro::Value c,
                              std::string key) { return patro::Proxy(c)[key].get(); })
        .method("set_key",
                [](Notifier&, patro::Value c, std::string key, patro::Value v) {
                  const patro::Proxy p(c);
                  p[key] = v;
                  return true;
                })
        .method("listen",
                [](Notifier& n, patro::Value cb) {
                  std::lock_guard lock(n.mu);
                  n.listener = cb;
                  return true;
                })
        .method("unlisten",
                [](Notifier& n) {
                  patro::Value gone;
                  {
                    std::lock_guard lock(n.mu);
                    gone = std::move(n.listener);
                    n.listener = patro::Value();
                  }
                  return !gone.is_null();
                })
        .method("fire",
                [](Notifier& n, patro::Value x) {
                  patro::Value cb;
                  {
                    std::lock_guard lock(n.mu);
                    cb = n.listener;
                  }
                  return patro::Proxy(cb)(x);
                })
        .method("push", [](Notifier&, patro::Value obj, std::string name, int64_t count) {
          patro::Proxy p(obj);
          for (int64_t i = 1; i <= count; ++i) p.send(name, i);
          patro::await_oneway(p);
          return count;
        });
    patro::Hash tree{{"nested", patro::Hash{{"x", 1}}}};
    auto cfg = patro::patronize(opts, h, patro::named("jobs", jobs), counter,
                                std::make_shared<Slow>(), std::make_shared<Factory>(),
                                patro::named("tree", tree), std::make_shared<Notifier>());
    cfg.to_file(argv[1]);
    signals.wait();
    cfg.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
