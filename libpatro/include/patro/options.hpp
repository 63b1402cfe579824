// Every limit and default of Patro in one place, in typed option structs.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "patro/curve.hpp"
#include "patro/export.hpp"
#include "patro/logging.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

using namespace std::chrono_literals;

/// Limits that protect a process from its peers.
struct Limits {
  /// Largest message body accepted or sent. Larger requests get Errc::message_too_large.
  size_t max_message_size = 16u << 20;
  /// FlatBuffers verifier: the deepest nesting and the most tables in one body (counted each time
  /// one is reached; a body of N bytes may hold no more than N/4 + 64, docs/WIRE.md "Values").
  unsigned max_depth = 128;
  unsigned max_tables = 1'000'000;
  /// Largest index a write may extend an array to (Perl would allocate it; we refuse past this).
  int64_t max_array_extend = 16 << 20;
  /// Deepest a monitor may stack one lock (deeper: SyncError::deep_recursion).
  uint32_t max_lock_depth = 10000;
  /// Most lock and wait requests parked at once on one server.
  size_t max_lock_waiters = 100000;
  /// Size of a server's lock table segment in /dev/shm (it holds every object's lock state).
  size_t lock_segment_bytes = 64u << 20;
  /// Messages a socket queues in each direction before it pushes back (ZeroMQ's high-water marks).
  int high_water_mark = 100'000;
  /// How long closing a connection may still spend delivering its last messages (a disconnect,
  /// a final reply) before they are dropped.
  std::chrono::milliseconds close_linger = 200ms;
  /// A server's reply cache (exactly-once delivery under retries): the most requests remembered
  /// per client, and how long one is. A request retried after it was forgotten (by count or age)
  /// runs again, so the age should exceed the longest call deadline, and the count what a client
  /// keeps in flight (ClientOptions::max_in_flight).
  size_t reply_cache_entries = 10'000;
  std::chrono::milliseconds reply_cache_age = 60s;
  /// The most bytes of reply bodies a server's reply cache holds, all clients together. Past it,
  /// the oldest finished replies drop their bodies first; a resend of such a request is answered
  /// outcome_unknown (it ran once), never run again. So are the replies of a client gone.
  size_t reply_cache_bytes = 64u << 20;
  /// Most lanes (worker threads) one server may register.
  unsigned max_lanes = 1024;
  /// Most messages a server lane reads ahead of the request it runs next. A lane reads what
  /// waits on its sockets before it runs each request, so that a CANCEL sent behind a request is
  /// seen before that request runs (docs/WIRE.md "Cancelling"); a CANCEL further behind than this
  /// comes too late for a request that had not started.
  size_t lane_read_ahead = 1000;
  /// What a socket accepts in one frame: the largest body, framed twice over (a batch of calls),
  /// with room for envelope frames. ZeroMQ drops the peer that sends more.
  int64_t socket_message_cap() const {
    const size_t cap = max_message_size * 2 + (64u << 10);
    return cap > 0x7fffffffu ? 0x7fffffff : static_cast<int64_t>(cap);
  }
};

/// Heartbeats, between every client or server and its broker, in both directions. A peer that is
/// silent for liveness × interval is dead.
struct Heartbeat {
  std::chrono::milliseconds interval = 1000ms;
  unsigned liveness = 3;
  std::chrono::milliseconds window() const { return interval * liveness; }
};

