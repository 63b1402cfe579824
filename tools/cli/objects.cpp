// Subcommands that read and write served objects: get, set, call, push, pop, take, ack, lock,
// and a job queue's touch, bury, buried and kick.
#include <signal.h>

#include <cinttypes>
#include <cstdio>

#include "command.hpp"
#include "context.hpp"

namespace patro::cli {

namespace {

bool is_container(const std::string& reftype) {
  return reftype == "HASH" || reftype == "ARRAY" || reftype == "SCALAR";
}

PathElem key_of(const std::string& s) {
  const Value v = infer(s);
  if (v.if_int()) return PathElem(*v.if_int());
  return PathElem(s);
}

Proxy at_path(Proxy p, const Invocation& a, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    const PathElem e = key_of(a.key(i));
    if (const int64_t* idx = std::get_if<int64_t>(&e))
      p = p[*idx];
    else
      p = p[std::get<std::string>(e)];
  }
  return p;
}

// A container's contents, one level deep (nested containers print as references).
Value contents(const Proxy& p, const std::string& reftype) {
  if (reftype == "HASH") {
    ValueHash h;
    for (const Value& k : p.keys()) h[k.as<std::string>()] = p[k.as<std::string>()].get();
    return Value(h);
  }
  if (reftype == "ARRAY") return Value(p.values());
  return p.get();
}

// A served object's method with a command line's arguments: Proxy::call takes a pack, so up to 8
// arguments go through a fixed switch (a served method's arity is small).
std::vector<Value> call_with(const Proxy& p, const std::string& m, const ValueArray& x, bool list) {
  auto one = [&](auto&&... xs) -> std::vector<Value> {
    if (list) return p.call_list(m, xs...);
    return {p.call(m, xs...)};
  };
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
      throw UsageError("at most 8 arguments to a method");
  }
}

// A list result whose one element is an array (a method that returns an array rather than a
// patro::List) as that array's elements.
std::vector<Value> flat(std::vector<Value> list) {
  if (list.size() == 1)
    if (const ValueArray* inner = list[0].if_array()) return *inner;
  return list;
}

int64_t wait_ms(const Invocation& a) {
  return a.wait_ms.value_or(0);
}

}  // namespace

int cmd_get(const Invocation& a, Cluster& c, const Output& out) {
  a.need(1, SIZE_MAX, "NAME [KEY...]");
  Proxy p = c.proxy(a.key(0));
  const std::string rt = reftype(p);
  Value v;
  if (is_container(rt)) {
    if (a.words.size() == 1) {
      v = contents(p, rt);
    } else {
      Proxy e = at_path(p, a, 1, a.words.size());
      if (a.strict && !e.exists()) return nothing;
      v = e.get();
    }
  } else {
    ValueArray args;
    for (size_t i = 1; i < a.words.size(); ++i) args.push_back(Value(a.key(i)));
    if (args.size() > 2) throw UsageError("patro get: at most two keys for a method get");
    if (args.empty() && can(p, "keys") && can(p, "get")) {
      // A key-value object as a whole: its keys and their values.
      ValueHash h;
      for (const Value& k : flat(p.call_list("keys"))) h[text(k)] = p.call("get", k);
      v = Value(std::move(h));
    } else {
      if (a.strict && args.size() == 1 && can(p, "exists") && !truthy(p.call("exists", args[0])))
        return nothing;
      v = call_with(p, "get", args, false).at(0);
    }
  }
  if (a.strict && v.is_null()) return nothing;
  out.print(v);
  return ok;
}

int cmd_set(const Invocation& a, Cluster& c, const Output&) {
  a.need(2, SIZE_MAX, "NAME [KEY...] VALUE");
  Proxy p = c.proxy(a.key(0));
  const Value value = a.value(a.words.size() - 1);
  if (is_container(reftype(p))) {
    if (a.words.size() < 3)
      p.set(value);  // a served scalar
    else
      at_path(p, a, 1, a.words.size() - 1).set(value);
    return ok;
  }
  if (a.words.size() == 2)
    p.call("set", value);
  else if (a.words.size() == 3)
    p.call("set", Value(a.key(1)), value);
  else
    throw UsageError("patro set: at most one key for a method set");
  return ok;
}

