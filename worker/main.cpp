// patro-worker: a server that needs no C++ from its user. It serves ready-made objects named on
// its command line (or in a file), registered by name with the broker, using only libpatro's
// public API.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "cli/curve_flags.hpp"
#include "cli/options.hpp"
#include "daemon.hpp"
#include "data_dir.hpp"
#include "job_queue.hpp"
#include "kv_store.hpp"
#include "log_writer.hpp"
#include "server_identity.hpp"
#include "verify.hpp"

namespace {

const char* kObjects = R"(OBJECT is one of:
  queue NAME         a job queue: push, push_many (with priority, delay_ms, ttr_ms, dedup), take
                     (blocking, with a timeout), take_leased, take_many, take_flat (a batch as
                     one flat list), ack, ack_many (pairs, or flat), ack_take
                     (ack one job and take the next in one call), nack, touch, bury, buried,
                     kick, stats, size, leased, peek. A taken job is leased
                     until acknowledged; one not acknowledged within its time-to-run (default
                     the visibility timeout), or whose taker died, is delivered again (a
                     detached lease, take_leased(wait, lease_ms, true), survives its taker:
                     patro take uses it); with --max-deliveries N, buried after N.
  log NAME PATH      a log writer: write, write_many, rotate, read, follow, size. Lines land
                     whole, in the order received. A read or follow answers the file's
                     generation with the next offset; a position {generation, offset} follows
                     the log across rotations (rotate, or mv and SIGHUP).
  hash NAME          a key-value store: get, set, erase, exists, keys, size
  counter NAME       an atomic counter: add, get, set, cas

Each is registered by NAME at the broker, at each broker with several --broker (clients find
them with patro::get_proxy(endpoint, NAME) or the patro CLI). Logs to stderr (ISO-8601 UTC
times; under systemd, journal priorities). SIGHUP reopens the served log files and --log-file
(after logrotate moved them). Tells systemd READY=1 once serving. Stops cleanly on SIGINT or
SIGTERM.
With --data, each log is checked as it is read: a torn tail (the incomplete last write of a
crash) is cut with a warning naming the file, the offset and the bytes; damage anywhere else stops
the start with an error naming the file and the offset (--repair: keep it and cut). A second
worker on the same --data refuses at once. patro-worker verify DIR checks a data directory
offline (patro-worker verify --help).
Exit status: 0 after a clean stop, 1 on a start-up error, 2 on bad options.)";

const char* kVerifyUsage = R"(Usage: patro-worker verify DIR
Checks the --data directory DIR offline, as a start reads it, and changes nothing: each
write-ahead log's header, every record's magic, sequence number and checksum, and that each record
is what its object writes. One line per log on standard output; each problem, naming the file and
the offset, on standard error.
Exit status: 0 clean; 1 a log is damaged or unreadable (a start refuses it; --repair cuts it);
3 only torn tails (a start cuts them with a warning); 2 bad usage.
)";

struct Spec {
  std::string kind, name, path;
};

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "patro-worker: %s\n(see patro-worker --help)\n", what.c_str());
  std::exit(2);
}

// Parses OBJECT words starting at i; returns how many it took.
size_t parse_object(const std::vector<std::string>& w, size_t i, std::vector<Spec>& out) {
  const std::string& kind = w[i];
  if (kind == "queue" || kind == "hash" || kind == "counter") {
    if (i + 1 >= w.size()) usage_error(kind + " needs a NAME");
    out.push_back({kind, w[i + 1], {}});
    return 2;
  }
  if (kind == "log") {
    if (i + 2 >= w.size()) usage_error("log needs a NAME and a PATH");
    out.push_back({kind, w[i + 1], w[i + 2]});
    return 3;
  }
  usage_error("unknown object kind '" + kind + "' (queue, log, hash or counter)");
}

