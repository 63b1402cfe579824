// Subcommands that show what a cluster holds and does: ls, locks, stats (of a cluster or one job
// queue), and tail of a served log.
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "context.hpp"

namespace patro::cli {

namespace {

std::string hex16(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

bool is_container(const std::string& reftype) {
  return reftype == "HASH" || reftype == "ARRAY" || reftype == "SCALAR";
}

// One broker's answer to a question, or why it gave none.
template <class T>
struct Answer {
  std::string broker;
  std::optional<T> value;
  std::string error;
};

// Asks every broker at once (each bounded by the connect and call timeouts), so that a dead
// broker costs one timeout however many there are; the answers in the brokers' order.
template <class T, class F>
std::vector<Answer<T>> ask_each(const std::vector<std::string>& brokers, F ask) {
  std::vector<std::future<T>> pending;
  for (const std::string& b : brokers)
    pending.push_back(std::async(std::launch::async, [&ask, b] { return ask(b); }));
  std::vector<Answer<T>> answers;
  for (size_t i = 0; i < brokers.size(); ++i) {
    Answer<T> a{brokers[i], std::nullopt, {}};
    try {
      a.value = pending[i].get();
    } catch (const std::exception& e) {
      a.error = e.what();
      while (!a.error.empty() && (a.error.back() == ';' || a.error.back() == ' '))
        a.error.pop_back();
    }
    answers.push_back(std::move(a));
  }
  return answers;
}

// Several brokers' answers: each under a line "broker ENDPOINT" (or that line saying why it did
// not answer), or a JSON array of objects, each with "broker" first. Exits 0 if any answered.
template <class T, class ToJson, class PrintText>
int print_each(const std::vector<Answer<T>>& answers, const Output& out, ToJson to_json_of,
               PrintText print_text) {
  Json all = Json::array();
  size_t answered = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    const Answer<T>& a = answers[i];
    if (a.value) ++answered;
    if (out.json) {
      Json j = Json{{"broker", a.broker}};
      if (a.value) {
        const Json view = to_json_of(*a.value);  // iterated below: not a temporary
        for (auto it = view.begin(); it != view.end(); ++it) j[it.key()] = it.value();
      } else {
        j["error"] = a.error;
      }
      all.push_back(std::move(j));
      continue;
    }
    if (i > 0) out.line("");
    if (!a.value) {
      out.line("broker " + a.broker + ": unreachable (" + a.error + ")");
      continue;
    }
    out.line("broker " + a.broker);
    print_text(*a.value);
  }
  if (out.json) out.print(all);
  if (answered > 0) return ok;
  std::fprintf(stderr, "patro: none of the %zu brokers answered\n", answers.size());
  return patro_error;
}

// The names at the brokers: those of the one broker, or of every broker that answers.
std::vector<std::string> names_or_all(const Invocation& a, Cluster& c) {
  if (!a.words.empty()) return a.words;
  std::vector<std::string> names;
  if (c.endpoints().size() == 1) {
    for (const auto& n : broker_info(c.endpoint(), c.options()).names) names.push_back(n.name);
    return names;
  }
  std::string errors;
  size_t answered = 0;
  const auto answers = ask_each<BrokerInfo>(
      c.endpoints(), [&c](const std::string& b) { return broker_info(b, c.options()); });
  for (const auto& ans : answers) {
    if (!ans.value) {
      errors += (errors.empty() ? "" : "; ") + ans.broker + ": " + ans.error;
      continue;
    }
    ++answered;
    for (const auto& n : ans.value->names) names.push_back(n.name);
  }
  if (answered == 0)
    throw Error(Errc::broker_unreachable, "none of the " + std::to_string(answers.size()) +
                                              " brokers answered (" + errors + ")");
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

Json ls_json(const BrokerInfo& info) {
  Json servers = Json::array(), names = Json::array();
  for (const auto& s : info.servers)
    servers.push_back(Json{{"id", hex16(s.id)},
                           {"lanes", s.lanes},
                           {"clients", s.clients},
                           {"direct", s.direct},
                           {"brokered", s.brokered}});
  for (const auto& n : info.names)
    names.push_back(Json{
        {"name", n.name}, {"type", n.type_name}, {"reftype", n.reftype}, {"id", n.id.to_hex()}});
  return Json{{"servers", servers}, {"names", names}};
}

void ls_text(const BrokerInfo& info, const Output& out) {
  out.line("SERVER            LANES  CLIENTS        DIRECT      BROKERED");
  for (const auto& s : info.servers) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s  %5u  %7u  %12" PRIu64 "  %12" PRIu64, hex16(s.id).c_str(),
                  s.lanes, s.clients, s.direct, s.brokered);
    out.line(buf);
  }
  out.line("");
  out.line("NAME\tTYPE\tOBJECT");
  for (const auto& n : info.names) out.line(n.name + "\t" + n.type_name + "\t" + n.id.to_hex());
}

}  // namespace

