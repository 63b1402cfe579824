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
      server_id_(objects.server_id()),
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
  if (req != nullptr) {
    body_ = &body;  // a pipelined request that must wait keeps it
    const Dispatched d = dispatch(*req, taken, reply, reroute, owed);
    body_ = nullptr;
    return d;
  }
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
  const Dispatched d = req.pipeline_of() != 0
                           ? pipelined(req, taken, now, reply, owed)
                           : run(req, taken, now, false, reply, no_failure, owed);
  if (d == Dispatched::reply && client != 0)
    reroute = cache_.finish(client, request_id, reply, released_);
  return d;
}

namespace {
// Each error a pipelined request gets from the request it was made on says so once: a chain's
// last call names the call that failed first.
constexpr std::string_view kMadeOn = ", which this call was made on the result of, ";

std::string made_on(uint64_t on, std::string_view what) {
  return "request #" + std::to_string(on) + std::string(kMadeOn) + std::string(what);
}
}  // namespace

Dispatched Dispatcher::pipelined(const wire::Request& req, const Taken& taken,
                                 Clock::time_point now, zmq::message_t& reply,
                                 std::vector<DeferredReply>& owed) {
  const uint64_t on = req.pipeline_of(), request_id = req.request_id();
  // An earlier id only: a pipelined call can then never wait for itself, nor for a cycle.
  if (req.client_id() == 0 || on >= request_id || body_ == nullptr) {
    reply = error_reply(request_id, Errc::invalid_argument,
                        "a pipelined call (pipeline_of " + std::to_string(on) +
                            ") needs its client's id and names an earlier request of that client");
    return Dispatched::reply;
  }
  zmq::message_t on_reply;
  ReplyCache::Target found = cache_.answered(req.client_id(), on, &on_reply);
  if (found == ReplyCache::Target::waiting) {
    ReplyCache::Dependent d;
    d.on = on;
    d.request_id = request_id;
    d.body.copy(const_cast<zmq::message_t&>(*body_));
    d.routing.assign(taken.routing.data(), taken.routing.size());
    d.arrived = now;
    d.age = taken.age;
    d.rights = taken.rights;
    found = cache_.await_result(req.client_id(), d, &on_reply);
  }
  switch (found) {
    case ReplyCache::Target::waiting:
      return Dispatched::deferred;  // released when `on` finishes (dispatch_dependent)
    case ReplyCache::Target::full:
      reply = error_reply(request_id, Errc::overloaded,
                          "too many pipelined calls wait for their results from this client "
                          "(Limits::reply_cache_entries); it was not run");
      return Dispatched::reply;
    case ReplyCache::Target::cancelled:
      reply = error_reply(request_id, Errc::cancelled,
                          made_on(on, "was cancelled before it ran; this call was not run"));
      return Dispatched::reply;
    case ReplyCache::Target::dropped:
      reply = error_reply(request_id, Errc::outcome_unknown,
                          made_on(on,
                                  "ran, and its reply left the server's reply cache; this call "
                                  "was not run"));
      return Dispatched::reply;
    case ReplyCache::Target::ready:
      break;
  }
  return run_on(req, taken, now, on_reply, reply, owed);
}

Dispatched Dispatcher::run_on(const wire::Request& req, const Taken& taken, Clock::time_point now,
                              const zmq::message_t& on_reply, zmq::message_t& reply,
                              std::vector<DeferredReply>& owed) {
  const auto target = pipeline_target(req, on_reply, reply);
  if (!target) return Dispatched::reply;
  executor_.set_target(*target);
  std::optional<std::string> no_failure;
  const Dispatched d = run(req, taken, now, false, reply, no_failure, owed);  // never throws
  executor_.set_target(std::nullopt);
  return d;
}

