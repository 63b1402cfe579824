// patro::broker_info: a broker's registry, servers and counters, asked by a client; and the lock
// info operation (what patro locks prints).
#include <doctest/doctest.h>

#include <thread>

#include <patro/patro.hpp>

using namespace std::chrono_literals;
using patro::Errc;

namespace {
patro::ClientOptions fast() {
  patro::ClientOptions o;
  o.call_timeout = 10s;
  o.heartbeat.interval = 100ms;
  o.route = patro::Route::broker;  // the broker's counters count these calls
  return o;
}

const patro::BrokerServer* find_server(const patro::BrokerInfo& info, uint64_t id) {
  for (const auto& s : info.servers)
    if (s.id == id) return &s;
  return nullptr;
}
}  // namespace

TEST_CASE("broker_info lists names, servers with lanes and clients, and counters") {
  patro::ServerOptions so;
  so.threads = 3;
  patro::Hash h{{"a", 1}};
  patro::Array jobs;
  auto cfg =
      patro::patronize(so, patro::named("settings", h), patro::named("jobs", jobs), patro::Hash{});
  const std::string endpoint = cfg.brokers().at(0);
  const uint64_t server_id = cfg.objects().at(0).id.server;

  auto before = patro::broker_info(endpoint, fast());
  REQUIRE(before.names.size() == 2);
  CHECK(before.names[0].name == "jobs");  // sorted by name
  CHECK(before.names[0].reftype == "ARRAY");
  CHECK(before.names[0].id == cfg.objects().at(1).id);
  CHECK(before.names[1].name == "settings");
  CHECK(before.names[1].type_name == "HASH");
  REQUIRE(before.servers.size() == 1);
  CHECK(before.servers[0].id == server_id);
  CHECK(before.servers[0].lanes == 3);
  CHECK(before.servers[0].clients == 0);
  CHECK(before.stats.servers == 1);
  CHECK(before.stats.clients >= 1);  // the asking connection itself

  {
    auto p = patro::get_proxy(endpoint, "settings", fast());
    for (int i = 0; i < 5; ++i) CHECK(p["a"].get() == 1);
    auto during = patro::broker_info(endpoint, fast());
    CHECK(during.stats.routed >= before.stats.routed + 5);
    CHECK(during.stats.replies >= before.stats.replies + 5);
    const auto* s = find_server(during, server_id);
    REQUIRE(s != nullptr);
    CHECK(s->clients == 1);
  }
  // The client closed its connection: the broker forgets it (bounded wait).
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    const auto info = patro::broker_info(endpoint, fast());
    const auto* s = find_server(info, server_id);
    gone = s != nullptr && s->clients == 0;
    if (!gone) std::this_thread::sleep_for(50ms);
  }
  CHECK(gone);

  cfg.stop();
}

TEST_CASE("broker_info of a broker that does not answer is broker_unreachable") {
  patro::ClientOptions o = fast();
  o.connect_timeout = 300ms;
  try {
    (void)patro::broker_info("tcp://127.0.0.1:1", o);
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::broker_unreachable);
  }
}

TEST_CASE("a separate broker: servers come and go") {
  patro::BrokerOptions bo;
  bo.frontend = "tcp://127.0.0.1:*";
  bo.backend = "tcp://127.0.0.1:*";
  bo.heartbeat.interval = 100ms;
  patro::Broker broker(bo);
  std::thread t([&] { broker.run(); });
  {
    patro::ServerOptions so;
    so.broker = broker.backend_endpoint();
    so.threads = 2;
    auto c1 = patro::patronize(so, patro::named("one", patro::Hash{}));
    auto c2 = patro::patronize(so, patro::named("two", patro::Array{}));
    auto info = patro::broker_info(broker.frontend_endpoint(), fast());
    CHECK(info.servers.size() == 2);
    CHECK(info.names.size() == 2);
    c1.stop();
    bool dropped = false;
    for (int i = 0; i < 200 && !dropped; ++i) {
      info = patro::broker_info(broker.frontend_endpoint(), fast());
      dropped = info.servers.size() == 1 && info.names.size() == 1;
      if (!dropped) std::this_thread::sleep_for(50ms);
    }
    CHECK(dropped);
    CHECK(info.names.at(0).name == "two");
    c2.stop();
  }
  broker.stop();
  t.join();
}

TEST_CASE("lock_info: holder, depth, waiters and token of an object's lock") {
  auto cfg = patro::patronize(patro::named("res", patro::Hash{}));
  auto a = patro::get_proxies(cfg, fast()).at(0);
  auto b = patro::get_proxies(cfg, fast()).at(0);
  auto free_info = patro::lock_info(b);
  CHECK(free_info.holder == 0);
  CHECK(free_info.depth == 0);
  CHECK(free_info.waiters == 0);
  auto r = patro::lock(a);
  REQUIRE(r);
  patro::lock(a);
  auto held = patro::lock_info(b);
  CHECK(held.holder != 0);
  CHECK(held.depth == 2);
  CHECK(held.token >= r.token);
  // b waits; lock_info from a third connection sees it.
  std::thread waiter([&] { CHECK(patro::lock(b, 10s)); });
  auto c = patro::get_proxies(cfg, fast()).at(0);
  bool seen = false;
  for (int i = 0; i < 200 && !seen; ++i) {
    seen = patro::lock_info(c).waiters == 1;
    if (!seen) std::this_thread::sleep_for(20ms);
  }
  CHECK(seen);
  CHECK(patro::unlock(a, -1));
  waiter.join();
  auto after = patro::lock_info(c);
  CHECK(after.holder != held.holder);
  CHECK(after.depth == 1);
  CHECK(after.waiters == 0);
  CHECK(patro::unlock(b));
}
