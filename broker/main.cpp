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

#include "cli/options.hpp"

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  patro::BrokerOptions opts;
  std::string endpoints_file;
  CLI::App app(
      "Routes requests from Patro clients to the servers that own the objects, and keeps "
      "the registry of well-known names. Logs to stderr; "
      "PATRO_LOG_LEVEL=error|warn|info|debug.",
      "patro-broker");
  patro::cli::setup(app);
  app.footer(
      "Stops cleanly on SIGINT or SIGTERM. Exit status: 0 after a clean stop, 1 if it cannot "
      "bind,\n"
      "2 on bad options.");
  app.add_option("--front", opts.frontend, "where clients connect")
      ->type_name("ENDPOINT")
      ->capture_default_str();
  app.add_option("--back", opts.backend, "where servers connect")
      ->type_name("ENDPOINT")
      ->capture_default_str();
  app.add_option("--advertise", opts.advertise,
                 "client endpoint that servers write into their configs (default: the bound "
                 "--front; set it when binding 0.0.0.0)")
      ->type_name("ENDPOINT");
  int64_t heartbeat_ms = opts.heartbeat.interval.count();
  app.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat interval, both directions")
      ->check(CLI::Range(int64_t{10}, int64_t{3600000}))
      ->capture_default_str();
  app.add_option("--liveness", opts.heartbeat.liveness, "missed heartbeats before a peer is dead")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--max-message-size", opts.limits.max_message_size,
                 "largest request body in bytes")
      ->check(CLI::Range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--endpoints-file", endpoints_file,
                 "write \"FRONT BACK\" (the bound endpoints) to PATH once bound")
      ->type_name("PATH");
  if (auto status = patro::cli::parse(app, argc, argv)) return *status;
  opts.heartbeat.interval = std::chrono::milliseconds(heartbeat_ms);
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