int cmd_call(const Invocation& a, Cluster& c, const Output& out) {
  a.need(2, SIZE_MAX, "NAME METHOD [ARG...]");
  if (a.list && a.scalar) throw UsageError("give --list or --scalar, not both");
  Proxy p = c.proxy(a.key(0));
  ValueArray args;
  for (size_t i = 2; i < a.words.size(); ++i) args.push_back(a.value(i));
  if (a.scalar)
    out.print(call_with(p, a.key(1), args, false).at(0));
  else
    out.print_all(flat(call_with(p, a.key(1), args, true)));
  return ok;
}

int cmd_push(const Invocation& a, Cluster& c, const Output& out) {
  a.need(2, SIZE_MAX, "NAME VALUE...");
  Proxy p = c.proxy(a.key(0));
  ValueArray items;
  for (size_t i = 1; i < a.words.size(); ++i) items.push_back(a.value(i));
  ValueHash options;
  if (a.priority) options["priority"] = *a.priority;
  if (a.delay) options["delay_ms"] = parse_duration(*a.delay, "--delay").count();
  if (a.ttr) options["ttr_ms"] = parse_duration(*a.ttr, "--ttr").count();
  if (a.dedup) {
    if (items.size() != 1) throw UsageError("--dedup is one job's key: push one VALUE");
    options["dedup"] = *a.dedup;
  }
  if (reftype(p) == "ARRAY") {
    if (!options.empty())
      throw UsageError("--priority, --delay, --ttr and --dedup are for job queues");
    size_t n = 0;
    for (const Value& v : items) n = p.push(v);
    out.print(Value(static_cast<int64_t>(n)));
    return ok;
  }
  Value ids;
  if (options.empty())
    ids = items.size() == 1 ? Value::array({p.call("push", items[0])})
                            : p.call("push_many", Value(items));
  else
    ids = items.size() == 1 ? Value::array({p.call("push", items[0], Value(options))})
                            : p.call("push_many", Value(items), Value(options));
  if (const ValueArray* list = ids.if_array())
    out.print_all(*list);
  else
    out.print(ids);
  return ok;
}

namespace {

struct Job {
  Value id, job, delivery;
};

Job job_of(const Value& t) {
  const ValueArray* f = t.if_array();
  if (f == nullptr || f->size() != 3)
    throw Error(Errc::type_mismatch, "the queue's take returned " + t.to_string());
  return Job{(*f)[0], (*f)[1], (*f)[2]};
}

// ID<TAB>DELIVERY<TAB>JOB, the job's text escaped to stay on its line; JSON in the same order.
void print_job(const Output& out, const Job& j) {
  if (out.json) {
    Json o = Json::object();
    o["id"] = to_json(j.id);
    o["delivery"] = to_json(j.delivery);
    o["job"] = to_json(j.job);
    return out.print(o);
  }
  out.line(text(j.id) + "\t" + text(j.delivery) + "\t" + escape_field(text(j.job)));
}

// How long a command whose patro died has between SIGTERM and SIGKILL: well inside the
// heartbeat window after which the broker declares patro dead and its lock or lease goes on.
std::chrono::milliseconds grace(const Cluster& c) {
  return std::min<std::chrono::milliseconds>(std::chrono::seconds(1),
                                             c.options().heartbeat.window() / 3);
}

bool settle(Proxy& p, const Job& j, bool ack) {
  const char* m = ack ? "ack" : "nack";
  if (truthy(p.call(m, j.id, j.delivery))) return true;
  std::fprintf(stderr, "patro: the queue refused the %s of job %s (delivery %s)\n", m,
               text(j.id).c_str(), text(j.delivery).c_str());
  return false;
}

// Waits for a take's answer into t while taking the signals that are blocked for take --exec
// (they are passed on to CMD later), so that ^C ends a wait for a job: returns that signal, or 0
// once answered. A job leased meanwhile goes back when this process's connection closes.
int await_job(const Future<Value>& f, std::chrono::milliseconds deadline, Value& t) {
  const sigset_t set = handled_signals();
  const auto give_up = std::chrono::steady_clock::now() + deadline + std::chrono::seconds(5);
  while (!f.wait_for(std::chrono::milliseconds(100))) {
    if (std::chrono::steady_clock::now() > give_up)
      throw Error(Errc::timeout, "no answer to take_leased");
    const timespec now{0, 0};
    const int sig = sigtimedwait(&set, nullptr, &now);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) return sig;
  }
  t = f.get();
  return 0;
}

}  // namespace

