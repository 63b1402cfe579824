// patro: the command line for a Patro cluster. Reads and writes served objects, runs a command
// under an object's lock, follows a served log, and shows what a broker knows.
// A thin main over libpatro's public API.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

extern char** environ;

namespace {

using namespace std::chrono_literals;
using patro::Value;
using patro::ValueArray;
using ms = std::chrono::milliseconds;

// Exit statuses a script can rely on.
enum Exit : int { ok = 0, patro_error = 1, usage_error = 2, nothing = 3, not_granted = 4 };

const char* kUsage =
    R"(Usage: patro [--broker tcp://HOST:PORT | --config FILE] [--json] [--timeout T]
             SUBCOMMAND [ARGS...]

Subcommands:
  get NAME [KEY...]          read an object or an element below it
  set NAME [KEY...] VALUE    write an element (or call the object's set)
  call NAME METHOD [ARG...]  call a method of a served object
  push NAME VALUE...         push onto a served array or job queue
  pop NAME                   pop from a served array (or take and ack one job of a queue)
  take NAME                  take a job from a queue (or shift an array)
  ack NAME ID DELIVERY       acknowledge a job taken from a queue (--nack: put it back)
  lock NAME -- CMD [ARG...]  run CMD holding the object's lock; released when CMD exits
  ls                         servers and names at the broker
  locks [NAME...]            lock states: holder, depth, waiters, token
  tail NAME                  the last lines of a served log (-f: keep following)
  stats                      requests per second, clients, servers, queue depths, lock waiters
  help [SUBCOMMAND]          this text, or a subcommand's

Global options (anywhere before --):
  --broker ENDPOINT  the broker's client endpoint; NAME is a name in its registry
  --config FILE      a config a server wrote; NAME is an index in it (0, 1, ...) or a
                     name registered at its broker
  --json             machine output: one JSON value per result
  --timeout T        deadline of each call (T in seconds, or with a unit: 500ms, 2s; default 30s)
  --help             help (also: patro SUBCOMMAND --help)

Values on the command line are integers, floats, true, false or null; anything else is a
string. KEYs that are integers index arrays; others are hash keys.

Exit status: 0 ok; 1 a Patro error (message on stderr); 2 bad usage; 3 nothing (take or pop
found nothing, a missing key with --strict); 4 lock not granted; for lock -- CMD, CMD's status.
)";

const std::map<std::string, std::string> kHelp = {
    {"get", R"(Usage: patro get NAME [KEY...] [--strict]

Prints the object NAME, or the element its KEYs name (p[KEY1][KEY2]...). On a served hash or
array the KEYs are a path; on a served object (a worker's hash or counter) it calls get(KEYs...).
A missing element prints null; with --strict it exits 3 instead.
)"},
    {"set", R"(Usage: patro set NAME [KEY...] VALUE

Writes VALUE at the element the KEYs name in a served hash or array (creating containers on the
way), or calls the served object's set(KEYs..., VALUE) and prints its result.
)"},
    {"call", R"(Usage: patro call NAME METHOD [ARG...] [--list]

Calls METHOD of the served object NAME in scalar context (--list: list context) and prints the
result.
)"},
    {"push", R"(Usage: patro push NAME VALUE...

Pushes the VALUEs onto a served array (prints its new size), or onto a job queue (push or
push_many; prints the job ids).
)"},
    {"pop", R"(Usage: patro pop NAME [--shift] [--wait MS]

Pops the last element of a served array (--shift: the first) and prints it. On a job queue, takes
a job (waiting up to --wait MS, default 0) and acknowledges it at once. Exits 3 if there was none.
)"},
    {"take", R"(Usage: patro take NAME [--wait MS]

Takes a job from a queue, waiting up to MS milliseconds (default 0), and prints
"ID<TAB>DELIVERY<TAB>JOB" (--json: [id, job, delivery]); acknowledge it with patro ack. On a
served array, shifts the first element. Exits 3 if nothing came in time.
)"},
    {"ack", R"(Usage: patro ack NAME ID DELIVERY [--nack]

Acknowledges job ID (delivery DELIVERY, as take printed them); --nack puts it back in the queue.
Exits 1 if the queue refused (the lease was lost or the job settled already).
)"},
    {"lock", R"(Usage: patro lock NAME [--wait MS] [--steal] -- CMD [ARG...]

Takes the monitor lock of NAME (waiting up to --wait MS; default: until granted, bounded by
--timeout plus 24 h), runs CMD with PATRO_LOCK_TOKEN set to the grant's fencing token, and
releases the lock when CMD exits. The connection keeps heartbeating meanwhile, so the lock is
held as long as CMD runs; if patro dies, the broker releases it. SIGINT, SIGTERM and SIGHUP are
passed on to CMD. Exits with CMD's status (128+N if a signal N ended it); 4 if the lock was not
granted; 1 on a Patro error; 127 if CMD cannot be run.
)"},
    {"ls", R"(Usage: patro ls

Lists the servers registered at the broker (id, lanes, clients) and the names in its registry
(name, type, object id). With --json, one object {"servers": [...], "names": [...]}.
)"},
    {"locks", R"(Usage: patro locks [NAME...]

Prints the lock of each NAME (default: every name at the broker): holder (a client id, 0 when
free), stack depth, requests waiting to acquire it, monitors in WAIT, and the newest fencing
token.
)"},
    {"tail", R"(Usage: patro tail NAME [-n LINES] [-f] [--from OFFSET]

Prints the last LINES lines (default 10) of a served log (read), or every line from OFFSET on.
-f keeps following (follow) and prints lines as they are written, until interrupted (SIGINT or
SIGTERM; then exits 0).
)"},
    {"stats", R"(Usage: patro stats [--interval MS]

Samples the broker twice, MS milliseconds apart (default 1000), and prints requests per second,
replies per second, clients, servers, and for each name: the queue depth and leased jobs of job
queues, and the lock waiters.
)"},
    {"help", R"(Usage: patro help [SUBCOMMAND]
)"},
};

// Options and the value each one takes (empty: a flag).
const std::map<std::string, bool> kOptions = {
    {"--broker", true},  {"--config", true},  {"--json", false},   {"--timeout", true},
    {"--help", false},   {"-h", false},       {"--strict", false}, {"--list", false},
    {"--wait", true},    {"--shift", false},  {"--nack", false},   {"--steal", false},
    {"-f", false},       {"--follow", false}, {"-n", true},        {"--from", true},
    {"--interval", true}};
// Which subcommand may use which option (global ones: all).
const std::map<std::string, std::set<std::string>> kAllowed = {
    {"get", {"--strict"}},
    {"set", {}},
    {"call", {"--list"}},
    {"push", {}},
    {"pop", {"--shift", "--wait"}},
    {"take", {"--wait"}},
    {"ack", {"--nack"}},
    {"lock", {"--wait", "--steal"}},
    {"ls", {}},
    {"locks", {}},
    {"tail", {"-f", "--follow", "-n", "--from"}},
    {"stats", {"--interval"}},
    {"help", {}},
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string sub;
  std::vector<std::string> pos;
  std::map<std::string, std::string> opts;
  std::vector<std::string> command;  // after --
  bool has(const std::string& o) const { return opts.count(o) > 0; }
};

bool looks_numeric(const std::string& s) {
  return s.size() > 1 && s[0] == '-' &&
         (std::isdigit(static_cast<unsigned char>(s[1])) || s[1] == '.');
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {
      for (int j = i + 1; j < argc; ++j) a.command.push_back(argv[j]);
      break;
    }
    if (arg.size() > 1 && arg[0] == '-' && !looks_numeric(arg)) {
      std::string name = arg, value;
      const auto eq = arg.find('=');
      const bool inline_value = eq != std::string::npos && arg.rfind("--", 0) == 0;
      if (inline_value) name = arg.substr(0, eq);
      auto it = kOptions.find(name);
      if (it == kOptions.end()) throw UsageError("unknown option " + name);
      if (it->second) {
        if (inline_value) {
          value = arg.substr(eq + 1);
        } else {
          if (i + 1 >= argc) throw UsageError(name + " needs a value");
          value = argv[++i];
        }
      } else if (inline_value) {
        throw UsageError(name + " takes no value");
      }
      a.opts[name] = value;
      continue;
    }
    if (a.sub.empty())
      a.sub = arg;
    else
      a.pos.push_back(arg);
  }
  return a;
}

// --- values ---

Value parse_value(const std::string& s) {
  if (s == "null") return Value();
  if (s == "true") return Value(true);
  if (s == "false") return Value(false);
  if (!s.empty()) {
    errno = 0;
    char* end = nullptr;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (*end == '\0' && errno == 0 && !std::isspace(static_cast<unsigned char>(s[0])))
      return Value(static_cast<int64_t>(i));
    const bool has_digit = s.find_first_of("0123456789") != std::string::npos;
    const bool word = s.find_first_of("iInN") != std::string::npos;  // inf, nan: strings
    errno = 0;
    const double d = std::strtod(s.c_str(), &end);
    if (*end == '\0' && errno == 0 && has_digit && !word && std::isfinite(d) &&
        !std::isspace(static_cast<unsigned char>(s[0])))
      return Value(d);
  }
  return Value(s);
}

patro::PathElem key_of(const std::string& s) {
  const Value v = parse_value(s);
  if (v.if_int()) return patro::PathElem(*v.if_int());
  return patro::PathElem(s);
}

// JSON's quoting of a string is Value's own text form of it.
void append_json_string(std::string& out, const std::string& s) {
  out += Value(s).to_string();
}

void append_json(std::string& out, const Value& v) {
  switch (v.type()) {
    case patro::Type::null:
      out += "null";
      return;
    case patro::Type::boolean:
      out += *v.if_bool() ? "true" : "false";
      return;
    case patro::Type::integer:
      out += std::to_string(*v.if_int());
      return;
    case patro::Type::number: {
      if (!std::isfinite(*v.if_double())) {
        out += "null";
        return;
      }
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", *v.if_double());
      out += buf;
      return;
    }
    case patro::Type::string:
      append_json_string(out, *v.if_string());
      return;
    case patro::Type::bytes:
      append_json_string(out, std::string(v.if_bytes()->data.begin(), v.if_bytes()->data.end()));
      return;
    case patro::Type::array: {
      out += '[';
      bool first = true;
      for (const Value& e : *v.if_array()) {
        if (!first) out += ',';
        first = false;
        append_json(out, e);
      }
      out += ']';
      return;
    }
    case patro::Type::hash: {
      out += '{';
      bool first = true;
      for (const auto& [k, e] : *v.if_hash()) {
        if (!first) out += ',';
        first = false;
        append_json_string(out, k);
        out += ':';
        append_json(out, e);
      }
      out += '}';
      return;
    }
    case patro::Type::reference:
      append_json_string(out, v.to_string());
      return;
  }
}

struct Output {
  bool json = false;
  // One result: JSON, or text (a string as it is, anything else in Patro's JSON-like form).
  void print(const Value& v) const {
    std::string out;
    if (json)
      append_json(out, v);
    else if (const std::string* s = v.if_string())
      out = *s;
    else
      out = v.to_string();
    out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }
  void line(const std::string& text) const {
    std::fputs(text.c_str(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
};

// --- connecting ---

ms parse_duration(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  const std::string unit = end ? end : "";
  double scale = 1000;  // seconds by default
  if (unit == "ms")
    scale = 1;
  else if (unit == "s" || unit.empty())
    scale = 1000;
  else if (unit == "m")
    scale = 60000;
  else
    throw UsageError(std::string("bad ") + what + ": " + s);
  if (errno != 0 || end == s.c_str() || !std::isfinite(v) || v < 0 || v * scale > 1e12)
    throw UsageError(std::string("bad ") + what + ": " + s);
  return ms(static_cast<int64_t>(v * scale));
}

int64_t parse_int(const std::string& s, const char* what, int64_t min, int64_t max) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0' || v < min || v > max)
    throw UsageError(std::string("bad ") + what + ": " + s);
  return v;
}

class Cluster {
 public:
  Cluster(const Args& a, patro::ClientOptions options) : options_(options) {
    if (a.has("--broker") && a.has("--config"))
      throw UsageError("give --broker or --config, not both");
    if (a.has("--broker")) {
      endpoint_ = a.opts.at("--broker");
    } else if (a.has("--config")) {
      config_ = patro::Config::from_file(a.opts.at("--config"));
      if (config_->brokers().empty())
        throw patro::Error(patro::Errc::bad_config, "the config names no broker");
      endpoint_ = config_->brokers().front();
    } else {
      throw UsageError("no broker: give --broker tcp://HOST:PORT or --config FILE");
    }
  }

  const std::string& endpoint() const { return endpoint_; }
  const patro::ClientOptions& options() const { return options_; }

  // A name in the registry; with a config, also an index into its objects.
  patro::Proxy proxy(const std::string& name) {
    if (config_ && !name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
      const size_t i = static_cast<size_t>(parse_int(name, "object index", 0, 1 << 30));
      if (i >= config_->objects().size())
        throw patro::Error(patro::Errc::not_found, "the config has " +
                                                       std::to_string(config_->objects().size()) +
                                                       " objects; no object " + name);
      if (config_proxies_.empty()) config_proxies_ = patro::get_proxies(*config_, options_);
      return config_proxies_.at(i);
    }
    return patro::get_proxy(endpoint_, name, options_);
  }

 private:
  patro::ClientOptions options_;
  std::string endpoint_;
  std::optional<patro::Config> config_;
  std::vector<patro::Proxy> config_proxies_;
};

bool is_container(const std::string& reftype) {
  return reftype == "HASH" || reftype == "ARRAY" || reftype == "SCALAR";
}

patro::Proxy at_path(patro::Proxy p, const std::vector<std::string>& keys, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    const patro::PathElem e = key_of(keys[i]);
    if (const int64_t* idx = std::get_if<int64_t>(&e))
      p = p[*idx];
    else
      p = p[std::get<std::string>(e)];
  }
  return p;
}

// A container's contents, one level deep (nested containers print as references).
Value contents(const patro::Proxy& p, const std::string& reftype) {
  if (reftype == "HASH") {
    patro::ValueHash h;
    for (const Value& k : p.keys()) h[k.as<std::string>()] = p[k.as<std::string>()].get();
    return Value(h);
  }
  if (reftype == "ARRAY") return Value(p.values());
  return p.get();
}

void need(const Args& a, size_t min, size_t max, const char* what) {
  if (a.pos.size() < min || a.pos.size() > max)
    throw UsageError(std::string("patro ") + a.sub + " needs " + what);
}

// --- subcommands ---

int cmd_get(const Args& a, Cluster& c, const Output& out) {
  need(a, 1, SIZE_MAX, "NAME [KEY...]");
  patro::Proxy p = c.proxy(a.pos[0]);
  const std::string rt = patro::reftype(p);
  Value v;
  if (is_container(rt)) {
    if (a.pos.size() == 1) {
      v = contents(p, rt);
    } else {
      patro::Proxy e = at_path(p, a.pos, 1, a.pos.size());
      if (a.has("--strict") && !e.exists()) return nothing;
      v = e.get();
    }
  } else {
    ValueArray args;
    for (size_t i = 1; i < a.pos.size(); ++i) args.push_back(parse_value(a.pos[i]));
    if (args.size() > 2) throw UsageError("patro get: at most two keys for a method get");
    if (a.has("--strict") && args.size() == 1 && patro::can(p, "exists") &&
        !patro::truthy(p.call("exists", args[0])))
      return nothing;
    switch (args.size()) {
      case 0:
        v = p.call("get");
        break;
      case 1:
        v = p.call("get", args[0]);
        break;
      default:
        v = p.call("get", args[0], args[1]);
    }
  }
  if (a.has("--strict") && v.is_null()) return nothing;
  out.print(v);
  return ok;
}

int cmd_set(const Args& a, Cluster& c, const Output& out) {
  need(a, 2, SIZE_MAX, "NAME [KEY...] VALUE");
  patro::Proxy p = c.proxy(a.pos[0]);
  const Value value = parse_value(a.pos.back());
  if (is_container(patro::reftype(p))) {
    if (a.pos.size() < 3) {
      p.set(value);  // a served scalar
    } else {
      at_path(p, a.pos, 1, a.pos.size() - 1).set(value);
    }
    if (out.json) out.print(Value(true));
    return ok;
  }
  Value r;
  if (a.pos.size() == 2)
    r = p.call("set", value);
  else if (a.pos.size() == 3)
    r = p.call("set", parse_value(a.pos[1]), value);
  else
    throw UsageError("patro set: at most one key for a method set");
  out.print(r);
  return ok;
}

int cmd_call(const Args& a, Cluster& c, const Output& out) {
  need(a, 2, SIZE_MAX, "NAME METHOD [ARG...]");
  patro::Proxy p = c.proxy(a.pos[0]);
  ValueArray args;
  for (size_t i = 2; i < a.pos.size(); ++i) args.push_back(parse_value(a.pos[i]));
  // patro::Proxy::call takes its arguments as a pack; a command line has a list. Call "apply" of
  // up to 8 arguments through a fixed switch (a served method's arity is small).
  auto call = [&](bool list) -> std::vector<Value> {
    const std::string& m = a.pos[1];
    auto one = [&](auto&&... xs) -> std::vector<Value> {
      if (list) return p.call_list(m, xs...);
      return {p.call(m, xs...)};
    };
    const auto& x = args;
    switch (x.size()) {
      case 0:
        return one();
      case 1:
        return one(x[0]);
      case 2:
        return one(x[0], x[1]);
      case 3:
        return one(x[0], x[1], x[2]);
      case 4:
        return one(x[0], x[1], x[2], x[3]);
      case 5:
        return one(x[0], x[1], x[2], x[3], x[4]);
      case 6:
        return one(x[0], x[1], x[2], x[3], x[4], x[5]);
      case 7:
        return one(x[0], x[1], x[2], x[3], x[4], x[5], x[6]);
      case 8:
        return one(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]);
      default:
        throw UsageError("patro call: at most 8 arguments");
    }
  };
  if (a.has("--list"))
    out.print(Value(call(true)));
  else
    out.print(call(false).at(0));
  return ok;
}

int cmd_push(const Args& a, Cluster& c, const Output& out) {
  need(a, 2, SIZE_MAX, "NAME VALUE...");
  patro::Proxy p = c.proxy(a.pos[0]);
  ValueArray items;
  for (size_t i = 1; i < a.pos.size(); ++i) items.push_back(parse_value(a.pos[i]));
  if (patro::reftype(p) == "ARRAY") {
    size_t n = 0;
    for (const Value& v : items) n = p.push(v);
    out.print(Value(static_cast<int64_t>(n)));
    return ok;
  }
  if (items.size() == 1) {
    out.print(p.call("push", items[0]));
  } else {
    const Value ids = p.call("push_many", Value(items));
    if (out.json) {
      out.print(ids);
    } else if (const ValueArray* list = ids.if_array()) {
      for (const Value& id : *list) out.print(id);
    } else {
      out.print(ids);
    }
  }
  return ok;
}

int64_t wait_ms(const Args& a) {
  return a.has("--wait") ? parse_int(a.opts.at("--wait"), "--wait", 0, INT32_MAX) : 0;
}

void print_job(const Output& out, const Value& t) {
  if (out.json) return out.print(t);
  const ValueArray* f = t.if_array();
  if (f == nullptr || f->size() != 3) return out.print(t);
  const Value& job = (*f)[1];
  out.line((*f)[0].to_string() + "\t" + (*f)[2].to_string() + "\t" +
           (job.if_string() ? *job.if_string() : job.to_string()));
}

int cmd_pop(const Args& a, Cluster& c, const Output& out) {
  need(a, 1, 1, "NAME");
  patro::Proxy p = c.proxy(a.pos[0]);
  if (patro::reftype(p) == "ARRAY") {
    if (p.size() == 0) return nothing;
    const Value v = a.has("--shift") ? p.shift() : p.pop();
    out.print(v);
    return ok;
  }
  const Value t = p.call("take", wait_ms(a));
  if (t.is_null()) return nothing;
  const ValueArray* f = t.if_array();
  if (f == nullptr || f->size() != 3)
    throw patro::Error(patro::Errc::type_mismatch, "take returned " + t.to_string());
  if (!patro::truthy(p.call("ack", (*f)[0], (*f)[2])))
    throw patro::Error(patro::Errc::invalid_argument,
                       "the queue refused the ack of job " + (*f)[0].to_string());
  out.print((*f)[1]);
  return ok;
}

int cmd_take(const Args& a, Cluster& c, const Output& out) {
  need(a, 1, 1, "NAME");
  patro::Proxy p = c.proxy(a.pos[0]);
  if (patro::reftype(p) == "ARRAY") {
    if (p.size() == 0) return nothing;
    out.print(p.shift());
    return ok;
  }
  const Value t = p.call("take", wait_ms(a));
  if (t.is_null()) return nothing;
  print_job(out, t);
  return ok;
}

int cmd_ack(const Args& a, Cluster& c, const Output& out) {
  need(a, 3, 3, "NAME ID DELIVERY");
  patro::Proxy p = c.proxy(a.pos[0]);
  const char* m = a.has("--nack") ? "nack" : "ack";
  const Value r = p.call(m, parse_value(a.pos[1]), parse_value(a.pos[2]));
  if (!patro::truthy(r)) {
    std::fprintf(stderr, "patro: the queue refused the %s of job %s (delivery %s)\n", m,
                 a.pos[1].c_str(), a.pos[2].c_str());
    return patro_error;
  }
  if (out.json) out.print(r);
  return ok;
}

int cmd_lock(const Args& a, Cluster& c, const Output&) {
  need(a, 1, 1, "NAME -- CMD [ARG...]");
  if (a.command.empty()) throw UsageError("patro lock needs a command after --");
  // The signals that end the command are taken by this thread (sigtimedwait) and passed on; the
  // connection's threads, started after this, inherit the mask.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  patro::Proxy p = c.proxy(a.pos[0]);
  patro::Timeout timeout;
  if (a.has("--wait")) timeout = ms(wait_ms(a));
  const patro::SyncResult r = patro::lock(p, timeout, a.has("--steal"));
  if (!r) {
    std::fprintf(stderr, "patro: the lock of %s was not granted (error %d)\n", a.pos[0].c_str(),
                 r.error);
    return not_granted;
  }
  const std::string token = "PATRO_LOCK_TOKEN=" + std::to_string(r.token);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "PATRO_LOCK_TOKEN=", 17) != 0) env_strings.emplace_back(*e);
  env_strings.push_back(token);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> cmd = a.command;
  for (auto& s : cmd) argv.push_back(s.data());
  argv.push_back(nullptr);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t child = -1;
  const int err = posix_spawnp(&child, argv[0], nullptr, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  int status = 127;
  if (err != 0) {
    std::fprintf(stderr, "patro: cannot run %s: %s\n", argv[0], std::strerror(err));
  } else {
    // Until the command exits: each turn takes a signal (or a second passes) and reaps.
    for (;;) {
      int st = 0;
      const pid_t w = waitpid(child, &st, WNOHANG);
      if (w == child) {
        status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        break;
      }
      if (w < 0 && errno != EINTR) break;
      timespec one_second{1, 0};
      const int sig = sigtimedwait(&set, nullptr, &one_second);
      if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) ::kill(child, sig);
    }
  }
  try {
    patro::unlock(p, -1);
  } catch (const patro::Error& e) {
    // The lock goes with the connection anyway, when this process exits.
    std::fprintf(stderr, "patro: unlocking %s: %s\n", a.pos[0].c_str(), e.what());
  }
  return status;
}

