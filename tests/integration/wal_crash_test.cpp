// Crash consistency of patro-worker's write-ahead logs: the worker is killed with SIGKILL at
// random points while clients make acknowledged changes (pushes in batches, hash sets, counter
// adds: the log's group commits), then restarted on the same --data, again and again. After each
// kill `patro-worker verify` finds no damage (a torn tail at most); at the end every acknowledged
// change is there, and nothing that no client sent: only the one call each client had in flight
// at a kill may have landed unacknowledged.
// PATRO_WAL_CRASH_KILLS sets the number of kills (default 50; 10 in a sanitizer's build, whose
// starts are slower), PATRO_WAL_CRASH_SEED the random seed (printed).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/exactly_once.hpp"
#include "../support/process.hpp"
#include "verify.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::read_numbers;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr long kDefaultKills = 10;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr long kDefaultKills = 10;
#else
constexpr long kDefaultKills = 50;
#endif
#else
constexpr long kDefaultKills = 50;
#endif

long env_number(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atol(v) : fallback;
}

size_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

const std::vector<std::string> kObjects{"queue", "jobs", "hash", "kv", "counter", "n"};

// patro-worker with its own broker on free ports, serving kObjects from data; front is set once
// its objects resolve.
struct Worker {
  std::unique_ptr<Process> proc;
  std::string front;
  Worker(const TempDir& dir, const std::string& data, const std::string& err_file) {
    const std::string eps = dir.file("endpoints");
    std::remove(eps.c_str());
    std::vector<std::string> argv{program("PATRO_WORKER"),
                                  "--front",
                                  "tcp://127.0.0.1:*",
                                  "--back",
                                  "tcp://127.0.0.1:*",
                                  "--endpoints-file",
                                  eps,
                                  "--data",
                                  data};
    argv.insert(argv.end(), kObjects.begin(), kObjects.end());
    proc = std::make_unique<Process>(patro::test::redirected(argv, err_file));
    REQUIRE(wait_for_file(eps, 30s));
    std::string back;
    std::istringstream(read_file(eps)) >> front >> back;
  }
  void wait_ready() {
    if (!patro::test::resolve_when_up(front, "n", {}, 400))
      FAIL("the worker did not register its objects");
  }
};

Process client(std::vector<std::string> args) {
  // A short deadline: a client whose worker is gone is killed anyway, this only bounds it.
  args.insert(args.begin(), {program("PATRO_WORKER_CLIENT"), "--timeout-ms", "20000"});
  return Process(args);
}

// A producer's range in one cycle: jobs first..first+count-1 in batches of kBatch.
constexpr long kBatch = 10;
constexpr long kPerProducer = 100000;
struct Range {
  long first;
  std::string acked_file;
};

}  // namespace

