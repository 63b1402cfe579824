// Perl Patro's server options on patro::ServerOptions: keep_alive, idle_timeout, fincheck_freq;
// and PATRO_THREADS as the default worker-thread count. Waits are bounded; nothing here measures
// speed: "still serving" is checked only well inside the window, "stopped" with a generous bound.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <future>
#include <thread>

#include <patro/patro.hpp>

using namespace std::chrono_literals;

namespace {

std::string unique_name(const char* what) {
  return std::string("opts-") + what + "-" + std::to_string(getpid());
}

bool segments_exist(const std::string& name) {
  return std::filesystem::exists("/dev/shm/patro-" + name + "-locks");
}

// Waits up to bound for the server to stop on its own; true if it did (and wait() returned).
bool stops_within(const patro::Config& cfg, std::chrono::milliseconds bound) {
  auto waited = std::async(std::launch::async, [&] { cfg.wait(); });
  const bool stopped = waited.wait_for(bound) == std::future_status::ready;
  if (!stopped) cfg.stop();  // so the async's wait() returns
  waited.get();
  return stopped;
}

patro::ClientOptions fast() {
  patro::ClientOptions o;
  o.call_timeout = 10s;
  o.heartbeat.interval = 100ms;
  return o;
}

}  // namespace

TEST_CASE("default options: a server never shuts itself down") {
  patro::ServerOptions so;
  CHECK(so.idle_timeout == 0ms);
  CHECK(so.keep_alive == 0ms);
  so.fincheck_freq = 10ms;  // checks often, but with no idle_timeout there is nothing to check
  auto cfg = patro::patronize(so, patro::Hash{});
  std::this_thread::sleep_for(500ms);
  CHECK(cfg.serving());
  cfg.stop();
  CHECK(!cfg.serving());
}

TEST_CASE("idle_timeout: a server that no client uses stops, wait() returns, segments go") {
  patro::ServerOptions so;
  so.name = unique_name("idle");
  so.idle_timeout = 300ms;
  so.fincheck_freq = 50ms;
  auto cfg = patro::patronize(so, patro::Hash{});
  CHECK(segments_exist(so.name));
  CHECK(stops_within(cfg, 20s));
  CHECK(!cfg.serving());
  CHECK(!segments_exist(so.name));
  cfg.stop();  // idempotent after a self shutdown
}

TEST_CASE("keep_alive: the server stays up at least that long, even with no client") {
  patro::ServerOptions so;
  so.idle_timeout = 50ms;
  so.keep_alive = 3s;
  so.fincheck_freq = 20ms;
  auto cfg = patro::patronize(so, patro::Hash{});
  std::this_thread::sleep_for(1s);  // far past idle_timeout, well inside keep_alive
  CHECK(cfg.serving());
  CHECK(stops_within(cfg, 30s));
}

TEST_CASE("idle_timeout counts from the last client's departure") {
  patro::ServerOptions so;
  so.idle_timeout = 400ms;
  so.fincheck_freq = 20ms;
  so.heartbeat.interval = 100ms;
  auto cfg = patro::patronize(so, patro::Hash{{"k", 1}});
  {
    auto p = patro::get_proxies(cfg, fast()).at(0);
    CHECK(p["k"].get() == 1);  // the server knows this client from its request
    // While the client lives (and heartbeats), the server stays, long past idle_timeout.
    for (int i = 0; i < 10; ++i) {
      std::this_thread::sleep_for(150ms);
      REQUIRE(cfg.serving());
    }
    CHECK(p["k"].get() == 1);
  }  // the connection closes: CLIENT_GONE
  CHECK(stops_within(cfg, 20s));
}

TEST_CASE("the server stays while any client remains") {
  patro::ServerOptions so;
  so.idle_timeout = 200ms;
  so.fincheck_freq = 20ms;
  so.heartbeat.interval = 100ms;
  auto cfg = patro::patronize(so, patro::Hash{{"k", 1}});
  // A second client keeps using the server while the first goes: the server must not stop.
  auto stay = patro::get_proxies(cfg, fast()).at(0);
  {
    auto p = patro::get_proxies(cfg, fast()).at(0);
    CHECK(p["k"].get() == 1);
  }
  CHECK(stay["k"].get() == 1);
  std::this_thread::sleep_for(800ms);
  CHECK(cfg.serving());
  CHECK(stay["k"].get() == 1);
  cfg.stop();
}

TEST_CASE("fincheck_freq: the check runs at that pace, so a slow check stops later") {
  patro::ServerOptions so;
  so.idle_timeout = 10ms;
  so.fincheck_freq = 3s;  // the first check comes after 3 s
  auto cfg = patro::patronize(so, patro::Hash{});
  std::this_thread::sleep_for(1s);
  CHECK(cfg.serving());
  CHECK(stops_within(cfg, 30s));
}

TEST_CASE("Config::stop while the server may be stopping itself is safe") {
  for (int i = 0; i < 5; ++i) {
    patro::ServerOptions so;
    so.idle_timeout = std::chrono::milliseconds(5 * i);
    so.fincheck_freq = 1ms;
    auto cfg = patro::patronize(so, patro::Hash{});
    std::this_thread::sleep_for(std::chrono::milliseconds(10 * i));
    cfg.stop();
    CHECK(!cfg.serving());
  }
}

TEST_CASE("server_secret: one over 256 bytes is refused with an error naming it") {
  patro::ServerOptions so;
  so.server_id = 0x7e57;
  so.server_secret = std::string(257, 's');
  try {
    auto cfg = patro::patronize(so, patro::Hash{});
    cfg.stop();
    FAIL("a 257-byte server_secret was accepted");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::invalid_argument);
    CHECK(std::string(e.what()).find("server_secret") != std::string::npos);
  }
  so.server_secret = std::string(256, 's');  // at the bound: served
  auto cfg = patro::patronize(so, patro::Hash{});
  CHECK(cfg.serving());
  cfg.stop();
}

TEST_CASE("PATRO_THREADS sets the default worker-thread count") {
  ::setenv("PATRO_THREADS", "3", 1);
  {
    auto cfg = patro::patronize(patro::named("x", patro::Hash{}));
    auto info = patro::broker_info(cfg.brokers().at(0), fast());
    REQUIRE(info.servers.size() == 1);
    CHECK(info.servers[0].lanes == 3);
    cfg.stop();
  }
  {
    patro::ServerOptions so;
    so.threads = 2;  // an explicit count wins
    auto cfg = patro::patronize(so, patro::Hash{});
    CHECK(patro::broker_info(cfg.brokers().at(0), fast()).servers.at(0).lanes == 2);
    cfg.stop();
  }
  ::setenv("PATRO_THREADS", "zero", 1);  // ignored, with a warning: the default 4
  {
    auto cfg = patro::patronize(patro::Hash{});
    CHECK(patro::broker_info(cfg.brokers().at(0), fast()).servers.at(0).lanes == 4);
    cfg.stop();
  }
  ::unsetenv("PATRO_THREADS");
}