std::string hex16(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

int cmd_ls(const Args& a, Cluster& c, const Output& out) {
  need(a, 0, 0, "no arguments");
  const patro::BrokerInfo info = patro::broker_info(c.endpoint(), c.options());
  if (out.json) {
    ValueArray servers, names;
    for (const auto& s : info.servers)
      servers.push_back(Value::hash({{"id", hex16(s.id)},
                                     {"lanes", static_cast<int64_t>(s.lanes)},
                                     {"clients", static_cast<int64_t>(s.clients)}}));
    for (const auto& n : info.names)
      names.push_back(Value::hash({{"name", n.name},
                                   {"type", n.type_name},
                                   {"reftype", n.reftype},
                                   {"id", n.id.to_hex()}}));
    out.print(Value::hash({{"servers", Value(servers)}, {"names", Value(names)}}));
    return ok;
  }
  out.line("SERVER            LANES  CLIENTS");
  for (const auto& s : info.servers) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s  %5u  %7u", hex16(s.id).c_str(), s.lanes, s.clients);
    out.line(buf);
  }
  out.line("");
  out.line("NAME\tTYPE\tOBJECT");
  for (const auto& n : info.names) out.line(n.name + "\t" + n.type_name + "\t" + n.id.to_hex());
  return ok;
}

