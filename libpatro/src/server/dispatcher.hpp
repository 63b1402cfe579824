// The one way in: every request a lane takes — from a broker or its direct ROUTER, alone or as a
// call inside a oneway batch — passes dispatch_body(), through the same stages in order:
//   1. the reply cache: a request (a batch: as one request, under its own id) seen before is
//      answered from it, or, while its first copy still runs, answered once that finishes
//      (reply_cache.hpp) — never run twice;
//   2. the rights of the client's key (client_rights.hpp), where its broker said they limit it: a
//      call they do not allow is answered not_authorized (counted) and not run;
//   3. the deadline: a call whose budget ran out before a lane took it is not run (an error reply
//      nobody waits for, or a failed call in the batch's acknowledgement; counted), and a parked
//      one is bounded by what is left of it;
//   4. the handler the executor's table names for its operation (executor.hpp): against the
//      objects, or the lock table for a lock operation (which may park its caller).
// A barrier around each call turns whatever it throws (served code's exceptions, our own errors,
// bad_alloc) into an error reply (a batch's call: its failure's text), so nothing a client sends
// ends the lane. With the wire trace on (PATRO_DEBUG=1: trace.hpp), every request it takes and
// what became of it are logged here, one line each. One Dispatcher per lane; only the lane's
// thread calls it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "client_rights.hpp"
#include "executor.hpp"
#include "lock_table.hpp"
#include "log.hpp"
#include "outbox.hpp"
#include "reply_cache.hpp"
#include "wire.hpp"

namespace patro::detail {

/// A request as a lane took it: where its reply goes, and how long it waited before (its age: the
/// time since the broker forwarded it).
struct Taken {
  std::string_view routing;
  std::chrono::nanoseconds age{0};
  Rights rights;  // its client's key's, where they limit it (ClientRights); null: everything
};

class Dispatcher {
 public:
  /// seen (may be empty) learns the client of every request, for ServerOptions::idle_timeout.
  /// rights: the server's rights per client key, against which a Taken's rights are checked.
  Dispatcher(ObjectTable& objects, const ServerOptions& options, LockTable& locks,
             ReplyCache& cache, std::weak_ptr<ReplySink> outbox, std::function<void(uint64_t)> seen,
             const ClientRights* rights = nullptr);

  /// Runs a request's body as a lane took it: a request, or a batch of oneway calls (run in
  /// order; its reply is their acknowledgement: [calls run, calls failed, the first failure's
  /// text]); a body that fails verification gets an error reply. reply: the body to send now;
  /// reroute: where to send it when a copy of the request came by another route while it ran.
  /// owed: replies that the request's lock operation owes other parked callers, to send after it.
  /// Never throws for a request.
  Dispatched dispatch_body(uint64_t request_id, const zmq::message_t& body, const Taken& taken,
                           AlignedScratch& scratch, zmq::message_t& reply,
                           std::optional<std::string>& reroute, std::vector<DeferredReply>& owed);

  /// Runs one verified request: dispatch_body() past the verifier.
  Dispatched dispatch(const wire::Request& req, const Taken& taken, zmq::message_t& reply,
                      std::optional<std::string>& reroute, std::vector<DeferredReply>& owed);

  /// The lane's reply encoder.
  Executor& encoder() noexcept { return executor_; }

  /// Runs a pipelined request the reply cache released (the request it was made on finished or
  /// was cancelled): stage 2 and 3 on that request's result, or the error that reaches it.
  /// Like dispatch(): reply to send now (to reroute if set, else d.routing), or later.
  Dispatched dispatch_dependent(ReplyCache::Dependent& d, AlignedScratch& scratch,
                                zmq::message_t& reply, std::optional<std::string>& reroute,
                                std::vector<DeferredReply>& owed);
  /// The pipelined requests released since the last call (by requests this dispatcher finished),
  /// in order: the lane runs them with dispatch_dependent().
  std::vector<ReplyCache::Dependent> take_released() { return std::exchange(released_, {}); }

 private:
  /// dispatch(), stage by stage.
  Dispatched dispatch_request(const wire::Request& req, const Taken& taken, zmq::message_t& reply,
                              std::optional<std::string>& reroute,
                              std::vector<DeferredReply>& owed);
  /// dispatch() with the request and its outcome logged (the wire trace).
  Dispatched dispatch_traced(const wire::Request& req, const Taken& taken, zmq::message_t& reply,
                             std::optional<std::string>& reroute, std::vector<DeferredReply>& owed);
  /// A verified batch of oneway calls, stage 1 for the batch and stages 2 and 3 for each call.
  Dispatched dispatch_batch(uint64_t request_id, const wire::Batch& batch, const Taken& taken,
                            zmq::message_t& reply, std::optional<std::string>& reroute);
  /// Stage 1: how to answer a request seen before (reply: the cached answer), or nothing (run it;
  /// it is now recorded as running).
  std::optional<Dispatched> seen_before(uint64_t client, uint64_t request_id,
                                        std::string_view routing,
                                        std::chrono::steady_clock::time_point now,
                                        zmq::message_t& reply);
  /// Stages 2 and 3 for one call, a request or a call of a batch (oneway: it has no reply of its
  /// own; failure is its error's text if it failed). reply and owed: a request's.
  Dispatched run(const wire::Request& req, const Taken& taken,
                 std::chrono::steady_clock::time_point now, bool oneway, zmq::message_t& reply,
                 std::optional<std::string>& failure, std::vector<DeferredReply>& owed);
  /// A pipelined request (pipeline_of set), past stage 1: run now on the result of the request
  /// it names if that is answered, or parked in the reply cache until it is (deferred).
  Dispatched pipelined(const wire::Request& req, const Taken& taken,
                       std::chrono::steady_clock::time_point now, zmq::message_t& reply,
                       std::vector<DeferredReply>& owed);
  /// Stages 2 and 3 of a pipelined request on on_reply, the reply of the request it was made on.
  Dispatched run_on(const wire::Request& req, const Taken& taken,
                    std::chrono::steady_clock::time_point now, const zmq::message_t& on_reply,
                    zmq::message_t& reply, std::vector<DeferredReply>& owed);
  /// The object a pipelined request runs on: the reference on_reply carries; else nothing, with
  /// reply the error that reaches the request (the first request's own, or a type mismatch).
  std::optional<ObjectId> pipeline_target(const wire::Request& req, const zmq::message_t& on_reply,
                                          zmq::message_t& reply);
  /// The request's deadline on our clock: its budget (none: default_call_deadline; at most
  /// max_call_deadline) from when the broker forwarded it.
  std::chrono::steady_clock::time_point deadline_of(uint32_t timeout_ms,
                                                    std::chrono::steady_clock::time_point now,
                                                    std::chrono::nanoseconds age) const;

  const ServerOptions& options_;
  const uint64_t server_id_;
  ReplyCache& cache_;
  const ClientRights* rights_;
  const zmq::message_t* body_ = nullptr;  // the body of the request dispatch_body() runs now
  std::vector<ReplyCache::Dependent> released_;
  AlignedScratch on_scratch_;  // for the reply a pipelined request reads its target from
  Executor executor_;
  std::function<void(uint64_t)> seen_;
  LogLimiter refusals_;  // not_authorized lines: a few per 10 s
  // The wire trace only: the last request was a copy answered from the reply cache.
  bool answered_copy_ = false;
};

}  // namespace patro::detail
