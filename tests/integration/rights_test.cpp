// Rights per client key (README "Security"): an allow-list line limits a key to names (globs) and
// to reading. Checked across threads of one process with a real broker and server under CURVE,
// on both paths (through the broker, and direct): a read-only key gets but cannot set, push or
// call a method not marked read-only, and calls one that is; a key limited to `jobs*` cannot look
// `kv` up, nor use it by its object id (the server refuses), yet uses what jobs returns; the
// refusals are counted. The allow-list syntax, its errors with line numbers, and a reload that
// changes a key's rights.
#include <doctest/doctest.h>

#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::write_file;

namespace {

struct Gauge {
  int64_t v = 0;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The error a call ends with; fails the test if it succeeds.
template <class F>
patro::Error error_of(F&& f) {
  try {
    f();
  } catch (const patro::Error& e) {
    return e;
  }
  FAIL("the call succeeded; it should have been refused");
  throw std::logic_error("unreachable");
}

void check_refused(const patro::Error& e, const std::string& op, const std::string& name) {
  INFO(e.what());
  CHECK(e.code() == patro::Errc::not_authorized);
  CHECK(contains(e.what(), op));
  CHECK(contains(e.what(), name));
}

// The direct path admits a key once its broker vouched for it (on the client's LOCATE); a
// connection whose handshake came first is admitted when libzmq connects again, and meanwhile
// route=direct answers server_unavailable. Waits (bounded) until a call gets through.
patro::Proxy warm(patro::Proxy p) {
  for (int i = 0; i < 100; ++i) {
    try {
      (void)p["warm"].exists();
      return p;
    } catch (const patro::Error& e) {
      if (e.code() != patro::Errc::server_unavailable) return p;  // reached: refused or typed
    }
    std::this_thread::sleep_for(100ms);
  }
  return p;
}

// The patro CLI with these arguments: its exit status and what it printed (stdout and stderr).
std::pair<int, std::string> cli(const TempDir& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", program("PATRO_CLI")};
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string out = dir.file("cli.out");
  Process p(argv, out);
  const std::optional<int> status = p.wait(30s);
  return {status.value_or(-1), read_file(out)};
}

// An in-process CURVE broker whose client allow list is a file.
struct RightsBroker {
  patro::CurveKeyPair keys = patro::curve_keypair();
  std::string allow_file;
  std::unique_ptr<patro::Broker> broker;
  std::thread runner;
  RightsBroker(const TempDir& dir, const std::string& allow_text) {
    allow_file = dir.file("clients.allow");
    write_file(allow_file, allow_text);
    patro::BrokerOptions bo;
    bo.frontend = bo.backend = "tcp://127.0.0.1:*";
    bo.curve = keys;
    bo.allow_clients_file = allow_file;
    broker = std::make_unique<patro::Broker>(bo);
    runner = std::thread([this] { broker->run(); });
  }
  ~RightsBroker() {
    broker->stop();
    runner.join();
  }
};

}  // namespace

TEST_CASE("allow-list lines: a key alone, names=, read-only; errors name the line") {
  const std::string k = patro::curve_keypair().public_key;
  const patro::AllowEntry all = patro::parse_allow_entry(k);
  CHECK(all.key == k);
  CHECK_FALSE(all.restricted());
  CHECK(all.reaches("anything"));
  const patro::AllowEntry e = patro::parse_allow_entry(k + "  names=jobs*,kv read-only");
  CHECK(e.read_only);
  CHECK(e.names == std::vector<std::string>{"jobs*", "kv"});
  CHECK(e.reaches("jobs"));
  CHECK(e.reaches("jobs-2"));
  CHECK(e.reaches("kv"));
  CHECK_FALSE(e.reaches("kv2"));
  CHECK(e.rights_text() == "names=jobs*,kv read-only");
  CHECK(patro::parse_allow_entry("public-key = \"" + k + "\"").key == k);
  CHECK_THROWS_AS(patro::parse_allow_entry(k + " read-write"), patro::Error);
  CHECK_THROWS_AS(patro::parse_allow_entry(k + " names="), patro::Error);
  CHECK_THROWS_AS(patro::parse_allow_entry(k + " names=a,,b"), patro::Error);

  TempDir dir;
  write_file(dir.file("allow"),
             "# clients\n" + k + " read-only # a comment\n\n" + k + " names=x writable\n");
  try {
    (void)patro::read_allow_entries(dir.file("allow"));
    FAIL("a bad line was accepted");
  } catch (const patro::Error& err) {
    CHECK(contains(err.what(), "line 4"));
    CHECK(contains(err.what(), "writable"));
  }
  // The old reader still reads keys (with rights or without).
  write_file(dir.file("allow"), k + " names=jobs*\n");
  CHECK(patro::read_allow_list(dir.file("allow")) == std::vector<std::string>{k});

  // A broker does not start on a bad list; rights on a server list are refused too.
  patro::BrokerOptions bo;
  bo.frontend = bo.backend = "tcp://127.0.0.1:*";
  bo.curve = patro::curve_keypair();
  bo.allow_clients = {k + " readonly"};
  CHECK_THROWS_AS(patro::Broker{bo}, patro::Error);
  bo.allow_clients = {k + " read-only"};
  bo.allow_servers = {k + " read-only"};
  CHECK_THROWS_AS(patro::Broker{bo}, patro::Error);
}

TEST_CASE("rights per key, through the broker and direct") {
  if (!patro::curve_available()) return;
  patro::Class<Gauge>("Gauge")
      .method("bump", [](Gauge& g) { return ++g.v; })
      .read_only_method("peek", [](const Gauge& g) { return g.v; });

  TempDir dir;
  const patro::CurveKeyPair rw = patro::curve_keypair(), ro = patro::curve_keypair(),
                            jobs_only = patro::curve_keypair(), kv_reader = patro::curve_keypair();
  RightsBroker b(dir, rw.public_key + "\n" + ro.public_key + " read-only\n" + jobs_only.public_key +
                          " names=jobs*\n" + kv_reader.public_key + " names=kv read-only\n");
  patro::ServerOptions so;
  so.broker = b.broker->backend_endpoint();
  so.threads = 2;
  so.curve.broker_key = b.keys.public_key;
  so.curve.keys = patro::curve_keypair();
  so.direct = "tcp://127.0.0.1:*";
  patro::Hash kv{{"colour", "green"}, {"nested", patro::Hash{{"deep", 1}}}};
  patro::Array list{1, 2};
  patro::Hash jobs{{"queue", patro::Array{"job-1"}}, {"peer", kv}};
  auto gauge = std::make_shared<Gauge>(Gauge{7});
  patro::Config served = patro::patronize(so, patro::named("kv", kv), patro::named("list", list),
                                          patro::named("jobs", jobs), patro::named("gauge", gauge));
  struct Stop {
    patro::Config& c;
    ~Stop() { c.stop(); }
  } stop{served};
  const std::string front = b.broker->frontend_endpoint();

  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    const bool direct = route == patro::Route::direct;
    CAPTURE(direct);
    auto options = [&](const patro::CurveKeyPair& keys) {
      patro::ClientOptions co;
      co.route = route;
      co.connect_timeout = 10s;
      co.call_timeout = 10s;
      co.curve.broker_key = b.keys.public_key;
      co.curve.keys = keys;
      return co;
    };
    // The path the calls took: all direct, or none.
    auto check_path = [&](const patro::Proxy& p) {
      const patro::ClientStats s = patro::client(p).stats();
      CHECK(s.replies > 0);
      CHECK((direct ? s.direct_replies == s.replies : s.direct_replies == 0));
    };

    {  // a key with every right
      patro::Proxy p = warm(patro::get_proxy(front, "kv", options(rw)));
      p["shade"] = "dark";
      CHECK(p["shade"].get() == "dark");
      CHECK(patro::get_proxy(front, "gauge", options(rw)).call("bump").as<int64_t>() > 7);
      check_path(p);
    }

    {  // a read-only key reads, calls read-only methods, and changes nothing
      const auto o = options(ro);
      patro::Proxy p = warm(patro::get_proxy(front, "kv", o));
      CHECK(p["colour"].get() == "green");
      CHECK(p["colour"].exists());
      const size_t size = p.size();
      check_refused(error_of([&] { p["colour"] = "red"; }), "set", "'kv'");
      CHECK(p["colour"].get() == "green");
      check_refused(error_of([&] { (void)p["colour"].erase(); }), "erase", "'kv'");
      patro::Proxy l = patro::get_proxy(front, "list", o);
      const size_t length = l.size();
      check_refused(error_of([&] { l.push(3); }), "push", "'list'");
      CHECK(l.size() == length);
      CHECK(p.size() == size);
      patro::Proxy g = patro::get_proxy(front, "gauge", o);
      const int64_t before = g.call("peek").as<int64_t>();
      check_refused(error_of([&] { (void)g.call("bump"); }), "bump", "'gauge'");
      CHECK(g.call("peek").as<int64_t>() == before);
      check_refused(error_of([&] { (void)patro::lock(p); }), "lock", "'kv'");
      // Calls sent together (direct: in one bundle) each run under the key's rights: a bundle
      // carries the key of the session it came on.
      {
        const uint64_t bundles = patro::client(p).stats().bundles_sent;
        patro::Future<patro::Value> read, write;
        {
          const patro::Bundle together(p);
          read = p["colour"].async_get();
          write = p["colour"].async_set("red");
        }
        CHECK(read.get() == "green");
        check_refused(error_of([&] { (void)write.get(); }), "set", "'kv'");
        CHECK(patro::client(p).stats().bundles_sent == bundles + (direct ? 1 : 0));
      }
      CHECK(p["colour"].get() == "green");
      // A reference a permitted object returned carries the key's rights: read, not written.
      patro::Proxy nested(p["nested"].get());
      CHECK(nested["deep"].get() == 1);
      check_refused(error_of([&] { nested["deep"] = 2; }), "set", "");
      // A call pipelined on a result runs under the same rights, checked on that result.
      check_refused(error_of([&] {
                      (void)p["nested"].async_get().async_set(patro::Hash{{"deep", 2}}).get();
                    }),
                    "set", "");
      CHECK(nested["deep"].get() == 1);
      check_path(p);
    }

    {  // a key limited to jobs* cannot reach kv, by name or by id
      const auto o = options(jobs_only);
      check_refused(error_of([&] { (void)patro::get_proxy(front, "kv", o); }), "lookup", "'kv'");
      patro::Proxy j = warm(patro::get_proxy(front, "jobs", o));
      const size_t queued = j["queue"].size();
      j["queue"].push("job-2");
      CHECK(j["queue"].size() == queued + 1);
      // What jobs returns is the key's to use: the peer hash, a reference.
      patro::Proxy peer(j["peer"].get());
      CHECK(peer["colour"].get() == "green");
      // And so is a call pipelined on it before it arrives.
      CHECK_NOTHROW((void)j["peer"].async_get().async_get().get());
      check_path(j);
      // The proxies of a config name objects by id (a guessed id, to this key): the server
      // refuses those the key cannot reach, and serves jobs.
      std::vector<patro::Proxy> all = patro::get_proxies(served, o);
      REQUIRE(all.size() == 4);
      check_refused(error_of([&] { (void)all[0]["colour"].get(); }), "get", "'kv'");
      check_refused(error_of([&] { (void)all[3].call("peek"); }), "call", "'gauge'");
      CHECK(all[2]["queue"].size() == queued + 1);
      // patro ls: the names it may reach, and no others.
      const patro::BrokerInfo info = patro::broker_info(front, o);
      REQUIRE(info.names.size() == 1);
      CHECK(info.names[0].name == "jobs");
    }

    {  // the CLI: a read-only key and a key limited to jobs*
      auto run = [&](const patro::CurveKeyPair& keys, std::vector<std::string> args) {
        const std::string key_file = dir.file("cli.key");
        patro::write_key_file(key_file, keys);
        std::vector<std::string> argv{
            "--broker",    front,    "--broker-key", b.keys.public_key,
            "--curve-key", key_file, "--route",      direct ? "direct" : "broker"};
        argv.insert(argv.end(), args.begin(), args.end());
        return cli(dir, argv);
      };
      auto [ok, got] = run(ro, {"get", "kv", "colour"});
      CHECK(ok == 0);
      CHECK(contains(got, "green"));
      auto [set, set_out] = run(ro, {"set", "kv", "colour", "red"});
      INFO(set_out);
      CHECK(set != 0);
      CHECK(contains(set_out, "not_authorized"));
      CHECK(contains(set_out, "set on 'kv'"));
      auto [bump, bump_out] = run(ro, {"call", "gauge", "bump"});
      CHECK(bump != 0);
      CHECK(contains(bump_out, "not_authorized"));
      CHECK(contains(bump_out, "bump"));
      auto [peek, peek_out] = run(ro, {"call", "gauge", "peek"});
      CHECK(peek == 0);
      auto [push, push_out] = run(ro, {"push", "list", "9"});
      CHECK(push != 0);
      CHECK(contains(push_out, "push on 'list'"));
      auto [kv_status, kv_out] = run(jobs_only, {"get", "kv", "colour"});
      CHECK(kv_status != 0);
      CHECK(contains(kv_out, "not_authorized"));
      CHECK(contains(kv_out, "'kv'"));
      auto [jobs_status, jobs_out] = run(jobs_only, {"get", "jobs", "queue", "0"});
      CHECK(jobs_status == 0);
      CHECK(contains(jobs_out, "job-1"));
    }

    {  // names and read-only together
      const auto o = options(kv_reader);
      patro::Proxy p = warm(patro::get_proxy(front, "kv", o));
      CHECK(p["colour"].get() == "green");
      check_refused(error_of([&] { p["colour"] = "blue"; }), "set", "'kv'");
      check_refused(error_of([&] { (void)patro::get_proxy(front, "jobs", o); }), "lookup",
                    "'jobs'");
    }
  }