std::vector<std::string> names_or_all(const Args& a, Cluster& c) {
  if (!a.pos.empty()) return a.pos;
  std::vector<std::string> names;
  for (const auto& n : patro::broker_info(c.endpoint(), c.options()).names) names.push_back(n.name);
  return names;
}

int cmd_locks(const Args& a, Cluster& c, const Output& out) {
  if (!out.json) out.line("NAME\tHOLDER\tDEPTH\tWAITERS\tWAITING\tTOKEN");
  for (const std::string& name : names_or_all(a, c)) {
    const patro::LockInfo i = patro::lock_info(c.proxy(name));
    if (out.json) {
      out.print(Value::hash({{"name", name},
                             {"holder", i.holder ? Value(hex16(i.holder)) : Value()},
                             {"depth", static_cast<int64_t>(i.depth)},
                             {"waiters", static_cast<int64_t>(i.waiters)},
                             {"waiting", static_cast<int64_t>(i.waiting)},
                             {"token", static_cast<int64_t>(i.token)}}));
    } else {
      out.line(name + "\t" + (i.holder ? hex16(i.holder) : std::string("-")) + "\t" +
               std::to_string(i.depth) + "\t" + std::to_string(i.waiters) + "\t" +
               std::to_string(i.waiting) + "\t" + std::to_string(i.token));
    }
  }
  return ok;
}

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) {
  g_interrupted = true;
}

