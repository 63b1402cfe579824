#include "dispatcher.hpp"

#include "assert.hpp"
#include "log.hpp"
#include "routing.hpp"
#include "trace.hpp"

namespace patro::detail {

using Clock = std::chrono::steady_clock;

Dispatcher::Dispatcher(ObjectTable& objects, const ServerOptions& options, LockTable& locks,
                       ReplyCache& cache, std::weak_ptr<ReplySink> outbox,
                       std::function<void(uint64_t)> seen, const ClientRights* rights)
    : options_(options),
      cache_(cache),
      rights_(rights),
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
    case ReplyCache::Seen::dropped:
      reply = error_reply(request_id, Errc::outcome_unknown,
                          "this request ran once, and its reply left the server's reply cache "
                          "(over Limits::reply_cache_bytes, or the client was taken for gone); it "
                          "was not run again");
      return Dispatched::reply;
    case ReplyCache::Seen::cancelled:
      reply = error_reply(request_id, Errc::cancelled,
                          "the client cancelled this request before it ran; it was not run");
      return Dispatched::reply;
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

Dispatched Dispatcher::dispatch_body(uint64_t request_id, const zmq::message_t& body,
                                     const Taken& taken, AlignedScratch& scratch,
                                     zmq::message_t& reply, std::optional<std::string>& reroute,
                                     std::vector<DeferredReply>& owed) {
  const bool batch = is_batch(body);
  const wire::Batch* b = batch ? verified_batch(body, options_.limits, scratch) : nullptr;
  const wire::Request* req = batch ? nullptr : verified_request(body, options_.limits, scratch);
  if (b != nullptr && b->requests() != nullptr)
    return dispatch_batch(request_id, *b, taken, reply, reroute);
  if (req != nullptr) return dispatch(*req, taken, reply, reroute, owed);
  const Errc code =
      body.size() > options_.limits.max_message_size ? Errc::message_too_large : Errc::bad_message;
  if (batch)
    reply = error_reply(
        request_id, code,
        "a batch of oneway calls failed verification (" + std::to_string(body.size()) + " bytes)");
  else
    reply = error_reply(request_id, code,
                        "the request body failed verification (" + std::to_string(body.size()) +
                            " bytes): malformed, truncated, too deep or too large");
  return Dispatched::reply;
}

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
  if (auto seen = seen_before(client, request_id, taken.routing, now, reply)) return *seen;
  std::optional<std::string> no_failure;  // a request's failure is its reply
  const Dispatched d = run(req, taken, now, false, reply, no_failure, owed);
  if (d == Dispatched::reply && client != 0) reroute = cache_.finish(client, request_id, reply);
  return d;
}

Dispatched Dispatcher::run(const wire::Request& req, const Taken& taken, Clock::time_point now,
                           bool oneway, zmq::message_t& reply, std::optional<std::string>& failure,
                           std::vector<DeferredReply>& owed) {
  try {
    if (seen_) seen_(req.client_id());
    if (oneway && !op_info(req.op()).oneway) {
      failure =
          std::string("invalid_argument: a ") + op_info(req.op()).name + " cannot be a oneway call";
      return Dispatched::reply;
    }
    // Stage 2: the rights of the client's key.
    if (taken.rights && rights_ != nullptr) {
      if (auto why = rights_->refusal(*taken.rights, req)) {
        rights_->count_refusal();
        PATRO_LOG_LIMITED(info, "server", refusals_) << "not_authorized: " << *why;
        if (oneway)
          failure = "not_authorized: " + *why;
        else
          reply = error_reply(req.request_id(), Errc::not_authorized, *why);
        return Dispatched::reply;
      }
    }
    // The executor checks what only it can see (a method's mark, references among the
    // arguments) for the length of this call.
    const Executor::RightsScope scope(executor_, taken.rights.get(), rights_, req.client_id());
    // Stage 3.
    const auto deadline = deadline_of(req.timeout_ms(), now, taken.age);
    if (deadline <= now) {
      cache_.count_expired();
      if (oneway)
        failure = "timeout: " + expired_text(taken.age);
      else
        reply = error_reply(req.request_id(), Errc::timeout, expired_text(taken.age));
      return Dispatched::reply;
    }
    // Stage 4, each with its own barrier.
    if (oneway) {
      failure = executor_.execute_oneway(req, deadline);
      return Dispatched::reply;
    }
    return executor_.execute(req, taken.routing, deadline, reply, owed);
  } catch (...) {
    if (oneway)
      failure = exception_text();
    else
      reply = exception_reply(req.request_id());
    return Dispatched::reply;
  }
}

Dispatched Dispatcher::dispatch_batch(uint64_t request_id, const wire::Batch& batch,
                                      const Taken& taken, zmq::message_t& reply,
                                      std::optional<std::string>& reroute) {
  const auto& calls = *batch.requests();
  // A batch is one request to the reply cache, under its own request id.
  const uint64_t client = calls.size() > 0 ? calls.Get(0)->client_id() : 0;
  // The wire trace: the batch, each call in it (one line: no reply of its own), its
  // acknowledgement.
  const bool trace = wire_trace();
  const auto batch_start = Clock::now();
  if (trace) {
    PATRO_LOG(trace, "server") << "<- batch #" << request_id << " calls=" << calls.size()
                               << " client=" << trace_id(client) << " via=" << via(taken.routing);
  }
  if (auto seen = seen_before(client, request_id, taken.routing, batch_start, reply)) {
    if (trace)
      PATRO_LOG(trace, "server") << "-> batch #" << request_id << " calls=" << calls.size() << ' '
                                 << (*seen == Dispatched::reply
                                         ? trace_outcome(reply, options_.limits,
                                                         Clock::now() - batch_start, true) +
                                               " copy=answered"
                                         : "running " + trace_duration(Clock::now() - batch_start));
    return *seen;
  }
  int64_t failed = 0;
  std::string first;
  zmq::message_t no_reply;               // a oneway call has none
  std::vector<DeferredReply> owes_none;  // nor does it park anyone (no lock operation is oneway)
  for (const wire::Request* req : calls) {
    std::optional<std::string> error;
    const auto now = Clock::now();
    (void)run(*req, taken, now, true, no_reply, error, owes_none);
    if (trace) {
      const auto took = Clock::now() - now;
      PATRO_LOG(trace, "server") << "<- oneway #" << req->request_id() << ' ' << trace_target(*req)
                                 << ' ' << trace_args(*req) << ' '
                                 << (error ? trace_failure(*error, took)
                                           : "ok " + trace_duration(took));
    }
    if (error && failed++ == 0) first = std::move(*error);
  }
  PATRO_ASSERT(owes_none.empty(), "a oneway call owed a reply to a parked caller");
  reply = executor_.results_reply(
      client, request_id, {Value(static_cast<int64_t>(calls.size())), Value(failed), Value(first)});
  if (client != 0) reroute = cache_.finish(client, request_id, reply);
  if (trace)
    PATRO_LOG(trace, "server") << "-> batch #" << request_id << " calls=" << calls.size() << ' '
                               << trace_outcome(reply, options_.limits, Clock::now() - batch_start,
                                                true);
  return Dispatched::reply;
}

}  // namespace patro::detail
