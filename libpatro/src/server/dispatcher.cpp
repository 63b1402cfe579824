#include "dispatcher.hpp"

#include "log.hpp"
#include "routing.hpp"
#include "trace.hpp"

namespace patro::detail {

using Clock = std::chrono::steady_clock;

namespace {

std::optional<int64_t> timeout_arg(const ValueArray& args) {
  if (args.empty() || args[0].is_null()) return std::nullopt;
  return args[0].as<int64_t>();
}

// The bound on a wait with no timeout (ClientOptions::max_lock_wait), the last argument; a
// request without one is bounded by ServerOptions::max_lock_wait.
int64_t bound_arg(const ValueArray& args, size_t index, std::chrono::milliseconds fallback) {
  if (args.size() <= index || args[index].is_null()) return fallback.count();
  return std::max<int64_t>(args[index].as<int64_t>(), 0);
}

int64_t count_arg(const ValueArray& args) {
  return args.empty() ? 1 : args[0].as<int64_t>();
}

}  // namespace

Dispatcher::Dispatcher(ObjectTable& objects, const ServerOptions& options, LockTable& locks,
                       ReplyCache& cache, std::weak_ptr<ReplySink> outbox,
                       std::function<void(uint64_t)> seen)
    : options_(options),
      locks_(locks),
      cache_(cache),
      executor_(objects, options, &locks),
      seen_(std::move(seen)) {
  executor_.set_reply_sink(std::move(outbox));
}

Clock::time_point Dispatcher::deadline_of(uint32_t timeout_ms, Clock::time_point now,
                                          std::chrono::nanoseconds age) const {
  const std::chrono::milliseconds asked(timeout_ms);
  const auto budget = std::min(asked.count() > 0 ? asked : options_.default_call_deadline,
                               options_.max_call_deadline);
  return now + budget - age;
}

namespace {
std::string expired_text(std::chrono::nanoseconds age) {
  return "the request's deadline passed before a lane took it (it waited " +
         std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(age).count()) +
         " ms); it was not run";
}
}  // namespace

std::optional<Dispatched> Dispatcher::seen_before(uint64_t client, uint64_t request_id,
                                                  std::string_view routing, Clock::time_point now,
                                                  zmq::message_t& reply) {
  // A client with no id (a raw peer) is not deduplicated: its ids are not unique.
  if (client == 0) return std::nullopt;
  switch (cache_.begin(client, request_id, routing, now, &reply)) {
    case ReplyCache::Seen::answered:
      if (wire_trace()) answered_copy_ = true;
      return Dispatched::reply;
    case ReplyCache::Seen::running:
      return Dispatched::running;
    case ReplyCache::Seen::fresh:
      break;
  }
  return std::nullopt;
}

namespace {
const char* via(std::string_view routing) {
  return direct_lane(routing) ? "direct" : "broker";
}
}  // namespace

Dispatched Dispatcher::dispatch(const wire::Request& req, const Taken& taken, zmq::message_t& reply,
                                std::optional<std::string>& reroute,
                                std::vector<DeferredReply>& owed) {
  // The wire trace off: this one branch is all it costs.
  if (wire_trace()) [[unlikely]]
    return dispatch_traced(req, taken, reply, reroute, owed);
  return dispatch_request(req, taken, reply, reroute, owed);
}

Dispatched Dispatcher::dispatch_traced(const wire::Request& req, const Taken& taken,
                                       zmq::message_t& reply, std::optional<std::string>& reroute,
                                       std::vector<DeferredReply>& owed) {
  const std::string target = trace_target(req);
  PATRO_LOG(trace, "server") << "<- request #" << req.request_id() << ' ' << target << ' '
                             << trace_args(req) << " client=" << trace_id(req.client_id())
                             << " via=" << via(taken.routing);
  answered_copy_ = false;
  const auto start = Clock::now();
  const Dispatched d = dispatch_request(req, taken, reply, reroute, owed);
  const auto took = Clock::now() - start;
  std::string outcome;
  switch (d) {
    case Dispatched::reply:
      outcome = trace_outcome(reply, options_.limits, took);
      if (answered_copy_) outcome += " copy=answered";  // from the reply cache: not run again
      break;
    case Dispatched::parked:
      outcome = "parked " + trace_duration(took);
      break;
    case Dispatched::deferred:
      outcome = "deferred " + trace_duration(took);
      break;
    case Dispatched::running:
      outcome = "running " + trace_duration(took);
      break;
  }
  PATRO_LOG(trace, "server") << "-> reply #" << req.request_id() << ' ' << target << ' ' << outcome;
  return d;
}

