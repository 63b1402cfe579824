// A server for the patro CLI's tests, until patro-worker lands: named objects with the method
// names of patro-worker's ready-made objects (kept in memory, simply), and plain containers.
//   jobs   queue:   push push_many take take_many ack nack size leased peek
//   applog log:     write write_many rotate read follow size
//   kv     hash:    get set erase exists keys size
//   hits   counter: add get set cas
//   h      a patro::Hash {"abc": 123, "def": [456, "mno"]}      arr  an empty patro::Array
// Writes its config to CONFIG and runs until SIGTERM/SIGINT, or shuts itself down after
// --idle-ms with no client (ServerOptions::idle_timeout), when given.
//
//   patro-test-cli-server CONFIG [--broker ENDPOINT] [--heartbeat-ms N] [--idle-ms N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

namespace {

using patro::Value;
using patro::ValueArray;
using Clock = std::chrono::steady_clock;

// Blocking calls hold a worker thread here; bound them so a test never hangs.
std::chrono::milliseconds bounded(int64_t ms) {
  return std::chrono::milliseconds(std::clamp<int64_t>(ms, 0, 10000));
}

// A blocked take or follow is a patro::Deferred (no worker thread waits, so lanes keep
// heartbeating); expire() answers those whose time is up.
struct Waiter {
  patro::Deferred reply;
  Clock::time_point deadline;
  int64_t offset = 0;
};

struct Queue {
  std::mutex mu;
  int64_t next_id = 1;
  std::deque<std::pair<int64_t, Value>> ready;
  std::map<int64_t, std::pair<int64_t, Value>> leased;  // id -> (delivery, job)
  int64_t deliveries = 0;
  std::deque<Waiter> takers;

  Value lease_front() {  // mu held, ready not empty
    auto [id, job] = ready.front();
    ready.pop_front();
    const int64_t delivery = ++deliveries;
    leased[id] = {delivery, job};
    return Value(ValueArray{Value(id), job, Value(delivery)});
  }
  void hand_out() {  // mu held
    while (!ready.empty() && !takers.empty()) {
      takers.front().reply.resolve(lease_front());
      takers.pop_front();
    }
  }
  int64_t push(const Value& job) {
    std::lock_guard lock(mu);
    ready.emplace_back(next_id, job);
    hand_out();
    return next_id++;
  }
  void take(patro::Deferred d, int64_t timeout_ms) {
    std::lock_guard lock(mu);
    if (!ready.empty()) return d.resolve(lease_front());
    if (timeout_ms <= 0) return d.resolve(Value());
    takers.push_back(Waiter{d, Clock::now() + bounded(timeout_ms)});
  }
  Value take_now() {
    std::lock_guard lock(mu);
    return ready.empty() ? Value() : lease_front();
  }
  bool settle(int64_t id, int64_t delivery, bool requeue) {
    std::lock_guard lock(mu);
    auto it = leased.find(id);
    if (it == leased.end() || it->second.first != delivery) return false;
    if (requeue) ready.emplace_front(id, it->second.second);
    leased.erase(it);
    hand_out();
    return true;
  }
  void expire(Clock::time_point now) {
    std::lock_guard lock(mu);
    for (auto it = takers.begin(); it != takers.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      it->reply.resolve(Value());
      it = takers.erase(it);
    }
  }
};

struct Log {
  std::mutex mu;
  std::vector<std::string> lines;  // an offset is a line number here
  std::deque<Waiter> followers;