bool write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!(out << text << '\n') || !out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string render_metrics(const std::vector<std::shared_ptr<patro::worker::JobQueue>>& queues,
                           const std::vector<std::shared_ptr<patro::worker::LogWriter>>& logs,
                           const std::vector<Spec>& specs, std::vector<patro::Proxy>& proxies) {
  using patro::daemon::label_value;
  using patro::daemon::metric;
  std::string out;
  auto label = [](const char* key, const std::string& v) {
    return std::string(key) + "=\"" + label_value(v) + "\"";
  };
  for (size_t i = 0; i < queues.size(); ++i)
    metric(out, "patro_queue_ready_jobs", "gauge", i == 0 ? "Jobs waiting to be taken" : "",
           static_cast<double>(queues[i]->size()), label("queue", queues[i]->name()));
  for (size_t i = 0; i < queues.size(); ++i)
    metric(out, "patro_queue_leased_jobs", "gauge",
           i == 0 ? "Jobs taken and not yet acknowledged" : "",
           static_cast<double>(queues[i]->leased()), label("queue", queues[i]->name()));
  for (const char* state : {"delayed", "buried"})
    for (size_t i = 0; i < queues.size(); ++i)
      metric(out, std::string("patro_queue_") + state + "_jobs", "gauge",
             i != 0                            ? ""
             : std::string(state) == "delayed" ? "Jobs pushed with a delay, not yet ready"
                                               : "Jobs set aside until kicked (dead letters)",
             static_cast<double>(queues[i]->stats()[state].as<int64_t>()),
             label("queue", queues[i]->name()));
  size_t n = 0;
  for (const Spec& s : specs) {
    if (s.kind != "log") continue;
    const double bytes = static_cast<double>(logs.at(n)->size());
    metric(out, "patro_log_bytes", "gauge", n == 0 ? "Bytes in a served log's current file" : "",
           bytes, label("log", s.name));
    ++n;
  }
  std::vector<patro::LockInfo> locks;
  for (size_t i = 0; i < specs.size() && i < proxies.size(); ++i)
    locks.push_back(patro::lock_info(proxies[i]));
  for (size_t i = 0; i < locks.size(); ++i)
    metric(out, "patro_lock_waiters", "gauge",
           i == 0 ? "Requests waiting for an object's lock (notified waits included)" : "",
           static_cast<double>(locks[i].waiters), label("object", specs[i].name));
  for (size_t i = 0; i < locks.size(); ++i)
    metric(out, "patro_lock_held", "gauge", i == 0 ? "1 while an object's lock is held" : "",
           locks[i].holder != 0 ? 1 : 0, label("object", specs[i].name));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "verify") {
    if (argc != 3 || std::string(argv[2]).rfind('-', 0) == 0) {
      std::fprintf(argc == 3 && (std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h")
                       ? stdout
                       : stderr,
                   "%s", kVerifyUsage);
      return argc == 3 && (std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h") ? 0
                                                                                             : 2;
    }
    return patro::worker::verify_data_directory(argv[2], std::cout, std::cerr);
  }
  patro::TerminationSignals signals;
  std::vector<Spec> specs;
  // Declared before so (whose on_client_gone holds the queues): released only after every
  // write-ahead log is closed.
  std::unique_ptr<patro::worker::DataDirLock> data_lock;
  patro::ServerOptions so;
  patro::BrokerOptions bo;
  std::string data_dir, config_out, endpoints_file, metrics, log_level, log_file;
  patro::worker::WalOptions wal_options;
  auto visibility = std::chrono::milliseconds(30000);
  patro::worker::LogOptions log_options;
  CLI::App app(
      "Serves ready-made objects (a job queue, a log writer, a key-value hash, a counter), "
      "each registered by name at the broker.",
      "patro-worker");
  patro::cli::setup(app);
  app.footer(kObjects);
  std::vector<std::string> object_words;
  std::string objects_file, log_sync;
  int64_t visibility_ms = visibility.count(), heartbeat_ms = 0, rotate_bytes = 0;
  app.add_option("OBJECT", object_words, "queue NAME | log NAME PATH | hash NAME | counter NAME")
      ->type_name("");
  std::vector<std::string> broker_args;
  app.add_option("--broker", broker_args,
                 "register with this broker's server endpoint (its --back); several brokers "
                 "(--broker again, or a comma-separated list): the worker registers with every "
                 "broker given, and clients may use any of them (README \"Several brokers\"); "
                 "without it, the worker runs a broker itself (--front, --back)")
      ->type_name("ENDPOINT")
      ->allow_extra_args(false);
  app.add_option("--direct", so.direct,
                 "where each lane takes requests straight from clients (the direct path): auto "
                 "(the interface that reaches the broker, free ports), an endpoint such as "
                 "tcp://10.0.0.5:7200 (lane i: port + i), or none; encrypted under CURVE "
                 "(default auto)")
      ->type_name("ENDPOINT");
  app.add_option("--direct-advertise", so.direct_advertise,
                 "the direct endpoint clients are told (a port forward; lane i: port + i)")
      ->type_name("ENDPOINT");
  app.add_option("--front", bo.frontend, "the embedded broker's client endpoint")
      ->type_name("ENDPOINT")
      ->capture_default_str();
  app.add_option("--back", bo.backend, "the embedded broker's server endpoint")
      ->type_name("ENDPOINT")
      ->capture_default_str();
  app.add_option("--objects", objects_file,
                 "read OBJECT lines from FILE (one per line; # starts a comment)")
      ->type_name("FILE");
  app.add_option(
         "--data", data_dir,
         "keep queues, hashes and counters in write-ahead logs in DIR (created, mode "
         "0750, if missing): they survive a restart, kill -9 included, and a change is "
         "acknowledged only once it is on disk; one worker at a time (DIR/patro-worker.lock);"
         " patro-worker verify DIR checks it offline")
      ->type_name("DIR");
  app.add_flag("--repair", wal_options.repair,
               "start even if a write-ahead log in --data is damaged: keep the file as "
               "FILE.corrupt-TIME, then cut the log where the damage starts (the records after it "
               "are lost; without --repair such a log stops the start)");
  app.add_option("--max-record-bytes", wal_options.max_record_bytes,
                 "refuse a change whose write-ahead log record would exceed N bytes "
                 "(message_too_large; the change is not made)")
      ->type_name("N")
      ->check(patro::cli::range(int64_t{1}, int64_t{patro::worker::wal_format::kMaxPayload}))
      ->capture_default_str();
  app.add_option("--compact-ratio", wal_options.compact_ratio,
                 "compact a write-ahead log online once it holds more than R times the live "
                 "state (0: only at start-up)")
      ->type_name("R")
      ->check(patro::cli::range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--compact-min-bytes", wal_options.compact_min_bytes, "... and more than N bytes")
      ->type_name("N")
      ->check(patro::cli::non_negative())
      ->capture_default_str();
  app.add_option("--visibility", visibility_ms, "a queue's lease (visibility) timeout in ms")
      ->type_name("MS")
      ->check(patro::cli::non_negative())
      ->capture_default_str();
  int64_t max_deliveries = 0;
  app.add_option("--max-deliveries", max_deliveries,
                 "bury a queue's job delivered N times without an ack (0: never)")
      ->type_name("N")
      ->check(patro::cli::range<int64_t>(0, 1000000))
      ->capture_default_str();
  app.add_option("--log-sync", log_sync,
                 "always (a line is acknowledged once on disk), never (default), or a number "
                 "of milliseconds between syncs")
      ->type_name("POLICY");
  app.add_flag("--log-prefix", log_options.prefix,
               "prefix each line with the time and the sender's client id (text logs)");
  app.add_option("--log-format", log_options.format,
                 "text (the lines as written), or json: one object per line with ts, host, "
                 "sender, level, line, and the fields of write_fields")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, patro::worker::LogOptions::Format>{
              {"text", patro::worker::LogOptions::Format::text},
              {"json", patro::worker::LogOptions::Format::json}},
          CLI::ignore_case))
      ->type_name("FORMAT")
      ->default_str("text");
  app.add_option("--log-rotate-bytes", rotate_bytes,
                 "rotate a log when it would grow past N bytes (0: never)")
      ->type_name("N")
      ->check(patro::cli::non_negative());
  app.add_option("--log-keep", log_options.keep,
                 "rotated files of each log kept: PATH.1 .. PATH.N, the oldest removed at a "
                 "rotation (0: none); also how many older files stay open for followers")
      ->type_name("N")
      ->check(patro::cli::range(0, 1000))
      ->capture_default_str();
  app.add_option("--log-keep-bytes", log_options.keep_bytes,
                 "and at most N bytes of them: at a rotation the oldest rotated files are "
                 "removed until the rest total at most N; PATH.1 always stays (0: no bound)")
      ->type_name("N")
      ->check(patro::cli::non_negative());
  app.add_option("--threads", so.threads, "worker threads (default $PATRO_THREADS, or 4)")
      ->type_name("N");
  app.add_option("--name", so.name, "the server's name (its lock segments in /dev/shm)");
  std::string server_id_text;
  app.add_option("--server-id", server_id_text,
                 "the server's id (16 hex digits, not 0): its objects' ids follow from it and "
                 "their names, so clients' proxies outlive a restart. With --data it is kept in "
                 "DIR/server-id (made on the first start, read on later ones) and this need not "
                 "be given; without either, a random id each start")
      ->type_name("ID");
  std::string server_secret_path;
  app.add_option("--server-secret", server_secret_path,
                 "with --server-id and no --data: a file (0600) holding this server's secret, "
                 "64 hex digits (openssl rand -hex 32), by which a restart replaces its old "
                 "process at the broker at once (--data keeps its own)")
      ->type_name("FILE")
      ->needs("--server-id")
      ->excludes("--data");
  app.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat interval (default 1000)")
      ->type_name("N")
      ->check(patro::cli::non_negative());
  app.add_option("--config-out", config_out,
                 "write the config (one line; objects in command-line order) to FILE; - for "
                 "standard output (patro::spawn through ssh reads it there)")
      ->type_name("FILE");
  bool watch_stdin = false;
  app.add_flag("--watch-stdin", watch_stdin,
               "stop (as on SIGTERM) when standard input reaches its end: under patro::spawn "
               "through ssh, the worker stops when its parent or the connection goes");
  int64_t watchdog_ms = 0;
  app.add_option("--watchdog", watchdog_ms,
                 "end when standard input has brought nothing for MS milliseconds, or ended, "
                 "even if every lane hangs: SIGTERM, then _exit after max(1 s, MS) (patro::spawn "
                 "with SpawnOptions::watchdog beats on it, through ssh too; default "
                 "$PATRO_WATCHDOG_MS, which spawn sets, or none)")
      ->type_name("MS")
      ->check(patro::cli::range(int64_t{0}, int64_t{24} * 3600 * 1000));
  app.add_option("--endpoints-file", endpoints_file,
                 "write \"FRONT BACK\" of the embedded broker to FILE once bound")
      ->type_name("FILE");
  app.add_option("--metrics", metrics,
                 "serve Prometheus metrics over HTTP at ENDPOINT/metrics (e.g. "
                 "tcp://127.0.0.1:9171)")
      ->type_name("ENDPOINT");
  app.add_option("--log-level", log_level,
                 "fatal, error, warn, info (default; or $PATRO_LOG_LEVEL), verbose, debug or "
                 "trace, any case")
      ->type_name("LEVEL");
  app.add_option("--log-file", log_file, "log to FILE instead of stderr")->type_name("FILE");
  patro::cli::CurveFlags curve;
  curve.add(app,
            "this worker's CURVE key pair (patro keygen FILE; with --broker-key, default "
            "$PATRO_CURVE_KEY); with the embedded broker, also the broker's");
  std::string config_client_key;
  app.add_option("--config-client-key", config_client_key,
                 "put this client key pair into the --config-out file, which is then a secret "
                 "(written mode 0600)")
      ->type_name("FILE");
  app.add_option("--allow-clients", bo.allow_clients_file,
                 "the embedded broker's allowed client keys (one Z85 key per line, optionally "
                 "limited by names=GLOB,... and read-only after it)")
      ->type_name("FILE");
  app.add_option("--allow-servers", bo.allow_servers_file,
                 "the embedded broker's allowed server keys (this worker's own is always allowed)")
      ->type_name("FILE");
  app.add_flag("--insecure", bo.insecure,
               "let the embedded broker bind a non-loopback address without CURVE");
  if (auto status = patro::cli::parse(app, argc, argv)) return *status;
  so.insecure = bo.insecure;  // the direct path off loopback, too
  for (const std::string& b : broker_args)
    for (const std::string& e : patro::split_endpoints(b)) so.brokers.push_back(e);
  if (!broker_args.empty() && so.brokers.empty()) usage_error("--broker names no broker");
  // Under patro::spawn (which sets PATRO_SPAWNED=1) the embedded broker takes free ports unless
  // told otherwise, so that spawned workers neither clash with each other nor with a broker on
  // the well-known ones; patronize() prints the config on standard output for the parent.
  const char* spawned_env = std::getenv("PATRO_SPAWNED");
  const bool spawned = spawned_env != nullptr && std::string(spawned_env) == "1";
  // Through an ssh forward (patro::spawn, README "Remote processes: spawn") the broker is the
  // forward's end on this host's loopback: no embedded one.
  if (const char* forward = std::getenv("PATRO_SPAWN_BROKER");
      spawned && broker_args.empty() && forward != nullptr && *forward != '\0')
    so.brokers.push_back(forward);
  if (spawned && app.count("--front") == 0) bo.frontend = "tcp://127.0.0.1:*";
  if (spawned && app.count("--back") == 0) bo.backend = "tcp://127.0.0.1:*";
  // One broker as before; several: each registered with (the first stays in so.broker, which
  // the library reads when it is given no list).
  if (!so.brokers.empty()) so.broker = so.brokers.front();
  if (so.brokers.size() == 1) so.brokers.clear();
  visibility = std::chrono::milliseconds(visibility_ms);
  so.watchdog = std::chrono::milliseconds(watchdog_ms);
  log_options.rotate_bytes = rotate_bytes;
  if (heartbeat_ms > 0) {
    so.heartbeat.interval = std::chrono::milliseconds(heartbeat_ms);
    bo.heartbeat.interval = so.heartbeat.interval;
  }
  if (log_sync == "always") {
    log_options.sync = patro::worker::LogOptions::Sync::always;
  } else if (log_sync == "never") {
    log_options.sync = patro::worker::LogOptions::Sync::never;
  } else if (!log_sync.empty()) {
    int64_t ms = -1;
    try {
      size_t used = 0;
      ms = std::stoll(log_sync, &used);
      if (used != log_sync.size()) ms = -1;
    } catch (const std::exception&) {
      ms = -1;
    }
    if (ms < 0) usage_error("--log-sync: always, never, or milliseconds, not '" + log_sync + "'");
    log_options.sync = patro::worker::LogOptions::Sync::interval;
    log_options.sync_interval = std::chrono::milliseconds(ms);
  }
  if (!objects_file.empty()) {
    std::ifstream in(objects_file);
    if (!in) usage_error("cannot read " + objects_file);
    for (std::string line; std::getline(in, line);) {
      line = line.substr(0, line.find('#'));
      std::istringstream ls(line);
      std::vector<std::string> lw;
      for (std::string w; ls >> w;) lw.push_back(w);
      for (size_t k = 0; k < lw.size();) k += parse_object(lw, k, specs);
    }
  }
  for (size_t k = 0; k < object_words.size();) k += parse_object(object_words, k, specs);
  if (specs.empty()) usage_error("no objects to serve");
  for (size_t i = 0; i < specs.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (specs[i].name == specs[j].name)
        usage_error("two objects are named '" + specs[i].name + "' (" + specs[j].kind + " and " +
                    specs[i].kind + "); each name must be unique");
  if (const std::string e = patro::daemon::configure_logging(log_level, log_file); !e.empty())
    usage_error(e);
  patro::daemon::raise_descriptor_limit("worker");
  if (!server_id_text.empty()) {
    const auto id = patro::worker::parse_server_id(server_id_text);
    if (!id) usage_error("--server-id: 16 hex digits, not 0, not '" + server_id_text + "'");
    so.server_id = *id;
  }
  if (!server_secret_path.empty()) {
    try {
      so.server_secret = patro::worker::server_secret_file(server_secret_path);
    } catch (const patro::Error& e) {
      usage_error(e.what());
    }
  }

  try {
    // Held until main returns: a second worker on the same --data refuses here, before it
    // opens, renames or compacts anything in it.
    if (!data_dir.empty()) {
      patro::worker::make_data_directory(data_dir);
      data_lock = std::make_unique<patro::worker::DataDirLock>(data_dir);
      so.server_id = patro::worker::data_directory_server_id(data_dir, so.server_id);
      so.server_secret = patro::worker::data_directory_server_secret(data_dir);
    }
    if (so.server_id != 0)
      patro::write_log(patro::LogLevel::info, "worker",
                       "server id " + patro::worker::format_server_id(so.server_id) +
                           (data_dir.empty() ? std::string(" (--server-id)")
                                             : " (kept in " + data_dir + "/" +
                                                   patro::worker::kServerIdFile + ")"));
    patro::worker::JobQueue::register_class();
    patro::worker::LogWriter::register_class();
    patro::worker::KvStore::register_class();
    patro::worker::Counter::register_class();

    auto wal = [&](const Spec& s) {
      return data_dir.empty() ? std::string() : data_dir + "/" + s.kind + "-" + s.name + ".wal";
    };
    std::vector<std::shared_ptr<patro::worker::JobQueue>> queues;
    std::vector<std::shared_ptr<patro::worker::LogWriter>> logs;
    std::vector<patro::Named> objects;
    for (const Spec& s : specs) {
      if (s.kind == "queue") {
        queues.push_back(std::make_shared<patro::worker::JobQueue>(s.name, visibility, wal(s),
                                                                   wal_options, max_deliveries));
        objects.push_back(patro::named(s.name, queues.back()));
      } else if (s.kind == "log") {
        logs.push_back(std::make_shared<patro::worker::LogWriter>(s.path, log_options));
        objects.push_back(patro::named(s.name, logs.back()));
      } else if (s.kind == "hash") {
        objects.push_back(
            patro::named(s.name, std::make_shared<patro::worker::KvStore>(wal(s), wal_options)));
      } else {
        objects.push_back(
            patro::named(s.name, std::make_shared<patro::worker::Counter>(wal(s), wal_options)));
      }
      patro::write_log(patro::LogLevel::info, "worker",
                       "serving " + s.kind + " '" + s.name + "'" +
                           (s.kind == "log"    ? " into " + s.path
                            : data_dir.empty() ? std::string(" (in memory)")
                                               : " with its write-ahead log " + wal(s)));
    }
    // A taker that died gives its leased jobs back.
    so.on_client_gone = [queues](uint64_t client) {
      for (const auto& q : queues) q->client_gone(client);
    };

    std::unique_ptr<patro::Broker> broker;
    std::thread broker_thread;
    so.curve = curve.client();
    if (so.broker.empty()) {
      bo.limits = so.limits;
      if (!so.curve.keys.empty()) {
        // The embedded broker uses the worker's pair; the worker itself may register, and
        // connect as a client (its metrics).
        bo.curve = so.curve.keys;
        bo.allow_servers.push_back(so.curve.keys.public_key);
        if (!bo.allow_clients_file.empty()) bo.allow_clients.push_back(so.curve.keys.public_key);
        so.curve.broker_key = so.curve.keys.public_key;
      } else if (!bo.allow_clients_file.empty() || !bo.allow_servers_file.empty()) {
        throw patro::Error(patro::Errc::invalid_argument,
                           "--allow-clients and --allow-servers need --curve-key (the embedded "
                           "broker's key pair)");
      }
      broker = std::make_unique<patro::Broker>(bo);
      so.broker = broker->backend_endpoint();
      broker_thread = std::thread([&] { broker->run(); });
      patro::write_log(patro::LogLevel::info, "worker",
                       "embedded broker: clients connect to " + broker->frontend_endpoint() +
                           ", servers to " + broker->backend_endpoint());
      if (!endpoints_file.empty() &&
          !write_atomically(endpoints_file,
                            broker->frontend_endpoint() + " " + broker->backend_endpoint()))
        throw patro::Error(patro::Errc::invalid_argument, "cannot write " + endpoints_file);
    }
    auto stop_broker = [&] {
      if (!broker) return;
      broker->stop();
      broker_thread.join();
      broker.reset();
    };
    try {
      patro::Config cfg = patro::patronize(so, objects);
      if (!config_client_key.empty()) cfg.set_client_key(patro::read_key_file(config_client_key));
      if (config_out == "-") {
        // Under PATRO_SPAWNED patronize() printed it already.
        if (!spawned) std::printf("%s\n", cfg.to_string().c_str());
        std::fflush(stdout);
      } else if (!config_out.empty()) {
        cfg.to_file(config_out);
      }
      std::string registered_with, clients_connect_to;
      for (const std::string& b : so.brokers.empty() ? std::vector{so.broker} : so.brokers)
        registered_with += (registered_with.empty() ? "" : ", ") + b;
      for (const std::string& b : cfg.brokers())
        clients_connect_to += (clients_connect_to.empty() ? "" : ", ") + b;
      patro::write_log(patro::LogLevel::info, "worker",
                       "serving " + std::to_string(objects.size()) +
                           " object(s), registered with " + registered_with +
                           "; clients connect to " + clients_connect_to);
      std::unique_ptr<patro::daemon::MetricsServer> metrics_server;
      if (!metrics.empty()) {
        // Lock waiters come from the objects' locks, asked through a connection of our own.
        patro::ClientOptions metrics_client;
        metrics_client.curve.keys = so.curve.keys;
        auto proxies =
            std::make_shared<std::vector<patro::Proxy>>(patro::get_proxies(cfg, metrics_client));
        std::vector<std::string> names;
        for (const Spec& s : specs) names.push_back(s.name);
        metrics_server =
            std::make_unique<patro::daemon::MetricsServer>(metrics, [queues, logs, specs, proxies] {
              return render_metrics(queues, logs, specs, *proxies);
            });
        patro::write_log(patro::LogLevel::info, "worker",
                         "metrics at http://" + metrics_server->endpoint().substr(6) + "/metrics");
      }
      // The watchdog reads standard input itself, and ends the process at its end as well.
      if (watch_stdin && so.watchdog.count() == 0 && std::getenv("PATRO_WATCHDOG_MS") == nullptr) {
        // The signals are blocked in every thread (TerminationSignals): the main thread's wait
        // takes this one as it would an operator's.
        std::thread([] {
          char buf[512];
          for (;;) {
            const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
          }
          ::kill(::getpid(), SIGTERM);
        }).detach();
      }
      patro::daemon::notify("READY=1");
      for (;;) {
        const int sig = signals.wait();
        if (sig != SIGHUP) break;
        // logrotate's create (or copytruncate's partner): reopen every file by its name.
        for (const auto& l : logs) {
          try {
            l->reopen();
          } catch (const std::exception& e) {
            patro::write_log(patro::LogLevel::error, "worker", e.what());
          }
        }
        patro::reopen_log_file();
        patro::write_log(patro::LogLevel::info, "worker", "SIGHUP: log files reopened");
        if (broker) {
          try {
            broker->reload();
          } catch (const std::exception&) {
          }
        }
      }
      patro::daemon::notify("STOPPING=1");
      patro::write_log(patro::LogLevel::info, "worker", "stopping");
      cfg.stop();
    } catch (...) {
      stop_broker();
      throw;
    }
    stop_broker();
  } catch (const std::exception& e) {
    patro::write_log(patro::LogLevel::fatal, "worker", e.what());
    return 1;
  }
  return 0;
}
