// A running server: worker lanes, each a thread with its own DEALER socket to each broker
// (ServerOptions::brokers: it registers at every one and answers requests from any), and an
// embedded broker when none was configured. The broker sends all requests of one client to one
// lane, so they run in the order the client sent them with no hand-off between threads (as
// Majordomo workers do); every lane shares the object table.
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "client_rights.hpp"
#include "deferred.hpp"
#include "direct_gate.hpp"
#include "ids.hpp"
#include "lock_table.hpp"
#include "log_forward.hpp"
#include "mutex.hpp"
#include "object_table.hpp"
#include "outbox.hpp"
#include "patro/broker.hpp"
#include "patro/server.hpp"
#include "remote_refs.hpp"
#include "reply_cache.hpp"
#include "socket.hpp"
#include "wire.hpp"

namespace patro::detail {

class Server final : public ServingHandle, public std::enable_shared_from_this<Server> {
 public:
  Server(const ServerOptions& options, std::vector<Named> objects);
  ~Server() override;
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Starts the broker (if embedded) and the lanes, and waits until every lane is registered.
  /// Throws Error(broker_unreachable) if the broker does not accept the registration in time.
  Config start();
  void stop() override PATRO_EXCLUDES(mu_);
  void wait() override PATRO_EXCLUDES(mu_);
  bool running() const noexcept override { return running_.load(); }
  std::string server_endpoint() const override { return broker_endpoint_; }
  /// Serves node (a client's callback object) and returns a reference to it as its clients name
  /// it. It is served until each pass of it (count_pass) is released and the lease ran out, or
  /// until the server stops.
  Value serve_callback(const std::shared_ptr<Node>& node);
  /// A reference to id about to go into a request (a pass): counted, and the key its receiver
  /// releases it with returned; 0 for an object this server does not serve.
  uint64_t count_pass(const ObjectId& id);
  /// The objects the server serves now.
  size_t objects_served() const { return objects_.size(); }
  uint64_t server_id() const noexcept { return objects_.server_id(); }
  /// Whether the calling thread is one of the lanes (set in start(); call while running).
  bool on_lane_thread() const;

 private:
  friend class Lane;  // a lane's thread: lane.hpp
  struct LaneThread;
  /// Resolves ServerOptions::direct against the broker endpoint (start(), before the lanes).
  void resolve_direct();
  /// Binds lane `lane`'s direct ROUTER; returns the endpoint it advertises (empty: none).
  std::string bind_direct(zmq::socket_t& router, unsigned lane);
  /// refusal: why the broker did not bind some of the names (another server owns them); empty if
  /// it bound them all.
  void lane_registered(size_t broker, const std::string& client_endpoint,
                       const std::string& refusal) PATRO_EXCLUDES(mu_);
  void timer_main();
  /// Tells the broker every heartbeat interval that this process lives (SERVER_ALIVE), on a socket
  /// of its own: a lane in a long call cannot heartbeat, and must not be taken for dead.
  void alive_main() PATRO_EXCLUDES(mu_);
  /// ServerOptions::idle_timeout: every fincheck_freq, stops the server once it has had no
  /// client for idle_timeout and has run for keep_alive.
  void fincheck_main() PATRO_EXCLUDES(mu_);
  // The server's own watch over its clients when a broker goes away: a client attached through
  // it that died with it is never reported gone by any broker, so each client attached through
  // it must come back — a request, or a LOCATE through any broker (CLIENT_AT), as libpatro sends
  // after moving or when its broker restarted — within twice the broker's window once the server
  // is registered somewhere; lane 0 releases those that do not.
  /// A lane saw broker `broker` go (silent, or restarted): the first marks its clients.
  void broker_went_away(size_t broker, std::chrono::steady_clock::time_point check_at)
      PATRO_EXCLUDES(lost_mu_);
  /// A lane registered (again) with a broker: no check before not_before.
  void broker_came_back(std::chrono::steady_clock::time_point not_before) PATRO_EXCLUDES(lost_mu_);
  std::chrono::steady_clock::time_point next_lost_check() PATRO_EXCLUDES(lost_mu_);
  /// The brokers whose clients are due for the check (none while no broker has us: any_live).
  std::vector<size_t> brokers_to_check(std::chrono::steady_clock::time_point now, bool any_live)
      PATRO_EXCLUDES(lost_mu_);
  void client_seen(uint64_t client_id) PATRO_EXCLUDES(mu_);
  void client_left(uint64_t client_id) PATRO_EXCLUDES(mu_);
  void stop_server(bool from_fincheck) PATRO_EXCLUDES(mu_);

