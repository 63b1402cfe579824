// The operations on served objects, callables and handles (wire ops Call, Can, Operator, Convert
// and File): the executor resolves the target node and hands the request here.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "deferred.hpp"
#include "node.hpp"
#include "patro/options.hpp"
#include "wire.hpp"

namespace patro::detail {

/// Arguments a call changed, by index, to send back to the caller.
using ChangedArgs = std::vector<std::pair<uint32_t, Value>>;

struct ServedCall {
  wire::Op op;
  std::string_view name;  // method, operator, conversion or file operation
  ValueArray& args;
  wire::CallContext context;
  const ServerOptions& options;
  std::chrono::steady_clock::time_point deadline;
  ChangedArgs& changed;
  const ReplyRoute* route = nullptr;  // for methods that take a patro::Deferred
  bool deferred = false;              // set: the method will reply later; send nothing now
  /// The caller's key is read-only (rights per key): only methods registered read-only
  /// (Class::read_only_method) run; anything else is Error(not_authorized).
  bool read_only = false;
};

/// Runs the call on target; throws Error (RemoteError for what served code threw).
ValueArray run_served(const std::shared_ptr<Node>& target, ServedCall& call);

/// What served code threw (callee names it in the text), as the error a caller receives: a
/// patro::Error keeps its code, anything else becomes remote_exception with its C++ type name (for
/// a thrown int too).
RemoteError served_error(std::exception_ptr e, const std::string& callee);

/// Called inside a catch block: rethrows the exception being handled as served_error does.
[[noreturn]] void throw_served_exception(const std::string& callee);

/// Perl's string form of a value: null is "", true "1", false "", numbers as Perl prints them.
std::string perl_string(const Value& v);

}  // namespace patro::detail
