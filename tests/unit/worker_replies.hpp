// patro::Deferred replies for the unit tests of patro-worker's objects, with no server: each
// reply lands in a Replies sink, and a test waits for it (an event, bounded in time).
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>

#include <patro/patro.hpp>

#include "deferred.hpp"

namespace patro::test {

class Replies : public detail::ReplySink, public std::enable_shared_from_this<Replies> {
 public:
  /// A reply to be answered later; id names it for wait(). client: the caller's connection.
  Deferred make(uint64_t id, uint64_t client = 1) {
    auto s = std::make_shared<detail::DeferredState>();
    {
      detail::MutexLock lock(s->mu);
      s->in_call = false;  // answered through the sink, as after the call returned
    }
    s->sink = weak_from_this();
    s->request_id = id;
    s->client_id = client;
    return Deferred(std::move(s));
  }
  /// The answer to id once it comes (up to 10 s); an error reply is thrown as Error.
  Value wait(uint64_t id) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool came =
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return answers_.count(id) > 0; });
    REQUIRE_MESSAGE(came, "no reply to request " << id);
    auto it = answers_.find(id);
    if (it->second.error) throw Error(it->second.code, it->second.text);
    return it->second.value;
  }
  bool answered(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return answers_.count(id) > 0;
  }

  void send_results(const std::string&, uint64_t, uint64_t request_id,
                    const ValueArray& results) override {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[request_id] = Answer{results.empty() ? Value() : results.front(), false, {}, {}};
    cv_.notify_all();
  }
  void send_error(const std::string&, uint64_t, uint64_t request_id, const Error& e) override {
    std::lock_guard<std::mutex> lock(mu_);
    answers_[request_id] = Answer{Value(), true, e.code(), e.what()};
    cv_.notify_all();
  }

 private:
  struct Answer {
    Value value;
    bool error = false;
    Errc code{};
    std::string text;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Answer> answers_;
};

}  // namespace patro::test