Dispatched Dispatcher::dispatch_request(const wire::Request& req, const Taken& taken,
                                        zmq::message_t& reply, std::optional<std::string>& reroute,
                                        std::vector<DeferredReply>& owed) {
  const uint64_t client = req.client_id(), request_id = req.request_id();
  const auto now = Clock::now();
  // Stage 1.
  if (auto seen = seen_before(client, request_id, taken.routing, now, reply)) return *seen;
  // Stage 2.
  const auto deadline = deadline_of(req.timeout_ms(), now, taken.age);
  Dispatched d;
  if (deadline <= now) {
    cache_.count_expired();
    reply = error_reply(request_id, Errc::timeout, expired_text(taken.age));
    d = Dispatched::reply;
  } else {
    d = run(req, taken.routing, deadline, reply, owed);  // stage 3
  }
  if (d == Dispatched::reply && client != 0) reroute = cache_.finish(client, request_id, reply);
  return d;
}

Dispatched Dispatcher::run(const wire::Request& req, std::string_view routing,
                           Clock::time_point deadline, zmq::message_t& reply,
                           std::vector<DeferredReply>& owed) {
  try {
    if (seen_) seen_(req.client_id());
    if (op_info(req.op()).lock_path()) return run_lock(req, routing, deadline, reply, owed);
    reply = executor_.execute(req, routing, deadline);  // its own barrier
    return reply.size() == 0 ? Dispatched::deferred : Dispatched::reply;
  } catch (...) {
    reply = exception_reply(req.request_id());
    return Dispatched::reply;
  }
}

Dispatched Dispatcher::run_lock(const wire::Request& req, std::string_view routing,
                                Clock::time_point deadline, zmq::message_t& reply,
                                std::vector<DeferredReply>& owed) {
  const uint64_t request_id = req.request_id();
  // A parked request waits no longer than what is left of its deadline.
  const int64_t left_ms = std::max<int64_t>(
      std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count(), 1);
  std::optional<ValueArray> results;
  try {
    const RefReader no_refs = [](const wire::Ref&) -> Value {
      throw Error(Errc::type_mismatch, "a lock operation takes no references");
    };
    const ValueArray args = decode_values(req.args(), no_refs);
    const uint64_t object = executor_.lock_object(req);
    const Caller caller{req.client_id(), request_id, std::string(routing)};
    std::optional<SyncOutcome> o;
    switch (req.op()) {
      case wire::Op::Lock:
        o = locks_.lock(object, caller, timeout_arg(args), args.size() > 1 && args[1].as<bool>(),
                        std::min(bound_arg(args, 2, options_.max_lock_wait), left_ms), owed);
        break;
      case wire::Op::Unlock:
        o = locks_.unlock(object, caller.monitor, count_arg(args), owed);
        break;
      case wire::Op::Wait:
        o = locks_.wait(object, caller, timeout_arg(args),
                        std::min(bound_arg(args, 1, options_.max_lock_wait), left_ms), owed);
        break;
      case wire::Op::Notify:
        o = locks_.notify(object, caller.monitor, count_arg(args));
        break;
      case wire::Op::LockInfo: {
        const LockInfo i = locks_.info(object);
        results = ValueArray{Value(static_cast<int64_t>(i.holder)), Value(int64_t{i.depth}),
                             Value(static_cast<int64_t>(i.lock_waiters)),
                             Value(static_cast<int64_t>(i.wait_waiters)),
                             Value(static_cast<int64_t>(i.token))};
        break;
      }
      default:  // LockState
        results = ValueArray{Value(locks_.state(object, caller.monitor))};
        break;
    }
    if (o) results = outcome_values(*o);
  } catch (...) {
    // The barrier: served code (a property getter on the path) or ours. A grant the operation
    // owed before it failed still goes out, in owed.
    reply = exception_reply(request_id);
    return Dispatched::reply;
  }
  // No results: the caller is parked; its reply comes with a grant or at its deadline.
  if (!results) return Dispatched::parked;
  reply = executor_.results_reply(req.client_id(), request_id, *results);
  return Dispatched::reply;
}

