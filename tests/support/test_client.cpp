// A client for multi-process tests. Object INDEX is the position in the server's config.
//   push CONFIG INDEX TAG N          pushes "TAG-0" .. "TAG-(N-1)" onto the array
//   add CONFIG INDEX KEY N           N times p[KEY].add(1)
//   add-paced CONFIG INDEX KEY N US  the same, US microseconds apart, resending only what the
//                                    README says to (server_unavailable: it surely did not run);
//                                    prints "errors E" and exits 1 if any call failed
//   slow-add CONFIG INDEX MS N       N calls of the Slow object's add(MS), as add-paced does
//   sync-incr CONFIG INDEX KEY N     N read-modify-write increments of p[KEY] inside synchronize
//   sync-incr-paced CONFIG INDEX KEY N US  the same, US microseconds apart
//   produce CONFIG INDEX N CAP STOPS bounded queue (capacity CAP, wait/notify): pushes 1..N, then
//                                    STOPS zeros, one for each consumer
//   consume CONFIG INDEX OUT         takes items until a 0; writes them to OUT, one per line
//   hold CONFIG INDEX TOKENFILE      locks, writes the grant's token to TOKENFILE, sleeps (60 s)
//   wait-notified CONFIG INDEX       locks, waits up to 20 s for a notify; exit 0 if notified
//   hold-things CONFIG INDEX N FILE  N calls of the Factory's make(), holding the proxies; writes
//                                    N to FILE, sleeps (60 s)
//   listen CONFIG INDEX FILE         passes the Notifier (object INDEX) a callback, patro::Code
//                                    answering "pid P" (this process), with listen(); writes FILE,
//                                    then exits once FILE.stop exists (60 s at most)
//   trace CONFIG INDEX ROUTE         with the test server's objects and ClientOptions::route ROUTE:
//                                    a get of object 0's "abc", a call of a method object 3 does
//                                    not have, two oneway calls on object 2's "n" (set 5, add 1)
//                                    and a get of it; prints "obj I HEX" for objects 0, 2 and 3,
//                                    "get V", "error CODE", "n V" (INDEX is not used)
// Exit status: 0 done, 1 a Patro error, 2 bad usage, 3 a lock or wait that failed.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <patro/patro.hpp>

using namespace std::chrono_literals;

namespace {

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s MODE CONFIG INDEX ARGS... (see the source)\n", argv0);
  return 2;
}

