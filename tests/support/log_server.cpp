// A server for the log forwarding tests: serves one Logger, whose methods log lines at several
// levels and components:
//   emit(tag): logs "TAG COMPONENT LEVEL" for the components alpha and beta at each of the seven
//              levels (fatal..trace) with patro::write_log; returns the lines logged (14)
//   flood(n):  logs n lines "flood I" (alpha, warn) in one call; returns n
//   pid():     this process's id
// and writes its config to CONFIG (under patro::spawn it prints it). Its own log level stays the
// default (warn): forwarding does not depend on it. Runs until SIGTERM/SIGINT.
//
//   patro-log-server CONFIG [--broker ENDPOINT] [--threads N] [--log-queue N]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <patro/patro.hpp>

namespace {
struct Logger {};

constexpr patro::LogLevel kLevels[] = {
    patro::LogLevel::fatal,   patro::LogLevel::error, patro::LogLevel::warn, patro::LogLevel::info,
    patro::LogLevel::verbose, patro::LogLevel::debug, patro::LogLevel::trace};
constexpr const char* kNames[] = {"fatal", "error", "warn", "info", "verbose", "debug", "trace"};
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
    if (a == "--broker")
      opts.broker = argv[i + 1];
    else if (a == "--threads")
      opts.threads = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (a == "--log-queue")
      opts.log_forward_queue = static_cast<size_t>(std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "bad option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    patro::Class<Logger>("Logger")
        .method("emit",
                [](Logger&, std::string tag) {
                  int64_t n = 0;
                  for (const char* who : {"alpha", "beta"})
                    for (size_t l = 0; l < 7; ++l, ++n)
                      patro::write_log(kLevels[l], who, tag + " " + who + " " + kNames[l]);
                  return n;
                })
        .method("flood",
                [](Logger&, int64_t n) {
                  for (int64_t i = 0; i < n; ++i)
                    patro::write_log(patro::LogLevel::warn, "alpha", "flood " + std::to_string(i));
                  return n;
                })
        .method("pid", [](Logger&) { return static_cast<int64_t>(::getpid()); });
    auto cfg = patro::patronize(opts, std::make_shared<Logger>());
    cfg.to_file(argv[1]);
    signals.wait();
    cfg.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "log-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
