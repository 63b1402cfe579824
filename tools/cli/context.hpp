// What every patro subcommand gets: its parsed invocation, the cluster to talk to, and where its
// results go.
#pragma once

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <patro/patro.hpp>

#include "values.hpp"

namespace patro::cli {

/// Exit statuses of patro (README: "Exit status").
enum Exit : int { ok = 0, patro_error = 1, usage_error = 2, nothing = 3, not_granted = 4 };

/// Bad usage found after parsing (exit 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One run of patro: the subcommand, its words and options.
struct Invocation {
  std::string sub;
  /// Positional words after the subcommand; with --stdin, the last is what stdin held.
  std::vector<std::string> words;
  bool last_from_stdin = false;
  bool json_args = false;
  std::vector<std::string> command;  // lock -- CMD..., take --exec CMD...

  // Options of the subcommands (each used by the ones that define it).
  bool strict = false, list = false, scalar = false, shift = false, nack = false, steal = false;
  bool follow = false, exec = false;
  std::optional<int64_t> wait_ms, lease_ms, lines, from, interval_ms, priority;
  std::optional<std::string> delay, ttr;  // durations, as parse_duration takes them
  std::optional<std::string> dedup;

  /// Needs between min and max words; a usage error naming what otherwise.
  void need(size_t min, size_t max, const char* what) const;
  /// Word i as a typed value: from stdin or @FILE as it is (JSON with --json-args), otherwise
  /// inferred (or JSON with --json-args). "@@x" is the word "@x".
  Value value(size_t i) const;
  /// Word i as a key or name: the word itself.
  const std::string& key(size_t i) const { return words.at(i); }
};

/// Where results go: text or JSON on stdout, each written whole.
struct Output {
  bool json = false;
  /// One result: JSON, or text (a string as it is, anything else as JSON).
  void print(const Value& v) const;
  /// Several results: a JSON array, or one text line each.
  void print_all(const std::vector<Value>& vs) const;
  void print(const Json& j) const;
  void line(const std::string& text) const;
};

/// The brokers (or config) named on the command line, from PATRO_BROKER, or the default. Several
/// brokers ("A,B") are the same cluster's, in fail-over order (README "Several brokers").
class Cluster {
 public:
  Cluster(const std::optional<std::string>& broker, const std::optional<std::string>& config,
          ClientOptions options);

  /// The first broker's client endpoint.
  const std::string& endpoint() const { return endpoints_.front(); }
  /// Every broker's client endpoint, in fail-over order (never empty).
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  const ClientOptions& options() const { return options_; }
  /// A name in the registry (looked up at the first broker that answers; a call fails over to the
  /// others); with a config, also an index into its objects.
  Proxy proxy(const std::string& name);
  /// Forgets the config's connection, so that the next proxy() makes a new one.
  void reconnect() { config_proxies_.clear(); }

 private:
  ClientOptions options_;
  std::vector<std::string> endpoints_;
  std::optional<Config> config_;
  std::vector<Proxy> config_proxies_;
};

/// "tcp://…", "ipc://…" as given; "HOST:PORT" as tcp://HOST:PORT; a usage error otherwise.
std::string endpoint_of(const std::string& text, const std::string& from);
/// A comma-separated list of endpoints ("A,B", each as endpoint_of takes it); a usage error if an
/// item is bad or the list is empty.
std::vector<std::string> endpoints_of(const std::string& text, const std::string& from);
std::chrono::milliseconds parse_duration(const std::string& s, const char* what);
int64_t parse_int(const std::string& s, const char* what, int64_t min, int64_t max);

/// Signals that lock, take --exec and tail -f take themselves (sigtimedwait), blocked in every
/// thread: block them before the first connection starts its threads.
sigset_t handled_signals();

int cmd_get(const Invocation&, Cluster&, const Output&);
int cmd_set(const Invocation&, Cluster&, const Output&);
int cmd_call(const Invocation&, Cluster&, const Output&);
int cmd_push(const Invocation&, Cluster&, const Output&);
int cmd_pop(const Invocation&, Cluster&, const Output&);
int cmd_take(const Invocation&, Cluster&, const Output&);
int cmd_ack(const Invocation&, Cluster&, const Output&);
int cmd_touch(const Invocation&, Cluster&, const Output&);
int cmd_bury(const Invocation&, Cluster&, const Output&);
int cmd_buried(const Invocation&, Cluster&, const Output&);
int cmd_kick(const Invocation&, Cluster&, const Output&);
int cmd_isa(const Invocation&, Cluster&, const Output&);
int cmd_lock(const Invocation&, Cluster&, const Output&);
int cmd_ls(const Invocation&, Cluster&, const Output&);
int cmd_locks(const Invocation&, Cluster&, const Output&);
int cmd_tail(const Invocation&, Cluster&, const Output&);
int cmd_stats(const Invocation&, Cluster&, const Output&);

}  // namespace patro::cli
