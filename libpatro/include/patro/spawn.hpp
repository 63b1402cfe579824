// patro::spawn: starts a serving process for you and returns its proxies (Object::Remote's
// connect('-') and connect('host')).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "patro/client.hpp"
#include "patro/export.hpp"
#include "patro/options.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

struct SpawnOptions {
  /// How long the process may take to print its config line.
  std::chrono::milliseconds start_timeout{10000};
  /// How long a stop waits after SIGTERM before it sends SIGKILL.
  std::chrono::milliseconds stop_timeout{5000};
  /// The child gets SIGTERM when the thread that called spawn ends (Linux's PR_SET_PDEATHSIG
  /// follows the calling thread, not the process): a program that spawns from a short-lived
  /// thread and keeps the proxies longer sets this false.
  bool die_with_parent = true;
  /// Object::Remote's WatchDog: when not zero, the child gets PATRO_WATCHDOG_MS (this many
  /// milliseconds) and this process writes a beat (a byte) to its standard input every quarter
  /// of that; a patronize() program (patro-worker included) ends once no beat has come for that
  /// long or its input ended, even if all its lanes hang in a method (ServerOptions::watchdog
  /// says how). It thus ends when this process hangs or dies, or the connection to it (ssh)
  /// does. Through ssh the variable does not pass: give the far side `patro-worker --watchdog
  /// MS`, or `env PATRO_WATCHDOG_MS=MS PROGRAM`. Zero (the default): no beats, and the child
  /// gets no PATRO_WATCHDOG_MS (one this process has is not passed on).
  std::chrono::milliseconds watchdog{0};
  /// How the proxies connect (as get_proxies' options).
  ClientOptions client;
};

/// Starts argv (argv[0] is searched in PATH when it holds no '/') and returns proxies to the
/// objects of the config it prints, in their order, all on one connection.
///
/// The child runs with PATRO_SPAWNED=1 in its environment, under which patronize() (and so
/// patro-worker) prints its config as one line on standard output once serving; a program that
/// does not see the variable (one started through ssh) prints it itself (patro-worker
/// --config-out -). spawn reads the child's standard output up to the first line that parses as a
/// config; every other line the child prints there is copied to this process's standard output.
/// Its standard input is a pipe that stays open until the child is stopped (patro-worker
/// --watch-stdin stops at its end: through ssh, the far side then stops with the connection).
///
/// The process is stopped when the last proxy of that connection goes (the proxies a call
/// returns through it included), or by stop_spawned: its standard input is closed, it gets SIGTERM
/// and, if still running after stop_timeout, SIGKILL; it is reaped, and lock segments in /dev/shm
/// of processes that are gone are removed (patro::remove_stale_lock_segments).
///
/// Throws Error(invalid_argument) for an empty argv or a program that cannot be run,
/// Error(server_unavailable) if the child exits (its status in the message) or closes its
/// standard output before printing a config, Error(timeout) if it prints none within
/// start_timeout; the child is then stopped and reaped. Errors of get_proxies pass through.
///
///   auto ps = patro::spawn({"patro-worker", "queue", "jobs"});           // connect('-')
///   auto ps = patro::spawn({"ssh", "host1", "patro-worker", "--watch-stdin", "--config-out", "-",
///                           "--broker", "tcp://hub:7171", "queue", "jobs"}); // connect('host1')
std::vector<Proxy> spawn(std::vector<std::string> argv, const SpawnOptions& options = {});

/// The process id of the child whose proxies p's connection belongs to; 0 if p did not come from
/// spawn.
int spawned_pid(const Proxy& p);

/// Stops the child whose proxies p's connection belongs to now (as the last proxy going does) and
/// returns its exit status: its exit code, or 128 + the signal that ended it. Idempotent (a second
/// call returns the same status). Later calls through its proxies fail (the server is gone).
/// Throws Error(invalid_argument) if p did not come from spawn.
int stop_spawned(const Proxy& p);

}  // namespace patro
PATRO_PUBLIC_END
