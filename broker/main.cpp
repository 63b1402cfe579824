// patro-broker: routes requests between Patro clients and servers.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <patro/patro.hpp>

namespace {

const char* kUsage = R"(Usage: patro-broker [options]

Routes requests from Patro clients to the servers that own the objects, and keeps the
registry of well-known names. Logs to stderr; PATRO_LOG_LEVEL=error|warn|info|debug.

Options:
  --front ENDPOINT       where clients connect (default tcp://127.0.0.1:7170)
  --back ENDPOINT        where servers connect (default tcp://127.0.0.1:7171)
  --advertise ENDPOINT   client endpoint that servers write into their configs
                         (default: the bound --front; set it when binding 0.0.0.0)
  --heartbeat-ms N       heartbeat interval, both directions (default 1000)
  --liveness N           missed heartbeats before a peer is dead (default 3)
  --max-message-size N   largest request body in bytes (default 16777216)
  --endpoints-file PATH  write "FRONT BACK" (the bound endpoints) to PATH once bound
  --help                 this text

Stops cleanly on SIGINT or SIGTERM. Exit status: 0 after a clean stop, 2 on bad options,
1 if it cannot bind.
)";

bool parse_number(const char* s, long long min, long long max, long long& out) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max) return false;
  out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  patro::BrokerOptions opts;
  std::string endpoints_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "patro-broker: %s needs a value\n%s", arg.c_str(), kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    long long n = 0;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--front") {
      opts.frontend = value();
    } else if (arg == "--back") {
      opts.backend = value();
    } else if (arg == "--advertise") {
      opts.advertise = value();
    } else if (arg == "--endpoints-file") {
      endpoints_file = value();
    } else if (arg == "--heartbeat-ms" && parse_number(value(), 10, 3600000, n)) {
      opts.heartbeat.interval = std::chrono::milliseconds(n);
    } else if (arg == "--liveness" && parse_number(value(), 1, 1000, n)) {
      opts.heartbeat.liveness = static_cast<unsigned>(n);
    } else if (arg == "--max-message-size" && parse_number(value(), 1024, 1LL << 30, n)) {
      opts.limits.max_message_size = static_cast<size_t>(n);
    } else {
      std::fprintf(stderr, "patro-broker: bad option or value: %s\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  try {
    patro::Broker broker(opts);
    if (!endpoints_file.empty()) {
      const std::string tmp = endpoints_file + ".tmp";
      FILE* f = std::fopen(tmp.c_str(), "w");
      if (f == nullptr ||
          std::fprintf(f, "%s %s\n", broker.frontend_endpoint().c_str(),
                       broker.backend_endpoint().c_str()) < 0 ||
          std::fclose(f) != 0 || std::rename(tmp.c_str(), endpoints_file.c_str()) != 0) {
        std::fprintf(stderr, "patro-broker: cannot write %s\n", endpoints_file.c_str());
        return 1;
      }
    }
    std::thread waiter([&] {
      signals.wait();
      broker.stop();
    });
    try {
      broker.run();
    } catch (...) {
      ::kill(::getpid(), SIGTERM);  // wake the waiter, which is blocked on the signal
      waiter.join();
      throw;
    }
    // run() returns only after stop(); the waiter has taken its signal.
    waiter.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "patro-broker: %s\n", e.what());
    return 1;
  }
  return 0;
}