int cmd_pop(const Invocation& a, Cluster& c, const Output& out) {
  a.need(1, 1, "NAME");
  Proxy p = c.proxy(a.key(0));
  if (reftype(p) == "ARRAY") {
    if (p.size() == 0) return nothing;
    out.print(a.shift ? p.shift() : p.pop());
    return ok;
  }
  const Value t = p.call("take", wait_ms(a));
  if (t.is_null()) return nothing;
  const Job j = job_of(t);
  if (!settle(p, j, true)) return patro_error;
  out.print(j.job);
  return ok;
}

int cmd_take(const Invocation& a, Cluster& c, const Output& out) {
  a.need(1, 1, "NAME");
  if (a.exec && a.command.empty()) throw UsageError("patro take --exec needs a command");
  Proxy p = c.proxy(a.key(0));
  if (reftype(p) == "ARRAY") {
    if (a.exec || a.lease_ms) throw UsageError("--exec and --lease are for job queues");
    if (p.size() == 0) return nothing;
    const Value v = p.shift();
    if (out.json) {
      Json o = Json::object();
      o["id"] = nullptr;
      o["delivery"] = nullptr;
      o["job"] = to_json(v);
      out.print(o);
    } else {
      out.print(v);
    }
    return ok;
  }
  // Without --exec the lease outlives this process (detached), so that patro ack from another
  // process can settle it; with --exec this process holds it, and if it dies the job goes back.
  const bool leasable = can(p, "take_leased");
  if (!leasable && a.lease_ms) throw Error(Errc::unsupported, "this queue takes no --lease");
  Value t;
  if (!leasable) {
    t = p.call("take", wait_ms(a));
  } else if (!a.exec) {
    t = p.call("take_leased", wait_ms(a), a.lease_ms.value_or(0), true);
  } else if (const int sig =
                 await_job(p.async_call("take_leased", wait_ms(a), a.lease_ms.value_or(0), false),
                           c.options().call_timeout, t)) {
    std::fprintf(stderr, "patro: interrupted while waiting for a job\n");
    return 128 + sig;
  }
  if (t.is_null()) return nothing;
  const Job j = job_of(t);
  if (!a.exec) {
    print_job(out, j);
    return ok;
  }
  const std::string data = text(j.job);
  const int status = run_command(
      a.command, {"PATRO_JOB_ID=" + text(j.id), "PATRO_JOB_DELIVERY=" + text(j.delivery)}, &data,
      grace(c));
  const bool settled = settle(p, j, status == 0);
  if (status == 0 && !settled) return patro_error;
  return status;
}

int cmd_ack(const Invocation& a, Cluster& c, const Output&) {
  a.need(3, 3, "NAME ID DELIVERY");
  Proxy p = c.proxy(a.key(0));
  const Job j{parse_int(a.key(1), "ID", 0, INT64_MAX), Value(),
              parse_int(a.key(2), "DELIVERY", 0, INT64_MAX)};
  if (settle(p, j, !a.nack)) return ok;
  // The queue answers only false: job ID is not leased under DELIVERY (any more).
  std::fprintf(stderr,
               "patro: %s refused to %s job %lld delivery %lld: it is not leased under that "
               "delivery (settled already, its lease ran out, or it was delivered again)\n",
               a.key(0).c_str(), a.nack ? "nack" : "ack",
               static_cast<long long>(j.id.as<int64_t>()),
               static_cast<long long>(j.delivery.as<int64_t>()));
  return patro_error;
}

