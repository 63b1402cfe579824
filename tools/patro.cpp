// patro: the command line for a Patro cluster. Reads and writes served objects, runs a command
// under an object's lock or for a job, follows a served log, and shows what a broker knows.
// A thin main over libpatro's public API: options here (CLI11), values and JSON in cli/values,
// the subcommands in cli/objects.cpp and cli/inspect.cpp.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include <patro/patro.hpp>

#include "cli/context.hpp"
#include "cli/curve_flags.hpp"
#include "cli/options.hpp"
#include "cli/route_flag.hpp"

namespace {

using namespace patro::cli;
using namespace std::chrono_literals;

const char* kFooter =
    R"(NAME is a name in the broker's registry (with --config, also an index in the config).
KEYs that are integers index arrays; others are hash keys.

Values: without --json-args, integers, floats, true, false and null are typed and anything else
is a string (007 is the integer 7). With --json-args each VALUE or ARG is JSON ('"007"' is a
string, [1,2] an array). @FILE reads a value from FILE (@@x is the word @x); -x reads the last
one from stdin. Both are taken as they are (a string), or as JSON with --json-args.

Output: a string prints as it is, anything else as JSON; --json prints JSON, one value per
command (tail: one JSON value per line). Bytes and text that is not UTF-8 print in JSON as
{"$base64": "..."}.

The broker: --broker, else --config, else $PATRO_BROKER, else tcp://127.0.0.1:7170. Several
brokers of one cluster (--broker A,B, or --broker given more than once, PATRO_BROKER=A,B, a
config that names several) are tried in that order, and a call moves to the next broker when
the one it uses goes silent (README "Several brokers"); ls and stats show each broker's view.

Exit status: 0 ok; 1 a Patro error (message on stderr); 2 bad usage; 3 nothing (take or pop
found nothing, a missing key with --strict, isa false); 4 lock not granted; for lock -- CMD and
take --exec CMD, CMD's status.
)";

struct Subcommand {
  const char* name;
  const char* summary;
  const char* usage;
  const char* text;
};