// Prints the lines of a read or follow result; returns its next offset.
int64_t print_lines(const Output& out, const Value& r, int64_t offset) {
  const Value& lines = r["lines"];
  if (const ValueArray* ls = lines.if_array())
    for (const Value& l : *ls) out.print(l);
  const Value& next = r["next"];
  return next.if_int() ? *next.if_int() : offset;
}

int cmd_tail(const Args& a, Cluster& c, const Output& out) {
  need(a, 1, 1, "NAME");
  patro::Proxy p = c.proxy(a.pos[0]);
  const bool follow = a.has("-f") || a.has("--follow");
  int64_t offset = 0;
  if (a.has("--from")) {
    offset = parse_int(a.opts.at("--from"), "--from", 0, INT64_MAX);
    offset = print_lines(out, p.call("read", offset, int64_t{100000}), offset);
  } else {
    // The last n lines: read everything, keep n. Bounded by the log's size.
    const int64_t n = a.has("-n") ? parse_int(a.opts.at("-n"), "-n", 0, 1 << 24) : 10;
    std::deque<Value> last;
    for (int round = 0; round < 1000000; ++round) {
      const Value r = p.call("read", offset, int64_t{10000});
      const ValueArray* ls = r["lines"].if_array();
      const int64_t next = r["next"].if_int() ? *r["next"].if_int() : offset;
      if (ls)
        for (const Value& l : *ls) {
          last.push_back(l);
          if (static_cast<int64_t>(last.size()) > n) last.pop_front();
        }
      if (ls == nullptr || ls->empty() || next == offset) break;
      offset = next;
    }
    for (const Value& l : last) out.print(l);
  }
  if (!follow) return ok;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // Until interrupted: each follow waits at most a second on the server.
  while (!g_interrupted) offset = print_lines(out, p.call("follow", offset, int64_t{1000}), offset);
  return ok;
}