  Value read_from(int64_t offset, int64_t max_lines) {  // mu held
    ValueArray out;
    size_t i = static_cast<size_t>(std::max<int64_t>(offset, 0));
    for (; i < lines.size() && static_cast<int64_t>(out.size()) < max_lines; ++i)
      out.emplace_back(lines[i]);
    return Value::hash({{"lines", Value(out)}, {"next", Value(static_cast<int64_t>(i))}});
  }
  void wake(bool all) {  // mu held: answers followers with new lines (all: every one)
    for (auto it = followers.begin(); it != followers.end();) {
      if (!all && it->offset >= static_cast<int64_t>(lines.size())) {
        ++it;
        continue;
      }
      it->reply.resolve(read_from(it->offset, 1000));
      it = followers.erase(it);
    }
  }
  void expire(Clock::time_point now) {
    std::lock_guard lock(mu);
    for (auto it = followers.begin(); it != followers.end();) {
      if (it->deadline > now) {
        ++it;
        continue;
      }
      it->reply.resolve(read_from(it->offset, 1000));
      it = followers.erase(it);
    }
  }
};

struct KV {
  std::mutex mu;
  std::map<std::string, Value> m;
};

struct Counter {
  std::mutex mu;
  int64_t v = 0;
};

void register_classes() {
  patro::Class<Queue>("queue")
      .method("push", [](Queue& q, Value job) { return q.push(job); })
      .method("push_many",
              [](Queue& q, ValueArray jobs) {
                ValueArray ids;
                for (const Value& j : jobs) ids.emplace_back(q.push(j));
                return Value(ids);
              })
      .method("take",
              [](Queue& q, patro::Deferred d, int64_t timeout_ms) { q.take(d, timeout_ms); })
      .method("take_many",  // what is ready now (this test server does not wait here)
              [](Queue& q, int64_t n, int64_t) {
                ValueArray out;
                for (int64_t i = 0; i < n; ++i) {
                  Value t = q.take_now();
                  if (t.is_null()) break;
                  out.push_back(t);
                }
                return Value(out);
              })
      .method("ack", [](Queue& q, int64_t id, int64_t d) { return q.settle(id, d, false); })
      .method("nack", [](Queue& q, int64_t id, int64_t d) { return q.settle(id, d, true); })
      .method("size",
              [](Queue& q) {
                std::lock_guard lock(q.mu);
                return static_cast<int64_t>(q.ready.size());
              })
      .method("leased",
              [](Queue& q) {
                std::lock_guard lock(q.mu);
                return static_cast<int64_t>(q.leased.size());
              })
      .method("peek", [](Queue& q) {
        std::lock_guard lock(q.mu);
        return q.ready.empty() ? Value() : q.ready.front().second;
      });
  patro::Class<Log>("log")
      .method("write",
              [](Log& l, std::string line) {
                std::lock_guard lock(l.mu);
                l.lines.push_back(std::move(line));
                l.wake(false);
                return true;
              })
      .method("write_many",
              [](Log& l, ValueArray lines) {
                std::lock_guard lock(l.mu);
                for (const Value& v : lines) l.lines.push_back(v.as<std::string>());
                l.wake(false);
                return static_cast<int64_t>(lines.size());
              })
      .method("rotate",
              [](Log& l) {
                std::lock_guard lock(l.mu);
                l.lines.clear();
                return true;
              })
      .method("read",
              [](Log& l, int64_t offset, int64_t max_lines) {
                std::lock_guard lock(l.mu);
                return l.read_from(offset, max_lines);
              })
      .method("follow",
              [](Log& l, patro::Deferred d, int64_t offset, int64_t timeout_ms) {
                std::lock_guard lock(l.mu);
                if (offset < static_cast<int64_t>(l.lines.size()) || timeout_ms <= 0)
                  return d.resolve(l.read_from(offset, 1000));
                l.followers.push_back(Waiter{d, Clock::now() + bounded(timeout_ms), offset});
              })
      .method("size", [](Log& l) {
        std::lock_guard lock(l.mu);
        return static_cast<int64_t>(l.lines.size());
      });
  patro::Class<KV>("hash")
      .method("get",
              [](KV& h, std::string k) {
                std::lock_guard lock(h.mu);
                auto it = h.m.find(k);
                return it == h.m.end() ? Value() : it->second;
              })
      .method("set",
              [](KV& h, std::string k, Value v) {
                std::lock_guard lock(h.mu);
                h.m[k] = v;
                return true;
              })
      .method("erase",
              [](KV& h, std::string k) {
                std::lock_guard lock(h.mu);
                return h.m.erase(k) > 0;
              })
      .method("exists",
              [](KV& h, std::string k) {
                std::lock_guard lock(h.mu);
                return h.m.count(k) > 0;
              })
      .method("keys",
              [](KV& h) {
                std::lock_guard lock(h.mu);
                ValueArray ks;
                for (const auto& [k, v] : h.m) ks.emplace_back(k);
                return Value(ks);
              })
      .method("size", [](KV& h) {
        std::lock_guard lock(h.mu);
        return static_cast<int64_t>(h.m.size());
      });
  patro::Class<Counter>("counter")
      .method("add",
              [](Counter& c, int64_t n) {
                std::lock_guard lock(c.mu);
                return c.v += n;
              })
      .method("get",
              [](Counter& c) {
                std::lock_guard lock(c.mu);
                return c.v;
              })
      .method("set",
              [](Counter& c, int64_t v) {
                std::lock_guard lock(c.mu);
                c.v = v;
                return v;
              })
      .method("cas", [](Counter& c, int64_t expected, int64_t v) {
        std::lock_guard lock(c.mu);
        if (c.v != expected) return false;
        c.v = v;
        return true;
      });
}

}  // namespace

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [options]\n", argv[0]);
    return 2;
  }
  patro::ServerOptions opts;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--broker") {
      opts.broker = argv[i + 1];
    } else if (a == "--heartbeat-ms") {
      opts.heartbeat.interval = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    } else if (a == "--idle-ms") {
      opts.idle_timeout = std::chrono::milliseconds(std::atoi(argv[i + 1]));
      opts.fincheck_freq = std::chrono::milliseconds(50);
    } else {
      std::fprintf(stderr, "bad option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    register_classes();
    auto queue = std::make_shared<Queue>();
    auto log = std::make_shared<Log>();
    auto cfg = patro::patronize(
        opts, patro::named("jobs", queue), patro::named("applog", log),
        patro::named("kv", std::make_shared<KV>()),
        patro::named("hits", std::make_shared<Counter>()),
        patro::named("h", patro::Hash{{"abc", 123}, {"def", patro::Array{456, "mno"}}}),
        patro::named("arr", patro::Array{}));
    cfg.to_file(argv[1]);
    // Until a signal, or until the server shuts itself down (idle_timeout).
    // Every 20 ms: answer the takes and follows whose time is up.
    while (cfg.serving()) {
      if (signals.wait_for(std::chrono::milliseconds(20))) break;
      queue->expire(Clock::now());
      log->expire(Clock::now());
    }
    cfg.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cli-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
