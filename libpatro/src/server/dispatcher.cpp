#include "dispatcher.hpp"

namespace patro::detail {

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
                       std::weak_ptr<ReplySink> outbox, std::function<void(uint64_t)> seen)
    : options_(options),
      locks_(locks),
      executor_(objects, options, &locks),
      seen_(std::move(seen)) {
  executor_.set_reply_sink(std::move(outbox));
}

Dispatched Dispatcher::dispatch(const wire::Request& req, std::string_view routing,
                                zmq::message_t& reply, std::vector<DeferredReply>& owed) {
  try {
    if (seen_) seen_(req.client_id());
    if (op_info(req.op()).lock_path()) return run_lock(req, routing, reply, owed);
    reply = executor_.execute(req, routing);  // its own barrier
    return reply.size() == 0 ? Dispatched::deferred : Dispatched::reply;
  } catch (...) {
    reply = exception_reply(req.request_id());
    return Dispatched::reply;
  }
}

Dispatched Dispatcher::run_lock(const wire::Request& req, std::string_view routing,
                                zmq::message_t& reply, std::vector<DeferredReply>& owed) {
  const uint64_t request_id = req.request_id();
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
                        bound_arg(args, 2, options_.max_lock_wait), owed);
        break;
      case wire::Op::Unlock:
        o = locks_.unlock(object, caller.monitor, count_arg(args), owed);
        break;
      case wire::Op::Wait:
        o = locks_.wait(object, caller, timeout_arg(args),
                        bound_arg(args, 1, options_.max_lock_wait), owed);
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
  reply = executor_.results_reply(request_id, *results);
  return Dispatched::reply;
}

zmq::message_t Dispatcher::dispatch_batch(uint64_t request_id, const zmq::message_t& body,
                                          AlignedScratch& scratch) {
  const wire::Batch* batch = verified_batch(body, options_.limits, scratch);
  if (batch == nullptr || batch->requests() == nullptr)
    return error_reply(
        request_id,
        body.size() > options_.limits.max_message_size ? Errc::message_too_large
                                                       : Errc::bad_message,
        "a batch of oneway calls failed verification (" + std::to_string(body.size()) + " bytes)");
  int64_t failed = 0;
  std::string first;
  for (const wire::Request* req : *batch->requests()) {
    std::optional<std::string> error;
    try {
      if (seen_) seen_(req->client_id());
      if (!op_info(req->op()).oneway)
        error = std::string("invalid_argument: a ") + op_info(req->op()).name +
                " cannot be a oneway call";
      else
        error = executor_.execute_oneway(*req);  // its own barrier
    } catch (...) {
      error = exception_text();
    }
    if (error && failed++ == 0) first = std::move(*error);
  }
  return executor_.results_reply(
      request_id,
      {Value(static_cast<int64_t>(batch->requests()->size())), Value(failed), Value(first)});
}

}  // namespace patro::detail