int cmd_ls(const Invocation& a, Cluster& c, const Output& out) {
  a.need(0, 0, "no arguments");
  if (c.endpoints().size() > 1) {
    const auto answers = ask_each<BrokerInfo>(
        c.endpoints(), [&c](const std::string& b) { return broker_info(b, c.options()); });
    return print_each(answers, out, ls_json, [&out](const BrokerInfo& i) { ls_text(i, out); });
  }
  const BrokerInfo info = broker_info(c.endpoint(), c.options());
  if (out.json) {
    out.print(ls_json(info));
    return ok;
  }
  ls_text(info, out);
  return ok;
}

int cmd_locks(const Invocation& a, Cluster& c, const Output& out) {
  Json all = Json::array();
  if (!out.json) out.line("NAME\tHOLDER\tDEPTH\tWAITERS\tWAITING\tTOKEN");
  for (const std::string& name : names_or_all(a, c)) {
    const LockInfo i = lock_info(c.proxy(name));
    if (out.json) {
      all.push_back(Json{{"name", name},
                         {"holder", i.holder ? Json(hex16(i.holder)) : Json(nullptr)},
                         {"depth", i.depth},
                         {"waiters", i.waiters},
                         {"waiting", i.waiting},
                         {"token", i.token}});
    } else {
      out.line(name + "\t" + (i.holder ? hex16(i.holder) : std::string("-")) + "\t" +
               std::to_string(i.depth) + "\t" + std::to_string(i.waiters) + "\t" +
               std::to_string(i.waiting) + "\t" + std::to_string(i.token));
    }
  }
  if (out.json) out.print(all);
  return ok;
}

namespace {

// One broker's stats: two samples interval apart, and each of its names' queue depth and lock
// waiters (asked through lookup(name)). The object --json prints.
template <class Lookup>
Json stats_of(const std::string& broker, const ClientOptions& options,
              std::chrono::milliseconds interval, Lookup lookup) {
  const auto t0 = std::chrono::steady_clock::now();
  const BrokerInfo first = broker_info(broker, options);
  std::this_thread::sleep_for(interval);
  const BrokerInfo second = broker_info(broker, options);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rps = static_cast<double>(second.stats.routed - first.stats.routed) / secs;
  const double reply_ps = static_cast<double>(second.stats.replies - first.stats.replies) / secs;
  Json objects = Json::object();
  for (const auto& n : second.names) {
    Proxy p = lookup(n.name);
    Json o = Json::object();
    o["type"] = n.type_name;
    o["depth"] = nullptr;
    o["leased"] = nullptr;
    if (!is_container(n.reftype) && can(p, "take") && can(p, "size")) {
      o["depth"] = to_json(p.call("size"));
      if (can(p, "leased")) o["leased"] = to_json(p.call("leased"));
    }
    o["lock_waiters"] = lock_info(p).waiters;
    objects[n.name] = o;
  }
  // Requests the servers took directly and through the broker (their heartbeats' counters).
  uint64_t direct = 0, brokered = 0;
  for (const auto& s : second.servers) {
    direct += s.direct;
    brokered += s.brokered;
  }
  return Json{{"requests_per_second", rps},
              {"replies_per_second", reply_ps},
              {"clients", second.stats.clients},
              {"servers", second.stats.servers},
              {"routed", second.stats.routed},
              {"dropped", second.stats.dropped},
              {"rejected", second.stats.rejected},
              {"retried", second.stats.retried},
              {"dedup_hits", second.stats.dedup_hits},
              {"expired", second.stats.expired},
              {"direct", direct},
              {"brokered", brokered},
              {"objects", objects}};
}

void stats_text(const Json& s, const Output& out) {
  auto u = [&s](const char* k) { return s[k].get<uint64_t>(); };
  char buf[384];
  std::snprintf(
      buf, sizeof buf,
      "requests/s %.1f  replies/s %.1f  clients %" PRIu64 "  servers %" PRIu64 "  dropped %" PRIu64
      "  rejected %" PRIu64 "  retried %" PRIu64 "  dedup_hits %" PRIu64 "  expired %" PRIu64,
      s["requests_per_second"].get<double>(), s["replies_per_second"].get<double>(), u("clients"),
      u("servers"), u("dropped"), u("rejected"), u("retried"), u("dedup_hits"), u("expired"));
  out.line(buf);
  out.line("NAME\tTYPE\tDEPTH\tLEASED\tLOCK_WAITERS");
  const Json& objects = s["objects"];
  for (auto it = objects.begin(); it != objects.end(); ++it) {
    const Json& o = it.value();
    auto field = [&o](const char* k) { return o[k].is_null() ? std::string("-") : dump(o[k]); };
    out.line(it.key() + "\t" + o["type"].get<std::string>() + "\t" + field("depth") + "\t" +
             field("leased") + "\t" + field("lock_waiters"));
  }
}

}  // namespace