Dispatched Dispatcher::dispatch_batch(uint64_t request_id, const zmq::message_t& body,
                                      const Taken& taken, AlignedScratch& scratch,
                                      zmq::message_t& reply, std::optional<std::string>& reroute) {
  const wire::Batch* batch = verified_batch(body, options_.limits, scratch);
  if (batch == nullptr || batch->requests() == nullptr) {
    reply = error_reply(
        request_id,
        body.size() > options_.limits.max_message_size ? Errc::message_too_large
                                                       : Errc::bad_message,
        "a batch of oneway calls failed verification (" + std::to_string(body.size()) + " bytes)");
    return Dispatched::reply;
  }
  // A batch is one request to the reply cache, under its own request id.
  const uint64_t client =
      batch->requests()->size() > 0 ? batch->requests()->Get(0)->client_id() : 0;
  // The wire trace: the batch, each call in it (one line: no reply of its own), its
  // acknowledgement.
  const bool trace = wire_trace();
  const auto batch_start = Clock::now();
  if (trace) {
    PATRO_LOG(trace, "server") << "<- batch #" << request_id
                               << " calls=" << batch->requests()->size()
                               << " client=" << trace_id(client) << " via=" << via(taken.routing);
  }
  if (auto seen = seen_before(client, request_id, taken.routing, batch_start, reply)) {
    if (trace)
      PATRO_LOG(trace, "server") << "-> batch #" << request_id
                                 << " calls=" << batch->requests()->size() << ' '
                                 << (*seen == Dispatched::reply
                                         ? trace_outcome(reply, options_.limits,
                                                         Clock::now() - batch_start, true) +
                                               " copy=answered"
                                         : "running " + trace_duration(Clock::now() - batch_start));
    return *seen;
  }
  int64_t failed = 0;
  std::string first;
  for (const wire::Request* req : *batch->requests()) {
    std::optional<std::string> error;
    const auto now = Clock::now();
    try {
      const auto deadline = deadline_of(req->timeout_ms(), now, taken.age);
      if (seen_) seen_(req->client_id());
      if (!op_info(req->op()).oneway) {
        error = std::string("invalid_argument: a ") + op_info(req->op()).name +
                " cannot be a oneway call";
      } else if (deadline <= now) {
        cache_.count_expired();
        error = "timeout: " + expired_text(taken.age);
      } else {
        error = executor_.execute_oneway(*req, deadline);  // its own barrier
      }
    } catch (...) {
      error = exception_text();
    }
    if (trace) {
      const auto took = Clock::now() - now;
      PATRO_LOG(trace, "server") << "<- oneway #" << req->request_id() << ' ' << trace_target(*req)
                                 << ' ' << trace_args(*req) << ' '
                                 << (error ? trace_failure(*error, took)
                                           : "ok " + trace_duration(took));
    }
    if (error && failed++ == 0) first = std::move(*error);
  }
  reply = executor_.results_reply(
      client, request_id,
      {Value(static_cast<int64_t>(batch->requests()->size())), Value(failed), Value(first)});
  if (client != 0) reroute = cache_.finish(client, request_id, reply);
  if (trace)
    PATRO_LOG(trace, "server") << "-> batch #" << request_id
                               << " calls=" << batch->requests()->size() << ' '
                               << trace_outcome(reply, options_.limits, Clock::now() - batch_start,
                                                true);
  return Dispatched::reply;
}

}  // namespace patro::detail
