// What patro-broker and patro-worker share as daemons: the log level and file from their options
// and the environment, readiness for systemd, and a small HTTP responder for Prometheus metrics.
// Programs wire these together in main(); nothing here is global but the log settings.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

namespace patro::daemon {

/// Sets the process's log level and file for a daemon: level_name (from --log-level) if given,
/// else trace if $PATRO_DEBUG asks for it, else $PATRO_LOG_LEVEL, else info (a daemon's start-up
/// lines are info); and the components logged from $PATRO_LOG_SELECTIONS (patro/logging.hpp).
/// Returns an error text for an unknown level name, bad selections or a log file that cannot be
/// opened; empty when all is well.
std::string configure_logging(const std::string& level_name, const std::string& log_file);

/// Raises the soft RLIMIT_NOFILE to the hard one: every peer of a broker, and every connection
/// and data file of a worker, holds a descriptor, and the soft limit is often 1,024. The hard one
/// is the operator's to set (LimitNOFILE= in the unit). A failure is logged (warn, as `component`)
/// and the daemon goes on with the limit it has.
void raise_descriptor_limit(const std::string& component);

/// Tells systemd (sd_notify) the daemon's state: "READY=1", "STOPPING=1", "RELOADING=1"...
/// Nothing when not run by systemd ($NOTIFY_SOCKET unset).
void notify(const std::string& state);

/// A tiny HTTP/1.0 responder: GET /metrics answers with render()'s text in Prometheus' text
/// exposition format (version 0.0.4); anything else gets 404. One connection at a time, each with
/// a short deadline, so a slow scraper cannot hold it. Binds in the constructor (throws
/// patro::Error on a bad endpoint or a port in use); serves on its own thread until destroyed.
class MetricsServer {
 public:
  MetricsServer(const std::string& endpoint, std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  /// "tcp://127.0.0.1:9170" (with the port chosen for ":0" or ":*").
  const std::string& endpoint() const noexcept { return endpoint_; }

 private:
  void serve();
  void answer(int fd);
  std::function<std::string()> render_;
  std::string endpoint_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  std::thread thread_;
};

/// Prometheus text helpers: "# HELP", "# TYPE" and the sample line(s).
void metric(std::string& out, const std::string& name, const char* type, const std::string& help,
            double value, const std::string& labels = {});
/// Escapes a label value (backslash, quote, newline).
std::string label_value(const std::string& v);

}  // namespace patro::daemon