int cmd_stats(const Invocation& a, Cluster& c, const Output& out) {
  a.need(0, 1, "[NAME]");
  if (a.words.size() == 1) {
    // One job queue's counts: its stats() hash, a NAME<TAB>VALUE line each in a fixed order.
    const Value s = c.proxy(a.key(0)).call("stats");
    if (s.if_hash() == nullptr) throw Error(Errc::type_mismatch, "stats answered " + s.to_string());
    if (out.json) {
      out.print(s);
      return ok;
    }
    for (const char* key :
         {"ready", "delayed", "leased", "buried", "oldest_ready_ms", "pushed", "acknowledged"})
      out.line(std::string(key) + "\t" + text(s[key]));
    return ok;
  }
  const auto interval = std::chrono::milliseconds(a.interval_ms.value_or(1000));
  if (c.endpoints().size() > 1) {
    // Each broker sampled at the same time; its names asked through it.
    const ClientOptions& options = c.options();
    const auto answers = ask_each<Json>(c.endpoints(), [&options, interval](const std::string& b) {
      return stats_of(b, options, interval,
                      [&](const std::string& name) { return get_proxy(b, name, options); });
    });
    return print_each(
        answers, out, [](const Json& j) { return j; },
        [&out](const Json& j) { stats_text(j, out); });
  }
  const Json s = stats_of(c.endpoint(), c.options(), interval,
                          [&c](const std::string& n) { return c.proxy(n); });
  if (out.json)
    out.print(s);
  else
    stats_text(s, out);
  return ok;
}

namespace {

// Where the next read of a log starts: a byte offset in the file of a generation (the log's
// files across rotations), or, before any reply named one (tail --from), in the current file.
struct LogPosition {
  std::optional<int64_t> generation;
  int64_t offset = 0;
  Value value() const {
    if (!generation) return offset;
    return Value(ValueHash{{"generation", *generation}, {"offset", offset}});
  }
};

// The position after a read or follow result. A worker older than generations names none: its
// offsets stay plain.
LogPosition next_position(const Value& r, const LogPosition& at) {
  LogPosition next = at;
  if (const int64_t* n = r["next"].if_int()) next.offset = *n;
  if (const int64_t* g = r["generation"].if_int()) next.generation = *g;
  return next;
}

// One line of a log: with --json, a line that is a JSON object (a worker's --log-format json)
// is printed as that object, any other as a JSON string; without, as it is.
void print_line(const Output& out, const Value& l) {
  if (const std::string* s = l.if_string(); out.json && s && !s->empty() && s->front() == '{') {
    Json j = Json::parse(*s, nullptr, false);
    if (j.is_object()) return out.print(j);
  }
  out.print(l);
}

// Prints the lines of a read or follow result (print_line); returns the position after them.
LogPosition print_lines(const Output& out, const Value& r, const LogPosition& at) {
  if (r["skipped"] == true)
    std::fprintf(stderr,
                 "patro: tail: the file being followed is no longer kept; going on at the oldest "
                 "one kept (lines may be missing)\n");
  if (const ValueArray* ls = r["lines"].if_array())
    for (const Value& l : *ls) print_line(out, l);
  return next_position(r, at);
}

// Errors that another try cannot mend: the name is there but is not a log.
bool fatal(const Error& e) {
  switch (e.code()) {
    case Errc::unknown_method:
    case Errc::type_mismatch:
    case Errc::invalid_argument:
    case Errc::not_callable:
    case Errc::unsupported:
    case Errc::bad_config:
      return true;
    default:
      return false;
  }
}

// The follower of tail -f, on its own thread: the main thread waits for the signal that ends it.
class Follower {
 public:
  Follower(const Invocation& a, Cluster& c, const Output& out, Proxy p, LogPosition at)
      : a_(a), c_(c), out_(out), p_(std::move(p)), at_(at) {}