int cmd_stats(const Args& a, Cluster& c, const Output& out) {
  need(a, 0, 0, "no arguments");
  const ms interval =
      a.has("--interval") ? ms(parse_int(a.opts.at("--interval"), "--interval", 1, 3600000)) : 1s;
  const auto t0 = std::chrono::steady_clock::now();
  const patro::BrokerInfo first = patro::broker_info(c.endpoint(), c.options());
  std::this_thread::sleep_for(interval);
  const patro::BrokerInfo second = patro::broker_info(c.endpoint(), c.options());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rps = static_cast<double>(second.stats.routed - first.stats.routed) / secs;
  const double reply_ps = static_cast<double>(second.stats.replies - first.stats.replies) / secs;
  patro::ValueHash objects;
  for (const auto& n : second.names) {
    patro::Proxy p = c.proxy(n.name);
    patro::ValueHash o;
    o["type"] = n.type_name;
    if (!is_container(n.reftype) && patro::can(p, "take") && patro::can(p, "size")) {
      o["depth"] = p.call("size");
      if (patro::can(p, "leased")) o["leased"] = p.call("leased");
    }
    o["lock_waiters"] = static_cast<int64_t>(patro::lock_info(p).waiters);
    objects[n.name] = Value(o);
  }
  if (out.json) {
    out.print(Value::hash({{"requests_per_second", rps},
                           {"replies_per_second", reply_ps},
                           {"clients", static_cast<int64_t>(second.stats.clients)},
                           {"servers", static_cast<int64_t>(second.stats.servers)},
                           {"routed", static_cast<int64_t>(second.stats.routed)},
                           {"dropped", static_cast<int64_t>(second.stats.dropped)},
                           {"rejected", static_cast<int64_t>(second.stats.rejected)},
                           {"objects", Value(objects)}}));
    return ok;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "requests/s %.1f  replies/s %.1f  clients %" PRIu64 "  servers %" PRIu64
                "  dropped %" PRIu64 "  rejected %" PRIu64,
                rps, reply_ps, second.stats.clients, second.stats.servers, second.stats.dropped,
                second.stats.rejected);
  out.line(buf);
  out.line("NAME\tTYPE\tDEPTH\tLEASED\tLOCK_WAITERS");
  for (const auto& [name, o] : objects) {
    auto field = [&](const char* k) {
      const Value& v = o[k];
      return v.is_null() ? std::string("-") : v.to_string();
    };
    out.line(name + "\t" + o["type"].as<std::string>() + "\t" + field("depth") + "\t" +
             field("leased") + "\t" + field("lock_waiters"));
  }
  return ok;
}

