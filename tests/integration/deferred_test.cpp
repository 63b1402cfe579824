// patro::Deferred: methods that reply later, from another thread, without holding a worker thread.
#include <doctest/doctest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include <patro/patro.hpp>

using namespace std::chrono_literals;

namespace {

// A mailbox: take() blocks its caller until put() supplies a value, with no thread waiting.
struct Mailbox {
  std::vector<patro::Deferred> takers;
  std::vector<patro::Value> items;
  std::atomic<uint64_t> last_client{0};
};

void register_mailbox() {
  patro::Class<Mailbox>("Mailbox")
      .method("take",
              [](Mailbox& m, patro::Deferred d) {
                m.last_client = d.client_id();
                if (!m.items.empty()) {
                  d.resolve(m.items.front());  // at once: an ordinary reply
                  m.items.erase(m.items.begin());
                } else {
                  m.takers.push_back(d);  // later
                }
              })
      .method("put",
              [](Mailbox& m, patro::Value v) {
                if (m.takers.empty()) {
                  m.items.push_back(v);
                  return false;
                }
                m.takers.front().resolve(v);
                m.takers.erase(m.takers.begin());
                return true;
              })
      .method("waiting", [](Mailbox& m) { return static_cast<int64_t>(m.takers.size()); })
      .method("fail_all",
              [](Mailbox& m) {
                for (auto& d : m.takers)
                  d.reject(patro::Error(patro::Errc::disconnected, "closed"));
                m.takers.clear();
              })
      .method("pair", [](Mailbox&, patro::Deferred d) {
        // A list, resolved from another thread after the call returned.
        std::thread([d] {
          std::this_thread::sleep_for(20ms);
          d.resolve(patro::List{1, 2, 3});
        }).detach();
      });
}

}  // namespace

TEST_CASE("a method that takes a Deferred replies now or later, without holding a thread") {
  register_mailbox();
  patro::ServerOptions so;
  so.threads = 1;  // one worker: a blocked take must not hold it
  auto box = std::make_shared<Mailbox>();
  auto cfg = patro::patronize(so, box);
  auto taker = patro::get_proxies(cfg).at(0);
  auto putter = patro::get_proxies(cfg).at(0);

  CHECK(putter.call("put", "early") == false);
  CHECK(taker.call("take") == "early");  // resolved during the call

  auto waiting = std::async(std::launch::async, [&] { return taker.call("take"); });
  // The take is parked; the only worker thread still serves the other connection.
  for (int i = 0; i < 1000 && putter.call("waiting") == 0; ++i) std::this_thread::sleep_for(5ms);
  REQUIRE(putter.call("waiting") == 1);
  CHECK(putter.call("put", "x") == true);
  CHECK(waiting.get() == "x");
  CHECK(box->last_client != 0);

  CHECK(taker.call_list("pair") == std::vector<patro::Value>{1, 2, 3});
  CHECK(taker.call("pair") == 3);  // scalar context: the last item

  auto rejected = std::async(std::launch::async, [&] { return taker.call("take"); });
  for (int i = 0; i < 1000 && putter.call("waiting") == 0; ++i) std::this_thread::sleep_for(5ms);
  REQUIRE(putter.call("waiting") == 1);
  putter.call("fail_all");  // answers every parked take with an error
  try {
    (void)rejected.get();
    FAIL("a rejected take returned");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::disconnected);
  }
}

TEST_CASE("on_client_gone reports a closed connection") {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> gone;
  patro::ServerOptions so;
  so.on_client_gone = [&](uint64_t id) {
    std::lock_guard<std::mutex> lock(mu);
    gone.push_back(id);
    cv.notify_all();
  };
  register_mailbox();
  auto box = std::make_shared<Mailbox>();
  auto cfg = patro::patronize(so, box);
  {
    auto p = patro::get_proxies(cfg).at(0);
    p.call("put", 1);
    (void)p.call("take");
  }  // the connection closes
  std::unique_lock<std::mutex> lock(mu);
  CHECK(cv.wait_for(lock, 10s, [&] { return !gone.empty(); }));
  CHECK(gone.front() == box->last_client);
}
