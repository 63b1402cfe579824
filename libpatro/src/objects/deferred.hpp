// Late replies (patro::Deferred): what a call needs to answer after it has returned, and the
// server's sink that encodes and sends such replies from any thread.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "mutex.hpp"
#include "patro/object.hpp"
#include "wire.hpp"

namespace patro::detail {

/// Sends replies for calls that already returned. Any thread may call it.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  virtual void send_results(const std::string& routing, uint64_t client_id, uint64_t request_id,
                            const ValueArray& results) = 0;
  virtual void send_error(const std::string& routing, uint64_t client_id, uint64_t request_id,
                          const Error& e) = 0;
};

/// Where a call's reply goes: set by the executor for each request.
struct ReplyRoute {
  std::weak_ptr<ReplySink> sink;
  std::string_view routing;
  uint64_t request_id = 0;
  uint64_t client_id = 0;
  wire::CallContext context = wire::CallContext::Scalar;
  /// The request's deadline on this server's clock (its budget, less its age when taken).
  std::chrono::steady_clock::time_point deadline;
};

struct DeferredState {
  Mutex mu;
  bool done PATRO_GUARDED_BY(mu) = false;
  bool in_call PATRO_GUARDED_BY(mu) = true;  // resolved now: the executor replies as usual
  std::optional<Value> result PATRO_GUARDED_BY(mu);
  std::exception_ptr error PATRO_GUARDED_BY(mu);  // a patro::Error (a RemoteError keeps its type)
  std::weak_ptr<ReplySink> sink;
  std::string routing;
  uint64_t request_id = 0;
  uint64_t client_id = 0;
  wire::CallContext context = wire::CallContext::Scalar;
  std::chrono::steady_clock::time_point deadline;
};

/// A result Value shaped by the caller's context: a List gives its items, or its last one.
ValueArray shaped_result(const Value& result, wire::CallContext context);

}  // namespace patro::detail