  ServerOptions options_;
  zmq::context_t ctx_{1};
  ObjectTable objects_;
  std::vector<Named> served_;
  std::vector<ObjectEntry> entries_;
  // Rights per client key, as brokers vouch for them (made in the constructor: it knows the
  // names of the served objects).
  std::unique_ptr<ClientRights> rights_;
  std::unique_ptr<Broker> broker_;
  std::thread broker_thread_;
  std::string broker_endpoint_;                // the first broker's server endpoint
  std::vector<std::string> broker_endpoints_;  // every broker's (ServerOptions::brokers), in order
  CurveOptions curve_;  // resolved in start(): with the key pair the lanes use
  // Under CURVE with a direct path: who may connect to the lanes' ROUTERs (destroyed after them).
  std::unique_ptr<DirectGate> gate_;
  // Until when a lane asks again for names another live server holds (set before lanes start).
  std::chrono::steady_clock::time_point register_until_;
  std::vector<std::unique_ptr<LaneThread>> lanes_;
  std::unique_ptr<LockTable> locks_;
  ReplyCache replies_;
  std::vector<Outbox*> outboxes_;  // the lanes', by index (for replies by another lane's ROUTER)
  // Log forwarding: the clients subscribed to our log lines (made in start(), before the lanes;
  // gone after them, before their wake fds close).
  std::unique_ptr<LogForwarder> logs_;
  // The direct path: where lanes bind their ROUTERs (empty: off), and what they advertise.
  std::string direct_bind_;
  std::string direct_advertise_;
  std::atomic<uint64_t> direct_requests_{0};    // requests that came to a lane's ROUTER
  std::atomic<uint64_t> brokered_requests_{0};  // requests the broker forwarded
  const uint64_t incarnation_ = random_id();    // this server, as its broker tells it from another
  std::thread timer_thread_;
  std::thread alive_thread_;
  std::atomic<int64_t> alive_ms_{0};  // the faster of our heartbeat and the broker's
  std::atomic<bool> running_{false};
  std::thread fincheck_thread_;
  std::unique_ptr<RemoteRefs> remote_refs_;  // made in start(), before the lanes

  struct LostBroker {
    bool lost = false;
    std::chrono::steady_clock::time_point check_at = std::chrono::steady_clock::time_point::max();
  };
  Mutex lost_mu_;
  std::vector<LostBroker> lost_ PATRO_GUARDED_BY(lost_mu_);  // by broker index
  // How many of lost_ are lost: lane 0 reads it each turn and takes lost_mu_ only when one is.
  std::atomic<int> lost_count_{0};

  Mutex mu_;
  CondVar cv_;
  // Per broker: lanes registered there, and its client endpoint (from its Registered).
  std::vector<unsigned> registered_ PATRO_GUARDED_BY(mu_);
  std::vector<std::string> client_endpoints_ PATRO_GUARDED_BY(mu_);
  std::string register_error_ PATRO_GUARDED_BY(mu_);
  bool stopped_ PATRO_GUARDED_BY(mu_) = false;
  // Clients known from their requests, until CLIENT_GONE; kept only with an idle_timeout.
  std::unordered_set<uint64_t> clients_ PATRO_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point started_ PATRO_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point idle_since_ PATRO_GUARDED_BY(mu_);
};

}  // namespace patro::detail