const Subcommand kSubcommands[] = {
    {"get", "read an object or an element below it", "NAME [KEY...] [--strict]",
     R"(Prints the object NAME, or the element its KEYs name (p[KEY1][KEY2]...). On a served hash or
array the KEYs are a path; on a served object it calls get(KEYs...) (a worker's hash with no
KEY prints as a whole, a JSON object). A missing element prints null; with --strict it exits 3.)"},
    {"set", "write an element (or call the object's set)", "NAME [KEY...] VALUE",
     R"(Writes VALUE at the element the KEYs name in a served hash or array (creating containers on the
way), or calls the served object's set(KEY, VALUE). Prints nothing.)"},
    {"call", "call a method of a served object", "NAME METHOD [ARG...] [--scalar]",
     R"(Calls METHOD of the served object NAME in list context and prints each result on its own line
(--json: one JSON array); a method that returns one array gives its elements. --scalar calls
it in scalar context and prints the one result.)"},
    {"push", "push onto a served array or job queue",
     "NAME VALUE... [--priority N] [--delay T] [--ttr T] [--dedup KEY]",
     R"(Pushes the VALUEs onto a served array (prints its new size), or onto a job queue (prints the
job ids, one per line; --json: an array of ids). On a job queue, --priority N (lower is taken
first; default 0), --delay T (ready only after T) and --ttr T (its time-to-run: each lease's
length; default the queue's visibility timeout); T as 200ms, 5s (the default unit) or 2m.
--dedup KEY (one VALUE): if a job was pushed with KEY in the last 5 minutes, prints its id and
pushes nothing (SQS FIFO's deduplication).)"},
    {"pop", "pop from an array (or take and ack a job)", "NAME [--shift] [--wait MS]",
     R"(Pops the last element of a served array (--shift: the first) and prints it. On a job queue,
takes a job (waiting up to --wait MS, default 0) and acknowledges it at once. Exits 3 if there
was none.)"},
    {"take", "take a job from a queue (or shift an array)",
     "NAME [--wait MS] [--lease MS] [--exec CMD [ARG...]]",
     R"(Takes a job from a queue, waiting up to --wait MS (default 0), and prints
"ID<TAB>DELIVERY<TAB>JOB" (JOB's backslashes, newlines, carriage returns and tabs escaped as
\\ \n \r \t; --json: {"id":…,"delivery":…,"job":…}). The lease outlives this command: settle it
with patro ack NAME ID DELIVERY from any process before the queue's visibility timeout (or
--lease MS) runs out, or the job is delivered again.
With --exec CMD [ARG...] (everything after --exec is the command), runs CMD with the job on its
stdin (a string as it is, anything else as JSON) and PATRO_JOB_ID, PATRO_JOB_DELIVERY set, then
acks the job if CMD exits 0 and nacks it (back in the queue) otherwise; the lease is held by this
process meanwhile, so if patro dies the job is delivered again. Exits with CMD's status (1 if
the ack was refused). On a served array, shifts the first element. Exits 3 if nothing came.)"},
    {"ack", "acknowledge a job taken from a queue", "NAME ID DELIVERY [--nack]",
     R"(Acknowledges job ID (delivery DELIVERY, as take printed them); --nack puts it back in the
queue. Exits 1 if the queue refused (the lease ran out or the job was settled already).)"},
    {"touch", "extend a job's lease by its time-to-run", "NAME ID DELIVERY",
     R"(Restarts the lease of job ID (delivery DELIVERY) at its full time-to-run, for work that takes
longer. Exits 1 if the queue refused (the lease ran out or the job was settled already).)"},
    {"bury", "set a taken job aside until kicked", "NAME ID DELIVERY",
     R"(Buries job ID (delivery DELIVERY): it is kept, not delivered, until patro kick. A queue with
--max-deliveries N buries a job itself once delivered N times. Exits 1 if the queue refused.)"},
    {"buried", "list buried jobs", "NAME [N]",
     R"(Prints up to N (default 10) buried jobs, oldest first, as "ID<TAB>JOB" (escaped as take's;
--json: an array of {"id":…,"job":…}); they stay buried. Exits 3 if there is none.)"},
    {"kick", "put buried jobs back in the queue", "NAME [N]",
     R"(Puts up to N (default 1) buried jobs back in the queue, oldest first, each with
--max-deliveries tries again, and prints how many. Exits 3 if there was none.)"},
    {"isa", "whether an object is of a class, or derives from it", "NAME CLASS",
     R"(Prints true if the served object NAME is of the class registered as CLASS, or of one that
names CLASS among its bases however deep (Perl's isa; patro::Class<T>::base), else false. Exits
0 if it is, 3 if it is not.)"},
    {"lock", "run a command holding an object's lock", "NAME [--wait MS] [--steal] -- CMD [ARG...]",
     R"(Takes the monitor lock of NAME (waiting up to --wait MS; default: until granted, bounded by
--timeout plus 24 h), runs CMD with PATRO_LOCK_TOKEN set to the grant's fencing token, and
releases the lock when CMD exits. The connection keeps heartbeating meanwhile, so the lock is
held as long as CMD runs; if patro dies, the broker releases it. SIGINT, SIGTERM and SIGHUP are
passed on to CMD. Exits with CMD's status (128+N if a signal N ended it); 4 if the lock was not
granted; 1 on a Patro error; 127 if CMD cannot be run.)"},
    {"ls", "servers and names at the broker", "",
     R"(Lists the servers registered at the broker (id, lanes, clients) and the names in its registry
(name, type, object id). --json: one object {"servers": [...], "names": [...]}.
With several brokers, each broker's view under a line broker ENDPOINT, or for one that did not
answer the line broker ENDPOINT: unreachable (WHY). --json: an array, per broker in the order
given {"broker": ENDPOINT, "servers": [...], "names": [...]} or {"broker": ENDPOINT, "error":
WHY}. Exits 0 if at least one broker answered, 1 if none did.)"},
    {"locks", "lock states: holder, depth, waiters, token", "[NAME...]",
     R"(Prints the lock of each NAME (default: every name at the broker): holder (a client id, - when
free), stack depth, requests waiting to acquire it, monitors in WAIT, and the newest fencing
token. --json: one array of objects.)"},
    {"tail", "the last lines of a served log (-f: follow)", "NAME [-n LINES] [-f] [--from OFFSET]",
     R"(Prints the last LINES lines (default 10) of a served log, or every line from OFFSET on; --json
prints each line as a JSON string on its own line (JSON lines). -f keeps following and prints
lines as they are written, until SIGINT, SIGTERM or SIGHUP (then exits 0); if the log's server
goes away (a worker restart), it reconnects and goes on from where it was.)"},
    {"stats", "rates, clients, servers, queue depths, lock waiters", "[NAME] [--interval MS]",
     R"(With NAME, a job queue's counts, a NAME<TAB>VALUE line each: ready, delayed, leased, buried,
oldest_ready_ms (how long the oldest ready job has waited), pushed and acknowledged (totals).
--json: one object.
Without, samples the broker twice, MS milliseconds apart (default 1000), and prints requests per second,
replies per second, clients, servers, and for each name: the queue depth and leased jobs of job
queues, and the lock waiters. --json: one object.
With several brokers, samples each (at the same time) and prints each one's under a line broker
ENDPOINT, or for one that did not answer the line broker ENDPOINT: unreachable (WHY). --json: an
array of the objects, each with "broker": ENDPOINT first, or {"broker": ENDPOINT, "error": WHY}.
Exits 0 if at least one broker answered, 1 if none did.)"},
};