/// Options of a broker (patro-broker, or the one patronize() embeds).
struct BrokerOptions {
  /// Where clients connect (ROUTER). "tcp://127.0.0.1:*" picks a free port.
  std::string frontend = "tcp://127.0.0.1:7170";
  /// Where servers connect (ROUTER).
  std::string backend = "tcp://127.0.0.1:7171";
  /// The client endpoint that servers write into their configs. Empty: the bound front end
  /// (set it when binding a wildcard address such as tcp://0.0.0.0:7170).
  std::string advertise;
  Heartbeat heartbeat;
  Limits limits;
  /// Most names in the registry.
  size_t max_names = 100'000;
  /// What one REGISTER may carry (more: the whole REGISTER is refused, counted and logged): its
  /// names, and the bytes of their strings (name, type name, reftype) together. Each string in a
  /// REGISTER (a name, a type name, a reftype, a direct endpoint) is at most max_name_bytes.
  size_t max_register_names = 10'000;
  size_t max_register_bytes = 1u << 20;
  size_t max_name_bytes = 1024;
  /// Time each routed request to its reply for Broker::stats() (in_flight, latency): one hash-map
  /// entry per request in flight (at most max_tracked; older than an hour: forgotten). Off by
  /// default, as it costs the routing path a map insert and erase.
  bool track_latency = false;
  size_t max_tracked = 1'000'000;
  /// Most bytes of request bodies of one client routed to servers and not yet answered (queued
  /// at the broker for a lane, or running). A request past it is answered overloaded as NO_ROUTE
  /// (it did not run; the client resends it later), counted (refused_by_kind "client_bytes") and
  /// logged a few times per 10 s. A client with none unanswered may always send one.
  size_t max_client_bytes = 64u << 20;
  /// Most connections the broker keeps open, both ports together. One accepted past it is closed
  /// at once (counted as refused_by_kind "connection_cap", logged a few times per 10 s), so the
  /// broker never runs out of descriptors, where libzmq's accept would spin. The last eighth (at
  /// least one) is kept for the server port: clients that fill the rest cannot lock the servers
  /// out. (What its peer got
  /// in before the close may still be served: libzmq reads while the broker hears of it.) 0 (the
  /// default): the descriptor limit (soft RLIMIT_NOFILE, as the broker starts) less 64 for the
  /// broker's own.
  size_t max_connections = 0;
  /// CURVE: the broker's key pair. Set, both ports encrypt and authenticate every peer through
  /// the broker's ZAP handler; empty, they are plaintext.
  CurveKeyPair curve;
  /// The public keys (Z85) allowed on the client port and on the server port: those listed here
  /// and those in the files (one key per line, `#` comments; Broker::reload() reads them again).
  /// With CURVE and neither a list nor a file for a port, any key is accepted there (encryption
  /// without authentication, logged as a warning at start).
  std::vector<std::string> allow_clients;
  std::string allow_clients_file;
  std::vector<std::string> allow_servers;
  std::string allow_servers_file;
  /// Binding a port to anything but loopback (127.0.0.0/8, ::1, localhost, ipc://, inproc://)
  /// without CURVE is refused unless this is set: plaintext off loopback on purpose only.
  bool insecure = false;
  /// Most bytes sent to one client that its TCP has not yet acknowledged (replies queued at the
  /// broker for a client that does not read them). Past it, the client's requests are answered
  /// overloaded as NO_ROUTE, and a reply for it is held back: the client gets NO_ROUTE instead,
  /// and its resend is answered from the server's reply cache. Counted (refused_by_kind
  /// "client_unread") and logged a few times per 10 s. Counted on TCP connections only.
  size_t max_client_unread = 64u << 20;
};

/// Which way a client's requests go (the direct path; see README "The direct path").
enum class Route : uint8_t {
  /// Straight to the server when it can be reached (it advertised a direct endpoint and answers
  /// there), through the broker otherwise and whenever the direct connection fails.
  automatic = 0,
  /// Straight to the server only: a call to a server that cannot be reached directly fails
  /// (Errc::server_unavailable).
  direct,
  /// Through the broker only (the behaviour before the direct path).
  broker,
};
/// "auto", "direct" or "broker"; throws Error(invalid_argument) for anything else.
Route parse_route(const std::string& text);
const char* route_name(Route r) noexcept;

/// Where a client's Future::then continuations run (ClientOptions::continuations).
enum class Continuations { any_thread, event_loop };

