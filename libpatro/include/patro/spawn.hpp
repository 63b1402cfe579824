// patro::spawn: starts a serving process for you and returns its proxies (Object::Remote's
// connect('-') and connect('host')).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "patro/client.hpp"
#include "patro/export.hpp"
#include "patro/options.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// Whether a spawn through ssh carries its connection through ssh's own port forwarding
/// (SpawnOptions::ssh_forward; README "Remote processes: spawn").
enum class SshForward : uint8_t {
  /// On when argv[0] is ssh and no argument of its remote command is --broker (or
  /// --broker=…): the far side then has no broker of its own to name.
  automatic = 0,
  /// On: argv is an ssh command line whatever argv[0] is called (a wrapper that takes ssh's
  /// options and runs it).
  on,
  /// Off: the far side reaches a broker over TCP by itself (--broker tcp://hub:7171), as before.
  off,
};

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
  /// Nothing open between the hosts but ssh: spawn runs a broker of its own on this host's
  /// loopback (free ports), adds `-o ExitOnForwardFailure=yes -R 127.0.0.1:P:127.0.0.1:BACK` to
  /// the ssh command (P: a free port on the far host's loopback, chosen at random and tried again
  /// elsewhere if taken), and runs the remote command through
  /// `env PATRO_SPAWNED=1 PATRO_SPAWN_BROKER=tcp://127.0.0.1:P PATRO_WATCHDOG_MS=MS`, so that
  /// patronize() (patro-worker included) registers there, prints its config, leaves its direct
  /// path off (its loopback is not this host's) and ends with the connection; an argument
  /// holding `{broker}` gets that endpoint in its place. The proxies go through the broker only
  /// (client.route automatic becomes Route::broker). The far side always has a watchdog: the
  /// watchdog option, or forward_watchdog when that is zero. A stop closes ssh's standard input
  /// and waits (stop_timeout) for the far side to end before it signals ssh.
  SshForward ssh_forward = SshForward::automatic;
  /// The far side's watchdog through a forward when watchdog is zero.
  std::chrono::milliseconds forward_watchdog{10000};
  /// The broker a forward runs on this host: its CURVE keys and allow lists, heartbeat and
  /// limits (the far side then gives `--curve-key FILE --broker-key KEY`, and client the
  /// client's keys). Its frontend and backend are always tcp://127.0.0.1:* (advertise unused).
  BrokerOptions forward_broker;
};

/// Starts argv (argv[0] is searched in PATH when it holds no '/') and returns proxies to the
/// objects of the config it prints, in their order, all on one connection.
///
/// The child runs with PATRO_SPAWNED=1 in its environment, under which patronize() (and so
/// patro-worker) prints its config as one line on standard output once serving; through an ssh
/// forward (SpawnOptions::ssh_forward) the far side gets it through env; a program that does not
/// see the variable (ssh to a broker over TCP) prints it itself (patro-worker --config-out -).
/// spawn reads the child's standard output up to the first line that parses as a config; every
/// other line the child prints there is copied to this process's standard output.
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
///   auto ps = patro::spawn({"ssh", "host1", "patro-worker", "queue", "jobs"});  // ssh alone
///   auto ps = patro::spawn({"ssh", "host1", "patro-worker", "--watch-stdin", "--config-out", "-",
///                           "--broker", "tcp://hub:7171", "queue", "jobs"}); // a broker over TCP
///
/// Through an ssh forward (SpawnOptions::ssh_forward) also Error(invalid_argument) for an ssh
/// command line with no remote command, and Error(server_unavailable) when ssh could not forward
/// a port on the far host after several tries (its sshd's AllowTcpForwarding, PermitListen).
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
