// patro-locks: prints every lock of running Patro servers on this host — holder, depth, waiters
// and fencing token — read from their segments in /dev/shm.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lock_table.hpp"
#include "patro/error.hpp"

namespace {
const char* kUsage = R"(Usage: patro-locks [--json] [SERVER...]

Prints the monitor locks of Patro servers on this host, read from /dev/shm: for each locked
object its holder (a client id), stack depth, fencing token, requests waiting to acquire it,
monitors in WAIT, and monitors whose lock was stolen. SERVER is a server's name
(ServerOptions::name, or pidNNN-… by default); with none, every server found.

Exit status: 0, or 1 if a named server has no lock segments.
)";
}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::vector<std::string> names;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (argv[i][0] == '-') {
      std::fprintf(stderr, "patro-locks: unknown option %s\n%s", argv[i], kUsage);
      return 2;
    } else {
      names.push_back(argv[i]);
    }
  }
  const bool all = names.empty();
  if (all) names = patro::detail::LockTable::servers();
  int status = 0;
  if (json) std::printf("{");
  bool first_server = true;
  for (const std::string& name : names) {
    std::vector<patro::detail::LockInfo> locks;
    try {
      locks = patro::detail::LockTable::inspect(name);
    } catch (const patro::Error& e) {
      if (!all) {
        std::fprintf(stderr, "patro-locks: %s\n", e.what());
        status = 1;
      }
      continue;
    }
    if (json) {
      std::printf("%s\"%s\":[", first_server ? "" : ",", name.c_str());
      for (size_t i = 0; i < locks.size(); ++i) {
        const auto& l = locks[i];
        std::printf("%s{\"object\":\"%016" PRIx64 "\",\"holder\":\"%016" PRIx64
                    "\",\"depth\":%u,\"token\":%" PRIu64
                    ",\"waiting\":%zu,\"in_wait\":%zu,"
                    "\"stolen\":%zu}",
                    i ? "," : "", l.object, l.holder, l.depth, l.token, l.lock_waiters,
                    l.wait_waiters, l.stolen.size());
      }
      std::printf("]");
    } else {
      std::printf("server %s: %zu lock(s)\n", name.c_str(), locks.size());
      if (!locks.empty())
        std::printf("  %-16s  %-16s  %5s  %-20s  %7s  %7s  %6s\n", "object", "holder", "depth",
                    "token", "waiting", "in-wait", "stolen");
      for (const auto& l : locks) {
        char holder[20];
        if (l.holder)
          std::snprintf(holder, sizeof holder, "%016" PRIx64, l.holder);
        else
          std::snprintf(holder, sizeof holder, "-");
        std::printf("  %016" PRIx64 "  %-16s  %5u  %-20" PRIu64 "  %7zu  %7zu  %6zu\n", l.object,
                    holder, l.depth, l.token, l.lock_waiters, l.wait_waiters, l.stolen.size());
      }
    }
    first_server = false;
  }
  if (json) std::printf("}\n");
  return status;
}