/// Options of a client connection (one get_proxies() call).
struct ClientOptions {
  /// Which way requests go: direct to their server when reachable (the default), direct only,
  /// or through the broker only. A config's route (Config::route) applies when this is automatic.
  Route route = Route::automatic;
  /// Deadline of each call.
  std::chrono::milliseconds call_timeout = 30s;
  /// How long get_proxies waits for the broker to answer.
  std::chrono::milliseconds connect_timeout = 5s;
  /// Deadline of a lock or wait call given no timeout (it still fails at once if the server or
  /// the broker dies). A call that can hang forever is a bug.
  std::chrono::milliseconds max_lock_wait = std::chrono::hours(24);
  /// Most requests (synchronous, async, and batches of oneway calls) in flight on one connection;
  /// starting one more waits until an answer arrives.
  size_t max_in_flight = 10'000;
  /// Resend a request whose reply may have been lost (the broker restarted or went silent, the
  /// server was not registered yet, or it re-registered) until its deadline, with the same request
  /// id: the server's reply cache answers a copy it already ran, so every operation is safe to
  /// resend. Off: such a request fails at once (the behaviour before retries).
  bool retry = true;
  /// The first wait before resending a request that found no route (the server not registered);
  /// it doubles up to the heartbeat interval.
  std::chrono::milliseconds retry_backoff = 20ms;
  /// Oneway calls (Proxy::send, print_async…) that may be sent but not yet acknowledged by the
  /// server, per connection. A sender past it waits: a slow server slows its senders, memory stays
  /// bounded end to end, and nothing is dropped. At least oneway_batch.
  size_t oneway_window = 8192;
  /// Most oneway calls, and most bytes, in one batch message.
  size_t oneway_batch = 256;
  size_t oneway_batch_bytes = 64u << 10;
  /// How long a partly filled batch waits for more calls before it is sent (Nagle's delay). Any
  /// other request on the connection, and patro::await_oneway, send it at once.
  std::chrono::microseconds oneway_delay = std::chrono::microseconds(1000);
  /// CURVE towards the broker. Without a broker key here, the one a config carries is used.
  CurveOptions curve;
  Heartbeat heartbeat;
  Limits limits;
  /// Where Future::then continuations run. any_thread (the default): in whichever thread received
  /// the answer (a caller waiting on the connection, or its heartbeat thread). event_loop: never
  /// there; they wait until the program's own loop runs them with patro::run_ready, when the
  /// connection's patro::event_fd is readable (poll, epoll, Boost.Asio, libuv, GLib).
  Continuations continuations = Continuations::any_thread;
  /// Callbacks (patro::callback): how long the connection's callback host keeps serving an
  /// object after every server it was passed to let go of it (the lease a server's
  /// reference_lease is for its objects): a reference that a server handed on stays good that
  /// long.
  std::chrono::milliseconds callback_lease = 30s;
  /// Log forwarding (Object::Remote's Log::Remote): when set, every server this connection sends
  /// a request to sends it its log lines at or above this level (of the components
  /// forward_log_selections selects), over the connection; they are written to this process's
  /// log (patro::write_log's sink, under this process's selections but not its level) as
  /// "[host:pid who] text", or given to on_log. Unset (the default): none are sent.
  /// patro::Client::forward_logs changes it on a live connection; SpawnOptions::client passes it
  /// to a spawned child's connection.
  std::optional<LogLevel> forward_logs;
  /// Which components' lines are forwarded, as PATRO_LOG_SELECTIONS says it ("" every one).
  std::string forward_log_selections;
  /// Where forwarded lines go instead of the log, if set. Called on a thread that drives the
  /// connection, with the connection's socket held: keep it short, and make no call on this
  /// connection from it.
  std::function<void(const LogRecord&)> on_log;
};

