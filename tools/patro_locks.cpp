// patro-locks: prints every lock of running Patro servers on this host — holder, depth, waiters
// and fencing token — read from their segments in /dev/shm.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/options.hpp"
#include "lock_table.hpp"
#include "patro/error.hpp"

namespace {
std::string hex16(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}
}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::vector<std::string> names;
  CLI::App app(
      "Prints the monitor locks of Patro servers on this host, read from /dev/shm: for "
      "each locked object its holder (a client id), stack depth, fencing token, requests "
      "waiting to acquire it, monitors in WAIT, and monitors whose lock was stolen.",
      "patro-locks");
  patro::cli::setup(app);
  app.footer(
      "Exit status: 0, 1 if a named server has no lock segments or a segment cannot be read (it "
      "fails its checks, belongs to another user, or stays busy for 2 s), 2 on bad options.");
  app.add_flag("--json", json, "one JSON object: server name -> array of locks");
  app.add_option("SERVER", names,
                 "a server's name (ServerOptions::name, or pidNNN-... by default); with none, "
                 "every server found");
  if (auto status = patro::cli::parse(app, argc, argv)) return *status;
  const bool all = names.empty();
  if (all) names = patro::detail::LockTable::servers();
  int status = 0;
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const std::string& name : names) {
    std::vector<patro::detail::LockInfo> locks;
    try {
      locks = patro::detail::LockTable::inspect(name);
    } catch (const patro::Error& e) {
      // Listing all, a server that went away meanwhile is no error; a segment that fails its
      // checks, another user's, or a table that stays busy is one either way.
      if (!all || e.code() != patro::Errc::not_found) {
        std::fprintf(stderr, "patro-locks: %s\n", e.what());
        status = 1;
      }
      continue;
    }
    if (json) {
      auto& list = out[name] = nlohmann::ordered_json::array();
      for (const auto& l : locks)
        list.push_back({{"object", hex16(l.object)},
                        {"holder", hex16(l.holder)},
                        {"depth", l.depth},
                        {"token", l.token},
                        {"waiting", l.lock_waiters},
                        {"in_wait", l.wait_waiters},
                        {"stolen", l.stolen.size()}});
    } else {
      std::printf("server %s: %zu lock(s)\n", name.c_str(), locks.size());
      if (!locks.empty())
        std::printf("  %-16s  %-16s  %5s  %-20s  %7s  %7s  %6s\n", "object", "holder", "depth",
                    "token", "waiting", "in-wait", "stolen");
      for (const auto& l : locks)
        std::printf("  %s  %-16s  %5u  %-20" PRIu64 "  %7zu  %7zu  %6zu\n", hex16(l.object).c_str(),
                    l.holder ? hex16(l.holder).c_str() : "-", l.depth, l.token, l.lock_waiters,
                    l.wait_waiters, l.stolen.size());
    }
  }
  if (json)
    std::printf("%s\n",
                out.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  return status;
}
