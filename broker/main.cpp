// patro-broker: routes requests between Patro clients and servers.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include <patro/patro.hpp>

#include "cli/options.hpp"
#include "daemon.hpp"

namespace {

std::string render_metrics(const patro::BrokerStats& s) {
  using patro::daemon::metric;
  std::string out;
  metric(out, "patro_broker_requests_total", "counter", "Requests routed to servers",
         static_cast<double>(s.routed));
  metric(out, "patro_broker_replies_total", "counter", "Replies routed back to clients",
         static_cast<double>(s.replies));
  metric(out, "patro_broker_dropped_total", "counter",
         "Messages dropped (malformed and unanswerable, or the peer gone)",
         static_cast<double>(s.dropped));
  bool first = true;
  for (const auto& [code, n] : s.rejected_by_code) {
    metric(out, "patro_broker_errors_total", "counter",
           first ? "Requests the broker answered with an error, by code" : "",
           static_cast<double>(n), "code=\"" + std::string(patro::errc_name(code)) + "\"");
    first = false;
  }
  if (first)  // no error yet: the family still shows, at zero
    metric(out, "patro_broker_errors_total", "counter",
           "Requests the broker answered with an error, by code", 0, "code=\"server_unavailable\"");
  metric(out, "patro_broker_in_flight_requests", "gauge", "Requests routed and not yet answered",
         static_cast<double>(s.in_flight));
  out +=
      "# HELP patro_broker_request_duration_seconds Time from routing a request to routing its "
      "reply\n# TYPE patro_broker_request_duration_seconds histogram\n";
  const auto& bounds = patro::BrokerStats::latency_bounds();
  uint64_t cumulative = 0;
  for (size_t b = 0; b <= bounds.size() && b < s.latency_counts.size(); ++b) {
    cumulative += s.latency_counts[b];
    char le[32];
    if (b < bounds.size())
      std::snprintf(le, sizeof le, "%g", bounds[b]);
    else
      std::snprintf(le, sizeof le, "+Inf");
    metric(out, "patro_broker_request_duration_seconds_bucket", "", "",
           static_cast<double>(cumulative), "le=\"" + std::string(le) + "\"");
  }
  metric(out, "patro_broker_request_duration_seconds_sum", "", "", s.latency_sum);
  metric(out, "patro_broker_request_duration_seconds_count", "", "",
         static_cast<double>(s.latency_count));
  metric(out, "patro_broker_clients", "gauge", "Live clients", static_cast<double>(s.clients));
  metric(out, "patro_broker_servers", "gauge", "Registered servers",
         static_cast<double>(s.servers));
  metric(out, "patro_broker_connections", "gauge", "Connections open, both ports together",
         static_cast<double>(s.connections));
  metric(out, "patro_broker_refused_total", "counter",
         "CURVE handshakes refused (a key not on the allow list)", static_cast<double>(s.refused));
  // Each kind shows, at zero until it happens, so that an alert can be written before it does.
  static const char* const kinds[] = {
      "register_malformed",   "register_over_limits", "server_id_taken",  "name_taken",
      "name_of_other_server", "registry_full",        "alive_forged",     "reply_unrouted",
      "key_mismatch",         "key_revoked",          "too_many_pending", "client_bytes",
      "client_unread",        "connection_cap"};
  first = true;
  for (const char* kind : kinds) {
    const auto it = s.refused_by_kind.find(kind);
    metric(out, "patro_broker_refused_messages_total", "counter",
           first ? "Messages from peers the broker refused, by kind (docs/SECURITY.md)" : "",
           it == s.refused_by_kind.end() ? 0.0 : static_cast<double>(it->second),
           "kind=\"" + std::string(kind) + "\"");
    first = false;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  patro::BrokerOptions opts;
  std::string endpoints_file, metrics, log_level, log_file;
  CLI::App app(
      "Routes requests from Patro clients to the servers that own the objects, and keeps "
      "the registry of well-known names. Logs to stderr (ISO-8601 UTC times; under systemd, "
      "journal priorities), at info unless --log-level or PATRO_LOG_LEVEL (error, warn, info, "
      "debug) says.",
      "patro-broker");
  patro::cli::setup(app);
  app.footer(
      "Tells systemd READY=1 once bound. SIGHUP reopens --log-file. Stops cleanly on SIGINT or "
      "SIGTERM.\nWith --curve-key, both ports encrypt and authenticate every peer; SIGHUP also "
      "reads the allow lists again, and refuses from then on every message of a live session "
      "whose key left them. Without it, binding anything but loopback is refused unless "
      "--insecure is given.\nNo single point of failure: run two brokers (or more), each with "
      "its own --front and --back (on two hosts, or two ports of one); servers register with "
      "both (patro-worker --broker tcp://HOST1:7171 --broker tcp://HOST2:7171), and clients "
      "list both client endpoints in fail-over order (patro --broker HOST1:7170,HOST2:7170); "
      "see README \"Several brokers\".\nExit status: 0 after a clean stop, 1 if it cannot "
      "bind, 2 on bad options.");
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
      ->check(patro::cli::range(int64_t{10}, int64_t{3600000}))
      ->capture_default_str();
  app.add_option("--liveness", opts.heartbeat.liveness, "missed heartbeats before a peer is dead")
      ->check(patro::cli::range(1, 1000))
      ->capture_default_str();
  app.add_option("--max-message-size", opts.limits.max_message_size,
                 "largest request body in bytes")
      ->check(patro::cli::range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--max-register-names", opts.max_register_names,
                 "most names one REGISTER may carry (more: refused)")
      ->check(patro::cli::range(size_t{1}, size_t{10'000'000}))
      ->capture_default_str();
  app.add_option("--max-register-bytes", opts.max_register_bytes,
                 "most bytes of name strings one REGISTER may carry (more: refused)")
      ->check(patro::cli::range(size_t{1024}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--max-name-bytes", opts.max_name_bytes,
                 "longest name, type name, reftype or direct endpoint in a REGISTER")
      ->check(patro::cli::range(size_t{16}, size_t{1} << 20))
      ->capture_default_str();
  app.add_option("--max-client-bytes", opts.max_client_bytes,
                 "most bytes of one client's requests routed and not yet answered (more: "
                 "answered overloaded, not run)")
      ->check(patro::cli::range(size_t{1024}, size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-client-unread", opts.max_client_unread,
                 "most bytes sent to one client and not yet taken by its TCP (more: its replies "
                 "wait at the server, its requests are answered overloaded)")
      ->check(patro::cli::range(size_t{1024}, size_t{1} << 40))
      ->capture_default_str();
  app.add_option("--max-connections", opts.max_connections,
                 "most connections kept open, both ports together (more: closed at once; the "
                 "last eighth only on the server port); 0: the descriptor limit less 64")
      ->check(patro::cli::range(size_t{0}, size_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--max-names", opts.max_names, "most names in the registry")
      ->check(patro::cli::range(size_t{1}, size_t{10'000'000}))
      ->capture_default_str();
  std::string curve_key;
  app.add_option("--curve-key", curve_key,
                 "the broker's CURVE key pair (patro keygen FILE): both ports encrypt, and check "
                 "each peer's key against the allow lists")
      ->type_name("FILE");
  app.add_option("--allow-clients", opts.allow_clients_file,
                 "client public keys allowed on --front: one Z85 key per line, optionally "
                 "limited by names=GLOB,... and read-only after it, # comments (default with "
                 "--curve-key: any key)")
      ->type_name("FILE");
  app.add_option("--allow-servers", opts.allow_servers_file,
                 "server public keys allowed to register on --back (same format)")
      ->type_name("FILE");
  app.add_flag("--insecure", opts.insecure,
               "accept binding a non-loopback address without CURVE (plaintext on purpose)");
  app.add_option("--endpoints-file", endpoints_file,
                 "write \"FRONT BACK\" (the bound endpoints) to PATH once bound")
      ->type_name("PATH");
  app.add_option("--metrics", metrics,
                 "serve Prometheus metrics over HTTP at ENDPOINT/metrics (e.g. "
                 "tcp://127.0.0.1:9170); also times requests for a histogram")
      ->type_name("ENDPOINT");
  app.add_option("--log-level", log_level,
                 "fatal, error, warn, info (default), verbose, debug or trace, any case")
      ->type_name("LEVEL");
  app.add_option("--log-file", log_file, "log to FILE instead of stderr (SIGHUP reopens it)")
      ->type_name("FILE");
  if (auto status = patro::cli::parse(app, argc, argv)) return *status;
  opts.heartbeat.interval = std::chrono::milliseconds(heartbeat_ms);
  if (const std::string e = patro::daemon::configure_logging(log_level, log_file); !e.empty()) {
    std::fprintf(stderr, "patro-broker: %s\n(see patro-broker --help)\n", e.c_str());
    return 2;
  }
  opts.track_latency = !metrics.empty();
  patro::daemon::raise_descriptor_limit("broker");
  try {
    if (!curve_key.empty()) opts.curve = patro::read_key_file(curve_key);
    if (opts.curve.empty() &&
        (!opts.allow_clients_file.empty() || !opts.allow_servers_file.empty()))
      throw patro::Error(patro::Errc::invalid_argument,
                         "--allow-clients and --allow-servers need --curve-key (the broker's key "
                         "pair)");
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
    std::unique_ptr<patro::daemon::MetricsServer> metrics_server;
    if (!metrics.empty()) {
      metrics_server = std::make_unique<patro::daemon::MetricsServer>(
          metrics, [&broker] { return render_metrics(broker.stats()); });
      patro::write_log(patro::LogLevel::info, "broker",
                       "metrics at http://" + metrics_server->endpoint().substr(6) + "/metrics");
    }
    std::thread waiter([&] {
      while (signals.wait() == SIGHUP) {
        patro::reopen_log_file();
        patro::write_log(patro::LogLevel::info, "broker", "SIGHUP: log file reopened");
        try {
          broker.reload();  // logs what it read, or why it kept the lists in force
        } catch (const std::exception&) {
        }
      }
      patro::daemon::notify("STOPPING=1");
      broker.stop();
    });
    patro::daemon::notify("READY=1");
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
    patro::write_log(patro::LogLevel::fatal, "broker", e.what());
    return 1;
  }
  return 0;
}