int help(const std::string& sub) {
  if (sub.empty()) {
    std::fputs(kUsage, stdout);
    return ok;
  }
  auto it = kHelp.find(sub);
  if (it == kHelp.end()) {
    std::fprintf(stderr, "patro: no subcommand '%s'\n%s", sub.c_str(), kUsage);
    return usage_error;
  }
  std::fputs(it->second.c_str(), stdout);
  std::fputs(
      "\nGlobal options: --broker ENDPOINT | --config FILE, --json, --timeout T (patro help)\n"
      "Exit status: 0 ok, 1 Patro error, 2 bad usage, 3 nothing, 4 lock not granted.\n",
      stdout);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  Args a;
  try {
    a = parse_args(argc, argv);
    if (a.sub == "help") return help(a.pos.empty() ? std::string() : a.pos[0]);
    if (a.has("--help") || a.has("-h")) return help(a.sub);
    if (a.sub.empty()) throw UsageError("no subcommand");
    auto allowed = kAllowed.find(a.sub);
    if (allowed == kAllowed.end()) throw UsageError("no subcommand '" + a.sub + "'");
    for (const auto& [o, v] : a.opts) {
      static const std::set<std::string> global = {"--broker", "--config", "--json", "--timeout"};
      if (!global.count(o) && !allowed->second.count(o))
        throw UsageError("patro " + a.sub + " takes no option " + o);
    }
    if (!a.command.empty() && a.sub != "lock") throw UsageError("only patro lock takes -- CMD");

    patro::ClientOptions options;
    if (a.has("--timeout")) {
      options.call_timeout = parse_duration(a.opts.at("--timeout"), "--timeout");
      if (options.call_timeout.count() == 0) throw UsageError("--timeout must be positive");
      options.connect_timeout = std::min(options.connect_timeout, options.call_timeout);
    }
    // A blocking take or follow waits on the server: the call's deadline must outlast it.
    if (a.has("--wait") && a.sub != "lock")
      options.call_timeout = std::max(options.call_timeout, ms(wait_ms(a)) + options.call_timeout);
    Output out{a.has("--json")};
    Cluster cluster(a, options);
    static const std::map<std::string, int (*)(const Args&, Cluster&, const Output&)> commands = {
        {"get", cmd_get}, {"set", cmd_set},     {"call", cmd_call}, {"push", cmd_push},
        {"pop", cmd_pop}, {"take", cmd_take},   {"ack", cmd_ack},   {"lock", cmd_lock},
        {"ls", cmd_ls},   {"locks", cmd_locks}, {"tail", cmd_tail}, {"stats", cmd_stats}};
    return commands.at(a.sub)(a, cluster, out);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "patro: %s\n", e.what());
    if (!a.sub.empty() && kHelp.count(a.sub))
      std::fputs(kHelp.at(a.sub).c_str(), stderr);
    else
      std::fputs(kUsage, stderr);
    return usage_error;
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "patro: %s\n", e.what());
    return patro_error;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "patro: %s\n", e.what());
    return patro_error;
  }
}