// Splits "-- CMD..." (lock) and "--exec CMD..." (take) off the words: what follows is the
// command, whatever it looks like. After -- for any other subcommand, the words are values
// (so that a value may start with '-').
struct Split {
  std::vector<std::string> head, tail;
  bool dashdash = false;
};
// CLI11 splits a word such as [1,2] into 1 and 2: such words travel through it with this mark in
// front, taken off again afterwards.
constexpr char kMark = '\x1f';

std::string unmark(std::string w) {
  if (!w.empty() && w[0] == kMark) w.erase(0, 1);
  return w;
}

Split split_command(const std::vector<std::string>& words) {
  Split s;
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] == "--" || words[i] == "--exec") {
      if (words[i] == "--exec") s.head.push_back("--exec");
      s.dashdash = words[i] == "--";
      size_t from = i + 1;
      if (words[i] == "--exec" && from < words.size() && words[from] == "--") ++from;
      s.tail.assign(words.begin() + static_cast<std::ptrdiff_t>(from), words.end());
      return s;
    }
    const std::string& w = words[i];
    s.head.push_back(w.size() > 1 && w.front() == '[' && w.back() == ']' ? kMark + w : w);
  }
  return s;
}

// Subcommands' help says their usage in words (NAME [KEY...] VALUE) rather than CLI11's one
// positional list.
class Formatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App* app, std::string name) const override {
    for (const Subcommand& s : kSubcommands)
      if (app->get_name() == s.name) return "Usage: " + name + " " + s.usage + "\n";
    return CLI::Formatter::make_usage(app, name);
  }
  std::string make_positionals(const CLI::App* app) const override {
    for (const Subcommand& s : kSubcommands)
      if (app->get_name() == s.name) return "";
    return CLI::Formatter::make_positionals(app);
  }
};

