// A broker and the CLI test server (tests/support/cli_server.cpp) in their own processes, and the
// patro CLI run against them: for the tests of the CLI.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "process.hpp"

namespace patro::test {

/// How a patro run ended: its exit status and its stdout.
struct CliRun {
  int status = -1;
  std::string out;
};

struct CliCluster {
  TempDir dir;
  BrokerProcess broker;
  std::string front = broker.front, back = broker.back, conf = dir.file("cli.conf");
  std::unique_ptr<Process> server;
  int runs = 0;

  /// The broker's liveness in heartbeats of 100 ms.
  explicit CliCluster(const std::string& liveness = "5")
      : broker(dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", liveness) {
    server = std::make_unique<Process>(std::vector<std::string>{
        program("PATRO_TEST_CLI_SERVER"), conf, "--broker", back, "--heartbeat-ms", "100"});
    if (!wait_for_file(conf, std::chrono::seconds(10)))
      throw std::runtime_error("the server did not start");
  }
  ~CliCluster() {
    server->stop();
    broker.proc->stop();
  }
  CliCluster(const CliCluster&) = delete;
  CliCluster& operator=(const CliCluster&) = delete;

  /// patro's argv: --broker FRONT (with_broker), then the args.
  std::vector<std::string> argv(std::vector<std::string> args, bool with_broker = true) const {
    std::vector<std::string> a{program("PATRO_CLI")};
    if (with_broker) {
      a.push_back("--broker");
      a.push_back(front);
    }
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }

  /// Runs patro to its end (60 s at most, else throws); its status and stdout.
  CliRun run(std::vector<std::string> args, bool with_broker = true) {
    const std::string out = dir.file("out-" + std::to_string(++runs));
    Process p(argv(std::move(args), with_broker), out);
    const auto st = p.wait(std::chrono::seconds(60));
    if (!st) throw std::runtime_error("patro did not finish within 60 s");
    return CliRun{*st, read_file(out)};
  }
};

}  // namespace patro::test
