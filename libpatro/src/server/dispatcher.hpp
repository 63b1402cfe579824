// The one way in: every request a lane takes — from its socket, inside a oneway batch, and (later)
// from a direct connection — passes dispatch(). The op table (wire/op_table.hpp) says which handler
// runs it: the lock handler here, against the lock table, or the executor's element, container and
// served-object handlers. A barrier around each request turns whatever it throws (served code's
// exceptions, our own errors, bad_alloc) into an error reply, so nothing a client sends ends the
// lane. One Dispatcher per lane; only the lane's thread calls it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "executor.hpp"
#include "lock_table.hpp"
#include "outbox.hpp"

namespace patro::detail {

/// What became of a request.
enum class Dispatched {
  reply,     // its reply is ready: send it now
  parked,    // a lock wait: the lock table owes its reply (a grant, or its deadline)
  deferred,  // a patro::Deferred answers later, through the lane's outbox
};

class Dispatcher {
 public:
  /// seen (may be empty) learns the client of every request, for ServerOptions::idle_timeout.
  Dispatcher(ObjectTable& objects, const ServerOptions& options, LockTable& locks,
             std::weak_ptr<ReplySink> outbox, std::function<void(uint64_t)> seen);

  /// Runs one verified request. reply: the body to send now. owed: replies that the request's
  /// lock operation owes other parked callers, to send after it. Never throws for a request.
  Dispatched dispatch(const wire::Request& req, std::string_view routing, zmq::message_t& reply,
                      std::vector<DeferredReply>& owed);

  /// Runs a batch of oneway calls in order; the body of its acknowledgement ([calls run, calls
  /// failed, the first failure's text]). Never throws for a request.
  zmq::message_t dispatch_batch(uint64_t request_id, const zmq::message_t& body,
                                AlignedScratch& scratch);

  /// The lane's reply encoder.
  Executor& encoder() noexcept { return executor_; }

 private:
  Dispatched run_lock(const wire::Request& req, std::string_view routing, zmq::message_t& reply,
                      std::vector<DeferredReply>& owed);

  const ServerOptions& options_;
  LockTable& locks_;
  Executor executor_;
  std::function<void(uint64_t)> seen_;
};

}  // namespace patro::detail