std::string read_stdin() {
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(0, buf, sizeof buf);
    if (n > 0) {
      data.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return data;
    } else if (errno != EINTR) {
      throw patro::Error(patro::Errc::invalid_argument, "cannot read stdin");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  CLI::App app(
      "The command line of a Patro cluster: read and write served objects, run a command "
      "under a lock or for a job, follow a served log, show what a broker knows.",
      "patro");
  setup(app);
  app.formatter(std::make_shared<Formatter>());
  app.require_subcommand(1);
  app.fallthrough();
  app.footer(kFooter);

  std::vector<std::string> brokers;
  std::optional<std::string> config, timeout;
  bool json = false, stdin_arg = false;
  Invocation a;
  app.add_option("--broker", brokers,
                 "the broker's client endpoint (tcp://HOST:PORT or HOST:PORT); several brokers: "
                 "a comma-separated list, or --broker again, in fail-over order")
      ->type_name("ENDPOINT")
      ->allow_extra_args(false);
  app.add_option("--config", config, "a config a server wrote; NAME may be an index in it")
      ->type_name("FILE");
  app.add_flag("--json", json, "machine output: JSON");
  app.add_option("--timeout", timeout, "deadline of each call: seconds, or 500ms, 2s, 1m (30s)")
      ->type_name("T");
  app.add_flag("--json-args", a.json_args, "parse each VALUE or ARG as JSON");
  app.add_flag("-x,--stdin", stdin_arg, "read the last argument from stdin");
  patro::cli::CurveFlags curve;
  curve.add(app, "this client's CURVE key pair (patro keygen FILE; default $PATRO_CURVE_KEY)");
  patro::cli::RouteFlag route;
  route.add(app);

  std::map<std::string, CLI::App*> subs;
  std::vector<std::string> positional;
  for (const Subcommand& s : kSubcommands) {
    CLI::App* sub = app.add_subcommand(s.name, s.summary);
    sub->fallthrough();
    sub->footer(
        std::string(s.text) +
        "\n\nGlobal options (patro --help): --broker ENDPOINT[,...] | --config FILE, --json, "
        "--timeout T, --json-args, -x/--stdin.\nExit status: 0 ok, 1 Patro error, 2 bad "
        "usage, 3 nothing, 4 lock not granted.");
    sub->add_option("ARGS", positional, s.usage);
    subs[s.name] = sub;
  }
  auto* keygen_sub = app.add_subcommand(
      "keygen", "write a new CURVE key pair to FILE (secret, mode 0600) and FILE.pub");
  std::string keygen_file;
  keygen_sub->add_option("FILE", keygen_file, "where to write the pair")->required();
  bool keygen_force = false;
  keygen_sub->add_flag("--force", keygen_force,
                       "replace an existing FILE or FILE.pub (its secret key is lost)");
  keygen_sub->footer(
      "FILE holds the secret key: keep it where only its owner reads it. Give FILE.pub (the "
      "public key) to whoever must know it: the broker's to every client and server "
      "(--broker-key), a client's or server's to the broker's allow lists.");
  auto* help_sub = app.add_subcommand("help", "this text, or a subcommand's");
  std::string help_of;
  help_sub->add_option("SUBCOMMAND", help_of);

  subs["get"]->add_flag("--strict", a.strict, "exit 3 if the element is missing");
  subs["call"]->add_flag("--list", a.list, "list context (the default)");
  subs["call"]->add_flag("--scalar", a.scalar, "scalar context: one result");
  for (const char* s : {"pop", "take", "lock"})
    subs[s]
        ->add_option("--wait", a.wait_ms, "wait up to MS milliseconds")
        ->type_name("MS")
        ->check(patro::cli::range(int64_t{0}, int64_t{INT32_MAX}));
  subs["pop"]->add_flag("--shift", a.shift, "the first element instead of the last");
  subs["take"]
      ->add_option("--lease", a.lease_ms,
                   "lease the job for MS milliseconds (default: the queue's)")
      ->type_name("MS")
      ->check(patro::cli::range(int64_t{1}, int64_t{7} * 24 * 3600 * 1000));
  subs["take"]->add_flag("--exec", a.exec, "CMD [ARG...]: run CMD with the job on stdin");
  subs["ack"]->add_flag("--nack", a.nack, "put the job back in the queue");
  subs["push"]
      ->add_option("--priority", a.priority, "a job queue's priority: lower is taken first")
      ->type_name("N")
      ->check(patro::cli::range(int64_t{INT32_MIN}, int64_t{INT32_MAX}));
  subs["push"]
      ->add_option("--delay", a.delay, "ready only after T (200ms, 5s, 2m)")
      ->type_name("T");
  subs["push"]
      ->add_option("--ttr", a.ttr, "time-to-run: each lease's length (200ms, 5s, 2m)")
      ->type_name("T");
  subs["push"]
      ->add_option("--dedup", a.dedup, "a key: a second push with it within 5 min is the first")
      ->type_name("KEY");
  subs["lock"]->add_flag("--steal", a.steal, "steal the lock (if the server allows it)");
  subs["tail"]->add_flag("-f,--follow", a.follow, "keep following until interrupted");
  subs["tail"]
      ->add_option("-n", a.lines, "how many of the last lines (default 10)")
      ->type_name("LINES")
      ->check(patro::cli::range(int64_t{0}, int64_t{1} << 24));
  subs["tail"]
      ->add_option("--from", a.from, "every line from this byte offset on")
      ->type_name("OFFSET")
      ->check(patro::cli::range(int64_t{0}, INT64_MAX));
  subs["stats"]
      ->add_option("--interval", a.interval_ms, "milliseconds between samples (default 1000)")
      ->type_name("MS")
      ->check(patro::cli::range(int64_t{1}, int64_t{3600000}));

  const Split split = split_command(std::vector<std::string>(argv + 1, argv + argc));
  if (auto status = parse(app, split.head)) return *status;

  try {
    if (help_sub->parsed()) {
      if (help_of.empty()) {
        // app.help() would describe the selected subcommand, help itself.
        std::fputs(
            app.get_formatter()->make_help(&app, "patro", CLI::AppFormatMode::Normal).c_str(),
            stdout);
        return ok;
      }
      auto it = subs.find(help_of);
      if (it == subs.end()) throw UsageError("no subcommand '" + help_of + "'");
      std::fputs(it->second->help("patro").c_str(), stdout);
      return ok;
    }
    if (keygen_sub->parsed()) {
      // As ssh-keygen: an existing pair is someone's identity, replaced only when asked to.
      for (const std::string& f : {keygen_file, keygen_file + ".pub"}) {
        struct stat st {};
        if (!keygen_force && ::lstat(f.c_str(), &st) == 0) {
          std::fprintf(stderr,
                       "patro: %s exists; patro keygen --force %s replaces the pair (the old "
                       "secret key is lost)\n",
                       f.c_str(), keygen_file.c_str());
          return patro_error;
        }
      }
      const patro::CurveKeyPair keys = patro::curve_keypair();
      patro::write_key_file(keygen_file, keys);
      std::printf("%s\n", keys.public_key.c_str());  // the public key: safe to show
      return ok;
    }
    for (const auto& [name, sub] : subs)
      if (sub->parsed()) a.sub = name;
    for (const std::string& w : positional) a.words.push_back(unmark(w));
    a.command = split.tail;
    if (a.sub == "lock" || a.exec) {
      if (a.sub == "lock" && !split.dashdash && !a.command.empty())
        throw UsageError("patro lock takes its command after --");
    } else if (split.dashdash) {
      a.words.insert(a.words.end(), split.tail.begin(), split.tail.end());
      a.command.clear();
    }
    if (stdin_arg) {
      a.words.push_back(read_stdin());
      a.last_from_stdin = true;
    }

    patro::ClientOptions options;
    options.curve = curve.client();
    route.apply(options);
    if (timeout) {
      options.call_timeout = parse_duration(*timeout, "--timeout");
      if (options.call_timeout.count() == 0) throw UsageError("--timeout must be positive");
      options.connect_timeout = std::min(options.connect_timeout, options.call_timeout);
    }
    // A blocking take waits on the server: the call's deadline must outlast it.
    if (a.wait_ms && a.sub != "lock") options.call_timeout += std::chrono::milliseconds(*a.wait_ms);
    // A follow (waiting 1 s on the server) that outlives its wait by this much is asked again.
    if (a.follow)
      options.call_timeout = 1s + std::max<std::chrono::milliseconds>(options.call_timeout / 3, 2s);
    // lock, take --exec and tail -f take their signals themselves: blocked before the connection
    // starts its threads, which inherit the mask.
    if (a.sub == "lock" || a.exec || a.follow) {
      const sigset_t set = handled_signals();
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
    }
    const Output out{json};
    std::optional<std::string> broker;
    for (const std::string& b : brokers) broker = broker ? *broker + "," + b : b;
    Cluster cluster(broker, config, options);
    static const std::map<std::string, int (*)(const Invocation&, Cluster&, const Output&)>
        commands = {{"get", cmd_get},     {"set", cmd_set},     {"call", cmd_call},
                    {"push", cmd_push},   {"pop", cmd_pop},     {"take", cmd_take},
                    {"ack", cmd_ack},     {"lock", cmd_lock},   {"ls", cmd_ls},
                    {"touch", cmd_touch}, {"bury", cmd_bury},   {"buried", cmd_buried},
                    {"kick", cmd_kick},   {"locks", cmd_locks}, {"tail", cmd_tail},
                    {"stats", cmd_stats}, {"isa", cmd_isa}};
    return commands.at(a.sub)(a, cluster, out);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "patro: %s\n(see patro %s--help)\n", e.what(),
                 a.sub.empty() ? "" : (a.sub + " ").c_str());
    return usage_error;
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "patro: %s\n", e.what());
    return patro_error;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "patro: %s\n", e.what());
    return patro_error;
  }
}
