// A running server: worker lanes, each a thread with its own DEALER socket to the broker, and an
// embedded broker when none was configured. The broker sends all requests of one client to one
// lane, so they run in the order the client sent them with no hand-off between threads (as
// Majordomo workers do); every lane shares the object table.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "lock_table.hpp"
#include "mutex.hpp"
#include "object_table.hpp"
#include "patro/broker.hpp"
#include "patro/server.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

class Executor;

/// A Reply body with these results.
zmq::message_t sync_reply(uint64_t request_id, const ValueArray& results);

class Server : public std::enable_shared_from_this<Server> {
 public:
  Server(const ServerOptions& options, std::vector<Named> objects);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Starts the broker (if embedded) and the lanes, and waits until every lane is registered.
  /// Throws Error(broker_unreachable) if the broker does not accept the registration in time.
  Config start();
  void stop() PATRO_EXCLUDES(mu_);
  void wait() PATRO_EXCLUDES(mu_);
  bool running() const noexcept { return running_.load(); }
  std::string server_endpoint() const { return broker_endpoint_; }

 private:
  struct Lane;
  void lane_main(Lane& lane);
  void lane_registered(const std::string& client_endpoint) PATRO_EXCLUDES(mu_);
  /// Runs a lock operation; its reply and the replies it owes parked callers go out on sock.
  void run_sync(const wire::Request& req, const zmq::message_t& routing, Executor& executor,
                zmq::socket_t& sock);
  /// Runs a batch of oneway calls in order; the body of its acknowledgement.
  zmq::message_t run_batch(uint64_t request_id, const zmq::message_t& body, Executor& executor,
                           AlignedScratch& scratch);
  void send_owed(std::vector<DeferredReply>& owed, zmq::socket_t& sock);
  void timer_main();

  ServerOptions options_;
  zmq::context_t ctx_{1};
  ObjectTable objects_;
  std::vector<Named> served_;
  std::vector<ObjectEntry> entries_;
  std::unique_ptr<Broker> broker_;
  std::thread broker_thread_;
  std::string broker_endpoint_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::unique_ptr<LockTable> locks_;
  std::thread timer_thread_;
  std::atomic<bool> running_{false};

  Mutex mu_;
  CondVar cv_;
  unsigned registered_ PATRO_GUARDED_BY(mu_) = 0;
  std::string client_endpoint_ PATRO_GUARDED_BY(mu_);
  bool stopped_ PATRO_GUARDED_BY(mu_) = false;
};

}  // namespace patro::detail