  // Counted: the broker's lookups, and the servers' refusals as their heartbeats report them.
  patro::BrokerStats stats;
  for (int i = 0; i < 100; ++i) {
    stats = b.broker->stats();
    if (stats.refused_by_kind.count("not_authorized_at_servers")) break;
    std::this_thread::sleep_for(50ms);
  }
  CHECK(stats.refused_by_kind["not_authorized"] > 0);
  CHECK(stats.refused_by_kind["not_authorized_at_servers"] > 0);
}

TEST_CASE("a reload changes a live key's rights; a bad reload keeps the old ones") {
  if (!patro::curve_available()) return;
  TempDir dir;
  const patro::CurveKeyPair k = patro::curve_keypair();
  RightsBroker b(dir, k.public_key + "\n");
  patro::ServerOptions so;
  so.broker = b.broker->backend_endpoint();
  so.threads = 1;
  so.curve.broker_key = b.keys.public_key;
  so.curve.keys = patro::curve_keypair();
  so.direct = "tcp://127.0.0.1:*";
  patro::Hash kv{{"n", 1}};
  patro::Config served = patro::patronize(so, patro::named("kv", kv));
  struct Stop {
    patro::Config& c;
    ~Stop() { c.stop(); }
  } stop{served};
  for (const patro::Route route : {patro::Route::broker, patro::Route::direct}) {
    CAPTURE(static_cast<int>(route));
    write_file(b.allow_file, k.public_key + "\n");
    b.broker->reload();
    patro::ClientOptions co;
    co.route = route;
    co.connect_timeout = 10s;
    co.call_timeout = 10s;
    co.curve.broker_key = b.keys.public_key;
    co.curve.keys = k;
    patro::Proxy p = warm(patro::get_proxy(b.broker->frontend_endpoint(), "kv", co));
    p["n"] = 2;
    write_file(b.allow_file, k.public_key + " read-only\n");
    b.broker->reload();
    std::optional<patro::Errc> refused;
    for (int i = 0; i < 200 && !refused; ++i) {
      try {
        p["n"] = 3;
        std::this_thread::sleep_for(25ms);
      } catch (const patro::Error& e) {
        refused = e.code();
      }
    }
    CHECK(refused == patro::Errc::not_authorized);
    CHECK(p["n"].get() != 0);
    write_file(b.allow_file, k.public_key + " read-only sometimes\n");
    CHECK_THROWS_AS(b.broker->reload(), patro::Error);
    check_refused(error_of([&] { p["n"] = 4; }), "set", "'kv'");
  }
}