/// Options of a server (patronize).
struct ServerOptions {
  /// The broker's server endpoint (its back end) to register with. Empty (and brokers empty):
  /// patronize starts a broker inside this process on 127.0.0.1 with free ports.
  std::string broker;
  /// Several brokers' server endpoints (no single point of failure): the server registers with
  /// each, heartbeats each and answers requests from any of them; its names are registered at
  /// each. When set, broker is ignored (a non-empty broker alone means {broker}). See README
  /// "Several brokers".
  std::vector<std::string> brokers;
  /// The direct path: where each lane binds a ROUTER of its own for requests that skip the broker
  /// (advertised when it registers). "auto" (the default): the interface this host uses to reach
  /// the broker (127.0.0.1 for a broker on loopback), a free port per lane; a ZeroMQ endpoint
  /// ("tcp://10.0.0.5:*", "tcp://10.0.0.5:7200": lane i binds port 7200 + i); "" or "none": off.
  /// With CURVE the ROUTERs are encrypted with the server's key pair and admit the client keys a
  /// broker vouches for (README "The direct path"). In plaintext, off loopback it needs
  /// `insecure`: an explicit endpoint is refused without it, and "auto" then leaves the direct
  /// path off.
  std::string direct = "auto";
  /// Binding the direct path to anything but loopback (127.0.0.0/8, ::1, localhost, ipc://,
  /// inproc://) in plaintext is refused unless this is set (as BrokerOptions::insecure).
  bool insecure = false;
  /// What clients are told to connect to for the direct path, when they reach it through an
  /// address other than the bound one (a port forward): "tcp://host:port", lane i advertising
  /// port + i. Empty: the bound endpoint.
  std::string direct_advertise;
  /// How long patronize() waits for the broker to accept the registration.
  std::chrono::milliseconds connect_timeout = 5s;
  /// Worker threads; 0 means $PATRO_THREADS, or 4 when that is unset.
  unsigned threads = 0;
  /// Names the server's lock segments in /dev/shm (patro-NAME-locks…). A server that starts and
  /// finds segments of its own name (left by a crash) removes and recreates them. Empty: a name
  /// made of the process id and the server id.
  std::string name;
  /// The server half of its objects' ids; 0 (the default): random. A server that restarts with the
  /// same server_id and serves the same objects gives them the same ids (a Named object's follows
  /// from its name, wherever it stands in the list; an unnamed one's from its position), so
  /// clients' proxies outlive the restart and their idempotent calls in flight are retried against
  /// it (nested objects made later get new random ids, as ever). Keep it secret where ids matter:
  /// the served objects' ids derive from it.
  uint64_t server_id = 0;
  /// With a server_id: a secret of this server (any bytes, at most 256; patro-worker keeps 32
  /// random ones beside its id in --data), sent in each REGISTER. A process restarted under the
  /// same server_id with the same secret replaces the old one at the broker at once, without
  /// waiting for it to miss its heartbeats; another process with the id and without the secret is
  /// refused while the old one lives. In plaintext the secret travels in the clear, as everything
  /// does (docs/SECURITY.md). Two live processes given the same id and secret displace each other:
  /// give each server its own. Empty (the default): none; a restarted server waits until its old
  /// process is dropped (under CURVE the server's key proves it instead).
  std::string server_secret;
  /// Whether a monitor may steal a lock from another (Perl Patro's steal_lock_ok). Off by default.
  bool steal_lock_ok = false;
  /// Refuse open, close, sysopen, opendir and closedir through proxies to served file and
  /// directory handles (Perl Patro's default; its :insecure tag is false here). Pipe modes are
  /// refused either way.
  bool secure_filehandles = true;
  /// Perl Patro's server operation options. Perl's defaults (30 s each) make a server that ends
  /// by itself; here a zero idle_timeout (the default) means never: the server runs until
  /// Config::stop. With an idle_timeout, a server shuts itself down (Config::wait returns, its
  /// /dev/shm segments are removed) once it has had no client for idle_timeout and has run for at
  /// least keep_alive. A client counts from its first request until it closes its connection or
  /// misses its heartbeats at the broker. No signals are used (Perl's fincheck used SIGALRM).
  /// keep_alive: the least time the server stays up, even if no client ever comes.
  std::chrono::milliseconds keep_alive{0};
  /// idle_timeout: how long to wait for a new client after the last one left. 0: never stop.
  std::chrono::milliseconds idle_timeout{0};
  /// fincheck_freq: how often the server checks whether it has clients left.
  std::chrono::milliseconds fincheck_freq = 1s;
  /// Object::Remote's WatchDog: when not zero, the process ends once its standard input has
  /// brought nothing for this long, or reached its end, however its lanes are doing: a thread of
  /// its own logs why, removes the process's lock segments, sends the process SIGTERM and, if it
  /// still runs max(1 s, watchdog) later, calls _exit(1). Standard input is then the beat
  /// stream: patro::spawn with SpawnOptions::watchdog writes a byte to it every quarter of the
  /// time (through ssh as well). Zero (the default): $PATRO_WATCHDOG_MS (which spawn sets), or
  /// no watchdog. One per process: the first server started with one runs it.
  std::chrono::milliseconds watchdog{0};
  /// The deadline a served call runs under when its request carries none, and the longest one a
  /// request may ask for (a served method learns it through patro::Deferred and file operations).
  std::chrono::milliseconds default_call_deadline = 30s;
  std::chrono::milliseconds max_call_deadline = std::chrono::hours(1);
  /// The bound on a lock or wait request that carries none (a client sends its
  /// ClientOptions::max_lock_wait): a parked request never waits forever.
  std::chrono::milliseconds max_lock_wait = std::chrono::hours(24);
  /// How long an object the server sent a reference to (a nested container, an object a method
  /// returned) outlives the last client reference to it. A client's proxies tell the server when
  /// the client's last copy of a reference is gone (batched, oneway), and a gone client drops all
  /// of its references; once none is left the object is freed after this lease, which covers a
  /// reference still in flight. Served roots, named objects and objects a lock names are never
  /// freed, and an object still stored in a served container lives on (a reference sent later
  /// gives it a new id).
  std::chrono::milliseconds reference_lease = 30s;
  /// Called (on a worker thread) when a client connection is gone: closed, or dead by missed
  /// heartbeats. Its locks are already released. The argument is Deferred::client_id().
  std::function<void(uint64_t client_id)> on_client_gone;
  /// Log forwarding: the most lines queued for one subscribed client (ClientOptions::forward_logs)
  /// before it has been sent them; past it, lines for that client are dropped and counted (the
  /// next line it gets says how many), so that a slow or gone client never slows the server nor
  /// grows its memory.
  size_t log_forward_queue = 1000;
  /// CURVE towards the broker; the config patronize() returns carries curve.broker_key. With no
  /// broker (an embedded one) and a key pair here, the embedded broker uses that pair and accepts
  /// only this server on its server port.
  CurveOptions curve;
  Heartbeat heartbeat;
  Limits limits;
};

}  // namespace patro
PATRO_PUBLIC_END