// One step of the bounded queue: holds the lock, waits while full (producer) or empty
// (consumer), then acts and notifies everyone. Bounded: a wait that times out fails the run.
bool with_queue(const patro::Proxy& q, bool producer, size_t capacity, patro::Value& item) {
  if (!patro::lock(q, 20s)) return false;
  for (int rounds = 0; producer ? q.size() >= capacity : q.size() == 0; ++rounds) {
    if (rounds > 10000 || !patro::wait(q, 20s)) return false;
  }
  if (producer)
    q.push(item);
  else
    item = q.shift();
  patro::notify(q, -1);
  return static_cast<bool>(patro::unlock(q));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage(argv[0]);
  const std::string mode = argv[1];
  try {
    patro::ClientOptions options;
    if (mode == "trace" && argc == 5) options.route = patro::parse_route(argv[4]);
    auto ps = patro::get_proxies(argv[2], options);
    patro::Proxy p = ps.at(static_cast<size_t>(std::atoi(argv[3])));
    if (mode == "trace" && argc == 5) {
      for (size_t i : {0, 2, 3}) std::printf("obj %zu %s\n", i, ps.at(i).id().to_hex().c_str());
      std::printf("get %s\n", ps[0]["abc"].get().to_string().c_str());
      try {
        (void)ps[3].call("no_such_method", 7, "x");
        std::printf("error none\n");
      } catch (const patro::Error& e) {
        std::printf("error %s\n", patro::errc_name(e.code()));
      }
      ps[2]["n"].send_set(5);
      ps[2]["n"].send_add(1);
      if (patro::await_oneway(ps[2], 20s) != 0) return 1;
      std::printf("n %s\n", ps[2]["n"].get().to_string().c_str());
    } else if (mode == "push" && argc == 6) {
      const int n = std::atoi(argv[5]);
      for (int i = 0; i < n; ++i) p.push(std::string(argv[4]) + "-" + std::to_string(i));
    } else if ((mode == "add-paced" && argc == 7) || (mode == "slow-add" && argc == 6)) {
      const int n = std::atoi(argv[5]);
      const bool slow = mode == "slow-add";
      int errors = 0;
      for (int i = 0; i < n; ++i) {
        for (int attempt = 0;; ++attempt) {
          try {
            if (slow)
              (void)p.call("add", std::atoll(argv[4]));
            else
              p[argv[4]].add(1);
            break;
          } catch (const patro::Error& e) {
            if (e.code() == patro::Errc::server_unavailable && attempt < 100) continue;
            std::fprintf(stderr, "call %d: %s\n", i, e.what());
            ++errors;
            break;
          }
        }
        if (!slow) std::this_thread::sleep_for(std::chrono::microseconds(std::atoi(argv[6])));
      }
      std::printf("errors %d\n", errors);
      return errors == 0 ? 0 : 1;
    } else if (mode == "add" && argc == 6) {
      const int n = std::atoi(argv[5]);
      for (int i = 0; i < n; ++i) p[argv[4]].add(1);
    } else if ((mode == "sync-incr" && argc == 6) || (mode == "sync-incr-paced" && argc == 7)) {
      const int n = std::atoi(argv[5]);
      const int pace_us = argc == 7 ? std::atoi(argv[6]) : 0;
      patro::Proxy v = p[argv[4]];
      for (int i = 0; i < n; ++i) {
        if (pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pace_us));
        auto done = patro::synchronize(
            p,
            [&] {
              const int64_t x = v.get().as<int64_t>();  // get, add, set: safe only under the lock
              v = x + 1;
            },
            {.timeout = 60s});
        if (!done) {
          std::fprintf(stderr, "test-client: increment %d: the lock was not granted in 60 s\n", i);
          return 3;
        }
      }
    } else if (mode == "produce" && argc == 7) {
      const int n = std::atoi(argv[4]);
      const size_t cap = static_cast<size_t>(std::atoi(argv[5]));
      const int stops = std::atoi(argv[6]);
      for (int i = 1; i <= n + stops; ++i) {
        patro::Value item = i <= n ? i : 0;
        if (!with_queue(p, true, cap, item)) return 3;
      }
    } else if (mode == "consume" && argc == 5) {
      std::ofstream out(argv[4]);
      for (int i = 0; i < 100000; ++i) {
        patro::Value item;
        if (!with_queue(p, false, 0, item)) return 3;
        if (item == 0) break;
        out << item.as<int64_t>() << '\n';
      }
    } else if (mode == "hold" && argc == 5) {
      auto r = patro::lock(p, 20s);
      if (!r) return 3;
      {
        std::ofstream out(std::string(argv[4]) + ".tmp");
        out << r.token << '\n';
      }
      std::rename((std::string(argv[4]) + ".tmp").c_str(), argv[4]);
      std::this_thread::sleep_for(60s);
    } else if (mode == "hold-things" && argc == 6) {
      std::vector<patro::Proxy> things;
      for (int i = 0; i < std::atoi(argv[4]); ++i) things.emplace_back(p.call("make"));
      {
        std::ofstream out(std::string(argv[5]) + ".tmp");
        out << things.size() << '\n';
      }
      std::rename((std::string(argv[5]) + ".tmp").c_str(), argv[5]);
      std::this_thread::sleep_for(60s);
    } else if (mode == "listen" && argc == 5) {
      const std::string pid = "pid " + std::to_string(::getpid());
      patro::Code answer = [pid](patro::Args&) -> patro::Value { return pid; };
      (void)p.call("listen", answer);
      {
        std::ofstream out(std::string(argv[4]) + ".tmp");
        out << pid << '\n';
      }
      std::rename((std::string(argv[4]) + ".tmp").c_str(), argv[4]);
      const auto give_up = std::chrono::steady_clock::now() + 60s;
      while (!std::filesystem::exists(std::string(argv[4]) + ".stop") &&
             std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(20ms);
    } else if (mode == "wait-notified" && argc == 4) {
      if (!patro::lock(p, 20s)) return 3;
      auto w = patro::wait(p, 20s);
      if (!w) return 3;
      patro::unlock(p, -1);
    } else {
      return usage(argv[0]);
    }
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "test-client: %s\n", e.what());
    return 1;
  }
  return 0;
}
