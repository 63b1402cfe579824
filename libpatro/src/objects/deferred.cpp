#include "deferred.hpp"

#include "served_ops.hpp"

namespace patro {

namespace detail {

ValueArray shaped_result(const Value& result, wire::CallContext context) {
  if (!result.is_list()) return {result};
  const ValueArray& items = *result.if_array();
  if (context == wire::CallContext::List) return items;
  return {items.empty() ? Value() : items.back()};
}

Deferred deferred_of(Invocation& inv) {
  if (!inv.deferred) {
    if (inv.route == nullptr)
      throw Error(Errc::unsupported, inv.callee + " takes a patro::Deferred, which needs a server");
    auto s = std::make_shared<DeferredState>();
    s->sink = inv.route->sink;
    s->routing = std::string(inv.route->routing);
    s->request_id = inv.route->request_id;
    s->client_id = inv.route->client_id;
    s->context = inv.route->context;
    s->deadline = inv.route->deadline;
    inv.deferred = std::move(s);
  }
  return Deferred(inv.deferred);
}

}  // namespace detail

void Deferred::resolve(const Value& result) const {
  detail::MutexLock lock(state_->mu);
  if (state_->done) return;
  state_->done = true;
  if (state_->in_call) {
    state_->result = result;
    return;
  }
  lock.unlock();
  if (auto sink = state_->sink.lock())
    sink->send_results(state_->routing, state_->client_id, state_->request_id,
                       detail::shaped_result(result, state_->context));
}

void Deferred::reject(const Error& error) const {
  if (const auto* re = dynamic_cast<const RemoteError*>(&error))
    reject(std::make_exception_ptr(*re));
  else
    reject(std::make_exception_ptr(error));
}

void Deferred::reject(std::exception_ptr error) const {
  // Any exception: a patro::Error keeps its code, anything else becomes remote_exception.
  const RemoteError e = detail::served_error(std::move(error), "a Deferred's reject");
  detail::MutexLock lock(state_->mu);
  if (state_->done) return;
  state_->done = true;
  if (state_->in_call) {
    state_->error = std::make_exception_ptr(e);
    return;
  }
  lock.unlock();
  if (auto sink = state_->sink.lock())
    sink->send_error(state_->routing, state_->client_id, state_->request_id, e);
}

bool Deferred::done() const {
  detail::MutexLock lock(state_->mu);
  return state_->done;
}

uint64_t Deferred::client_id() const {
  return state_->client_id;
}

std::chrono::steady_clock::time_point Deferred::deadline() const {
  return state_->deadline;
}

Context Deferred::context() const {
  switch (state_->context) {
    case wire::CallContext::List:
      return Context(Context::Kind::list);
    case wire::CallContext::Void:
      return Context(Context::Kind::none);
    default:
      return Context(Context::Kind::scalar);
  }
}

}  // namespace patro