std::optional<ObjectId> Dispatcher::pipeline_target(const wire::Request& req,
                                                    const zmq::message_t& on_reply,
                                                    zmq::message_t& reply) {
  const uint64_t on = req.pipeline_of(), request_id = req.request_id();
  // The reply cache's: this server made it.
  const wire::Reply* r = own_reply(on_reply, on_scratch_);
  if (r == nullptr) {
    reply = error_reply(request_id, Errc::internal, made_on(on, "has a reply that is not one"));
    return std::nullopt;
  }
  if (r->status() != wire::Status::Ok) {
    // Its error, as it was: a chain of pipelined calls fails with the first one's.
    const auto code = static_cast<Errc>(r->error_code());
    std::string text = r->error_text() ? r->error_text()->str() : std::string();
    if (text.find(kMadeOn) == std::string::npos) {
      const std::string prefix = std::string(errc_name(code)) + ": ";
      if (text.rfind(prefix, 0) == 0) text.erase(0, prefix.size());
      text = made_on(on, "failed: " + text);
    }
    reply =
        error_reply(request_id, code, text,
                    r->error_type() ? r->error_type()->str() : std::string(), r->error_number());
    return std::nullopt;
  }
  const wire::Value* v =
      r->results() != nullptr && r->results()->size() > 0 ? r->results()->Get(0) : nullptr;
  if (v == nullptr || v->kind() != wire::Kind::Ref || v->ref() == nullptr) {
    const char* kind = v == nullptr ? "nothing" : wire::EnumNameKind(v->kind());
    reply = error_reply(
        request_id, Errc::type_mismatch,
        made_on(on, std::string("returned ") + (*kind ? kind : "an unknown kind") +
                        ", not a reference to an object: a call cannot run on its result"));
    return std::nullopt;
  }
  const ObjectId id{v->ref()->server(), v->ref()->object()};
  if (id.server != server_id_) {
    reply = error_reply(request_id, Errc::invalid_argument,
                        made_on(on, "returned a reference to object " + id.to_hex() +
                                        " of another server: a pipelined call runs only on the "
                                        "server that made the result (call it on the result)"));
    return std::nullopt;
  }
  return id;
}

Dispatched Dispatcher::dispatch_dependent(ReplyCache::Dependent& d, AlignedScratch& scratch,
                                          zmq::message_t& reply,
                                          std::optional<std::string>& reroute,
                                          std::vector<DeferredReply>& owed) {
  const auto now = Clock::now();
  const wire::Request* req = verified_request(d.body, options_.limits, scratch);
  PATRO_ASSERT(req != nullptr, "a pipelined request verified once failed verification again");
  const Taken taken{d.routing, d.age + (now - d.arrived), d.rights};
  Dispatched out = Dispatched::reply;
  switch (d.state) {
    case ReplyCache::Dependent::On::cancelled:
      reply = error_reply(d.request_id, Errc::cancelled,
                          made_on(d.on, "was cancelled before it ran; this call was not run"));
      break;
    case ReplyCache::Dependent::On::dropped:
      reply = error_reply(d.request_id, Errc::outcome_unknown,
                          made_on(d.on, "ran, and its reply is gone; this call was not run"));
      break;
    case ReplyCache::Dependent::On::ready:
      out = run_on(*req, taken, now, d.on_reply, reply, owed);
      break;
  }
  if (wire_trace())
    PATRO_LOG(trace, "server") << "-> reply #" << d.request_id << " pipelined on #" << d.on << ' '
                               << (out == Dispatched::reply
                                       ? trace_outcome(reply, options_.limits, Clock::now() - now)
                                       : std::string("later"));
  if (out == Dispatched::reply)
    reroute = cache_.finish(req->client_id(), d.request_id, reply, released_);
  return out;
}

Dispatched Dispatcher::run(const wire::Request& req, const Taken& taken, Clock::time_point now,
                           bool oneway, zmq::message_t& reply, std::optional<std::string>& failure,
                           std::vector<DeferredReply>& owed) {
  try {
    if (seen_) seen_(req.client_id());
    if (oneway && req.pipeline_of() != 0) {
      failure = "invalid_argument: a oneway call cannot be pipelined";
      return Dispatched::reply;
    }
    if (oneway && !op_info(req.op()).oneway) {
      failure =
          std::string("invalid_argument: a ") + op_info(req.op()).name + " cannot be a oneway call";
      return Dispatched::reply;
    }
    // Stage 2: the rights of the client's key.
    if (taken.rights && rights_ != nullptr) {
      if (auto why = rights_->refusal(*taken.rights, req, executor_.target_of(req))) {
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
  if (client != 0) reroute = cache_.finish(client, request_id, reply, released_);
  if (trace)
    PATRO_LOG(trace, "server") << "-> batch #" << request_id << " calls=" << calls.size() << ' '
                               << trace_outcome(reply, options_.limits, Clock::now() - batch_start,
                                                true);
  return Dispatched::reply;
}

}  // namespace patro::detail