namespace {

// touch and bury: a job queue's method of ID and DELIVERY, answered true or false.
int settle_with(const Invocation& a, Cluster& c, const char* method, const char* done) {
  a.need(3, 3, "NAME ID DELIVERY");
  Proxy p = c.proxy(a.key(0));
  const int64_t id = parse_int(a.key(1), "ID", 0, INT64_MAX);
  const int64_t delivery = parse_int(a.key(2), "DELIVERY", 0, INT64_MAX);
  if (truthy(p.call(method, id, delivery))) return ok;
  std::fprintf(stderr,
               "patro: %s refused to %s job %lld delivery %lld: it is not leased under that "
               "delivery (settled already, its lease ran out, or it was delivered again)\n",
               a.key(0).c_str(), done, static_cast<long long>(id),
               static_cast<long long>(delivery));
  return patro_error;
}

int64_t count_word(const Invocation& a, int64_t otherwise) {
  return a.words.size() > 1 ? parse_int(a.key(1), "N", 1, 10000) : otherwise;
}

}  // namespace

int cmd_touch(const Invocation& a, Cluster& c, const Output&) {
  return settle_with(a, c, "touch", "touch");
}

int cmd_bury(const Invocation& a, Cluster& c, const Output&) {
  return settle_with(a, c, "bury", "bury");
}

int cmd_buried(const Invocation& a, Cluster& c, const Output& out) {
  a.need(1, 2, "NAME [N]");
  Proxy p = c.proxy(a.key(0));
  const Value got = p.call("buried", count_word(a, 10));
  const ValueArray* list = got.if_array();
  if (list == nullptr) throw Error(Errc::type_mismatch, "buried answered " + got.to_string());
  if (out.json) {
    Json all = Json::array();
    for (const Value& j : *list) {
      Json o = Json::object();
      o["id"] = to_json(j[0]);
      o["job"] = to_json(j[1]);
      all.push_back(std::move(o));
    }
    out.print(all);
  } else {
    for (const Value& j : *list) out.line(text(j[0]) + "\t" + escape_field(text(j[1])));
  }
  return list->empty() ? nothing : ok;
}

int cmd_kick(const Invocation& a, Cluster& c, const Output& out) {
  a.need(1, 2, "NAME [N]");
  Proxy p = c.proxy(a.key(0));
  const Value n = p.call("kick", count_word(a, 1));
  out.print(n);
  return n == 0 ? nothing : ok;
}

int cmd_isa(const Invocation& a, Cluster& c, const Output& out) {
  a.need(2, 2, "NAME CLASS");
  const bool is = isa(c.proxy(a.key(0)), a.key(1));
  out.print(Value(is));
  return is ? ok : nothing;
}

int cmd_lock(const Invocation& a, Cluster& c, const Output&) {
  a.need(1, 1, "NAME -- CMD [ARG...]");
  if (a.command.empty()) throw UsageError("patro lock needs a command after --");
  Proxy p = c.proxy(a.key(0));
  Timeout timeout;
  if (a.wait_ms) timeout = std::chrono::milliseconds(*a.wait_ms);
  const SyncResult r = lock(p, timeout, a.steal);
  if (!r) {
    std::fprintf(stderr, "patro: the lock of %s was not granted (error %d)\n", a.key(0).c_str(),
                 r.error);
    return not_granted;
  }
  const int status =
      run_command(a.command, {"PATRO_LOCK_TOKEN=" + std::to_string(r.token)}, nullptr, grace(c));
  try {
    unlock(p, -1);
  } catch (const Error& e) {
    // The lock goes with the connection anyway, when this process exits.
    std::fprintf(stderr, "patro: unlocking %s: %s\n", a.key(0).c_str(), e.what());
  }
  return status;
}

}  // namespace patro::cli