TEST_CASE("kill -9s during group commits: every acknowledged change survives, nothing else") {
  const long kills = env_number("PATRO_WAL_CRASH_KILLS", kDefaultKills);
  const unsigned seed = static_cast<unsigned>(
      env_number("PATRO_WAL_CRASH_SEED", static_cast<long>(std::random_device{}() & 0x7fffffff)));
  MESSAGE("kills: " << kills << ", seed: " << seed << " (PATRO_WAL_CRASH_SEED)");
  std::mt19937 rng(seed);
  TempDir dir;
  const std::string data = dir.file("data");
  const std::string worker_err = dir.file("worker.err");
  std::vector<Range> ranges;
  std::vector<std::string> changed_files;
  long killed_at_start = 0;
  const auto started = std::chrono::steady_clock::now();
  long killed_writing = 0;
  for (long cycle = 0; killed_writing < kills; ++cycle) {
    CAPTURE(cycle);
    REQUIRE(std::chrono::steady_clock::now() - started < 150s);  // a bound, far above the need
    Worker w(dir, data, worker_err);
    std::vector<Process> clients;
    const std::string tag = std::to_string(cycle);
    // Every tenth cycle, in addition: killed while it starts (its replay and start-up
    // compaction).
    if (cycle % 10 == 9) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
      ++killed_at_start;
    } else {
      w.wait_ready();
      for (long k = 0; k < 2; ++k) {
        const long first = (cycle * 2 + k) * kPerProducer;
        const std::string out = dir.file("pushed-" + tag + "-" + std::to_string(k));
        ranges.push_back(Range{first, out});
        clients.push_back(client({"produce", w.front, "jobs", std::to_string(first),
                                  std::to_string(kPerProducer), std::to_string(kBatch), out}));
      }
      const std::string out = dir.file("changed-" + tag);
      changed_files.push_back(out);
      clients.push_back(client({"changes", w.front, "kv", "n", "1000000", out}));
      // Once each client has a change acknowledged, at a random point of the commits after.
      auto all_acked = [&] {
        return file_size(out) > 0 && file_size(ranges.back().acked_file) > 0 &&
               file_size(ranges[ranges.size() - 2].acked_file) > 0;
      };
      for (int i = 0; i < 2000 && !all_acked(); ++i) std::this_thread::sleep_for(2ms);
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40000));
      ++killed_writing;
    }
    w.proc->signal(SIGKILL);
    REQUIRE(w.proc->wait(10s).has_value());
    patro::remove_stale_lock_segments();  // the killed worker's, which no restart will sweep
    for (auto& c : clients) (void)c.kill();
    // The crash left no damage: clean, or a torn tail that a start cuts.
    Process verify(
        patro::test::redirected({program("PATRO_WORKER"), "verify", data}, dir.file("verify.err")),
        dir.file("verify.out"));
    const auto status = verify.wait(30s);
    CHECK_MESSAGE((status == 0 || status == 3), "verify: " << read_file(dir.file("verify.out"))
                                                           << read_file(dir.file("verify.err")));
  }
  MESSAGE(killed_writing << " kills during commits and " << killed_at_start << " while starting in "
                         << std::chrono::duration_cast<std::chrono::seconds>(
                                std::chrono::steady_clock::now() - started)
                                .count()
                         << " s");

  // Every change acknowledged in any cycle, and nothing beyond the call in flight at each kill.
  Worker w(dir, data, worker_err);
  w.wait_ready();
  long acked_changes = 0, max_changed = -1;
  for (const auto& f : changed_files) {
    const auto changed = read_numbers(f);
    acked_changes += static_cast<long>(changed.size());
    for (long i : changed) max_changed = std::max(max_changed, i);
  }
  auto kv = patro::get_proxy(w.front, "kv");
  size_t lost_keys = 0;
  for (long i = 0; i <= max_changed; ++i)
    lost_keys += !(kv.call("get", "k" + std::to_string(i)) == i);
  CHECK(lost_keys == 0);
  // Keys only from sets a client sent: each cycle's client had at most one set in flight.
  CHECK(kv.call("size").as<int64_t>() <= max_changed + 2);
  const int64_t n = patro::get_proxy(w.front, "n").call("get").as<int64_t>();
  CHECK(n >= acked_changes);                                            // every acknowledged add
  CHECK(n <= acked_changes + static_cast<long>(changed_files.size()));  // + one in flight each

  Process consumer = client({"consume", w.front, "jobs", "500", dir.file("consumed"), "1000"});
  CHECK(consumer.wait(120s) == 0);
  const auto consumed = read_numbers(dir.file("consumed"));
  const std::set<long> delivered(consumed.begin(), consumed.end());
  CHECK(delivered.size() == consumed.size());  // each job once
  size_t missing = 0, foreign = 0;
  std::set<long> allowed;  // acknowledged, or in the batch each producer had in flight
  for (const Range& r : ranges) {
    const auto acked = read_numbers(r.acked_file);
    long next = r.first;
    for (long j : acked) {
      missing += delivered.count(j) == 0;
      allowed.insert(j);
      next = std::max(next, j + 1);
    }
    for (long j = next; j < next + kBatch; ++j) allowed.insert(j);
  }
  for (long j : delivered) foreign += allowed.count(j) == 0;
  CHECK(missing == 0);
  CHECK(foreign == 0);
  MESSAGE(delivered.size() << " jobs delivered, " << acked_changes << " changes acknowledged");
  CHECK(w.proc->stop() == 0);
  Process verify({program("PATRO_WORKER"), "verify", data}, dir.file("verify.out"));
  CHECK(verify.wait(30s) == 0);
}