  // Follows until stop(); a fatal error ends it with status 1.
  int run() {
    constexpr int64_t kFollowMs = 1000;
    auto backoff = std::chrono::milliseconds(100);
    bool lost = false;
    while (!stopping()) {
      try {
        if (lost) {
          c_.reconnect();
          p_ = c_.proxy(a_.key(0));
          if (announced_) std::fprintf(stderr, "patro: tail: %s is back\n", a_.key(0).c_str());
          announced_ = false;
          lost = false;
          backoff = std::chrono::milliseconds(100);
        }
        // The position names the file's generation: across a rotation the follower finishes the
        // old file and goes on at the new one's start.
        at_ = print_lines(out_, p_.call("follow", at_.value(), kFollowMs), at_);
      } catch (const Error& e) {
        if (stopping()) break;
        if (fatal(e)) {
          std::fprintf(stderr, "patro: tail: %s\n", e.what());
          return patro_error;
        }
        // Anything else, a timeout included (a dead broker may answer nothing): a new connection
        // and a new lookup of the name, since a restarted server may have new object ids (a
        // worker without --data or --server-id).
        if (!lost && e.code() != Errc::timeout) {
          std::fprintf(stderr, "patro: tail: %s; reconnecting\n", e.what());
          announced_ = true;
        }
        lost = true;
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, backoff, [&] { return stop_; });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      }
    }
    return ok;
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
  }

 private:
  bool stopping() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_;
  }

  const Invocation& a_;
  Cluster& c_;
  const Output& out_;
  Proxy p_;
  LogPosition at_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool announced_ = false;  // "reconnecting" was said: say "is back" once it is
};

}  // namespace

int cmd_tail(const Invocation& a, Cluster& c, const Output& out) {
  a.need(1, 1, "NAME");
  Proxy p = c.proxy(a.key(0));
  LogPosition at;
  if (a.from) {
    at = print_lines(out, p.call("read", *a.from, int64_t{100000}), LogPosition{{}, *a.from});
  } else {
    // The last n lines: read everything, keep n. Bounded by the log's size.
    const int64_t n = a.lines.value_or(10);
    std::deque<Value> last;
    for (int round = 0; round < 1000000; ++round) {
      const Value r = p.call("read", at.value(), int64_t{10000});
      const ValueArray* ls = r["lines"].if_array();
      if (ls)
        for (const Value& l : *ls) {
          last.push_back(l);
          if (static_cast<int64_t>(last.size()) > n) last.pop_front();
        }
      const LogPosition next = next_position(r, at);
      const bool moved = next.offset != at.offset || next.generation != at.generation;
      at = next;
      if (ls == nullptr || ls->empty() || !moved) break;
    }
    for (const Value& l : last) print_line(out, l);
  }
  if (!a.follow) return ok;

  // The follower runs on a thread; this one waits for SIGINT, SIGTERM or SIGHUP (blocked in every
  // thread since before the connection started), or for SIGUSR1 from a follower that failed.
  Follower f(a, c, out, std::move(p), at);
  std::promise<int> done;
  std::future<int> result = done.get_future();
  const pid_t self = ::getpid();
  std::thread t([&] {
    const int status = f.run();
    done.set_value(status);
    ::kill(self, SIGUSR1);
  });
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&set, s);
  int sig = 0;
  while (sigwait(&set, &sig) != 0 || sig == 0) {
  }
  f.stop();
  if (result.wait_for(std::chrono::seconds(3)) != std::future_status::ready) {
    // A call stuck on a dead connection: the lines printed so far are out; leave at once.
    std::fflush(stdout);
    ::_exit(sig == SIGUSR1 ? patro_error : ok);
  }
  t.join();
  return sig == SIGUSR1 ? result.get() : ok;
}

}  // namespace patro::cli
