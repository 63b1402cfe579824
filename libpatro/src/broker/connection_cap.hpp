// The broker's connection cap (BrokerOptions::max_connections): the connections accepted on its
// two ports, counted from their socket monitors in a thread of its own, so that the routing
// loop polls only the sockets that carry messages. One accepted past the cap is shut down at
// once: libzmq sees it end and closes it, so the peer gets a closed connection, never a
// descriptor the broker cannot spare.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <zmq.hpp>

#include "log.hpp"

namespace patro::detail {

class ConnectionCap {
 public:
  /// Watches front (the client port) and back (the server port). Call before they bind, so that
  /// every connection is counted; start() once they are bound.
  ConnectionCap(zmq::context_t& ctx, zmq::socket_t& front, zmq::socket_t& back, size_t max);
  /// Stops the thread; before the watched sockets close.
  ~ConnectionCap();
  ConnectionCap(const ConnectionCap&) = delete;
  ConnectionCap& operator=(const ConnectionCap&) = delete;

  /// Starts counting in its thread. The ports the sockets bound (-1: not TCP) tell a descriptor
  /// that libzmq accepted from one it reused for something else by the time the event is read.
  void start(int front_port, int back_port);

  uint64_t open() const { return open_.load(std::memory_order_relaxed); }
  size_t max() const { return max_; }
  /// Connections shut down for being past the cap.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  void main();
  // [event (u16), value (u32)][endpoint]: a connection accepted (value: its descriptor) or gone.
  // limit: the most connections open, both ports together, when this one is accepted.
  void on_event(const zmq::message_t& event, int port, size_t limit, const char* which);

  zmq::socket_t front_events_, back_events_;  // the monitors' PAIRs: the thread's alone
  const size_t max_;
  const size_t server_reserve_;  // of max_, for the server port alone
  zmq::socket_t* front_watched_;
  zmq::socket_t* back_watched_;
  int front_port_ = -1, back_port_ = -1;
  int stop_fd_ = -1;  // eventfd
  std::atomic<uint64_t> open_{0};
  std::atomic<uint64_t> refused_{0};
  LogLimiter refusals_, accept_failures_;
  std::thread thread_;
};

}  // namespace patro::detail
