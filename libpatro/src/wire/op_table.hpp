// The operations of schemas/request.fbs, one row each: which handler of the server's dispatcher
// runs it, and how clients and servers treat it. This table is the only place that classifies
// operations; the client (retries, oneway calls) and the server (dispatch, fencing, oneway
// batches) read it. A new wire::Op gets a row here, or the static_asserts below fail.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>

#include "request_generated.h"

namespace patro::detail {

/// Which handler of the server's dispatcher runs an operation.
enum class OpHandler : uint8_t {
  unknown,    // not an operation of this protocol version
  element,    // one element of a container, or the object itself: get, set, add, erase...
  container,  // a container's elements: size, keys, push, splice...
  served,     // served objects, callables and file handles: call, operators, conversions
  lock,       // monitor locks, against the lock table (the lock path)
  life,       // the objects' life: a client releasing references (the object may be gone)
};

struct OpInfo {
  wire::Op op = wire::Op::Get;
  const char* name = "unknown";
  OpHandler handler = OpHandler::unknown;
  /// May be retried blindly: running it twice has the effect of running it once. Others get
  /// outcome_unknown when their server died mid-call.
  bool idempotent = false;
  /// Changes what it names: refused when the call's fencing token is older than the newest grant.
  bool mutating = false;
  /// May travel in a oneway batch (it needs no reply).
  bool oneway = false;

  /// Runs against the lock table (a reply may be owed later, to a parked caller).
  constexpr bool lock_path() const noexcept { return handler == OpHandler::lock; }
  constexpr bool known() const noexcept { return handler != OpHandler::unknown; }
};

namespace op_table_rows {
using enum wire::Op;
using H = OpHandler;
// clang-format off
//  op          name          handler       idempotent mutating oneway
inline constexpr OpInfo kRows[] = {
  {Get,       "get",        H::element,   true,      false,   true},
  {Set,       "set",        H::element,   true,      true,    true},
  {Erase,     "erase",      H::element,   false,     true,    true},
  {Exists,    "exists",     H::element,   true,      false,   true},
  {Size,      "size",       H::container, true,      false,   true},
  {Keys,      "keys",       H::container, true,      false,   true},
  {Values,    "values",     H::container, true,      false,   true},
  {Push,      "push",       H::container, false,     true,    true},
  {Pop,       "pop",        H::container, false,     true,    true},
  {Shift,     "shift",      H::container, false,     true,    true},
  {Unshift,   "unshift",    H::container, false,     true,    true},
  {Splice,    "splice",     H::container, false,     true,    true},
  {Clear,     "clear",      H::container, true,      true,    true},
  {Resize,    "resize",     H::container, true,      true,    true},
  {Add,       "add",        H::element,   false,     true,    true},
  {Describe,  "describe",   H::element,   true,      false,   true},
  {Call,      "call",       H::served,    false,     true,    true},
  {Can,       "can",        H::served,    true,      false,   true},
  {Operator,  "operator",   H::served,    false,     true,    true},
  {Convert,   "convert",    H::served,    false,     true,    true},
  {File,      "file",       H::served,    false,     true,    true},
  {Isa,       "isa",        H::served,    true,      false,   true},
  {Lock,      "lock",       H::lock,      false,     true,    false},
  {Unlock,    "unlock",     H::lock,      false,     true,    false},
  {Wait,      "wait",       H::lock,      false,     true,    false},
  {Notify,    "notify",     H::lock,      false,     true,    false},
  {LockState, "lock_state", H::lock,      true,      false,   false},
  {LockInfo,  "lock_info",  H::lock,      true,      false,   false},
  {Slice,     "slice",      H::container, true,      false,   true},
  {Copy,      "copy",       H::element,   true,      false,   true},
  {Release,   "release",    H::life,      false,     false,   true},
};
// clang-format on
}  // namespace op_table_rows

/// The table by operation number (wire::Op is a ubyte; its numbers are sparse).
inline constexpr std::array<OpInfo, 256> kOpTable = [] {
  std::array<OpInfo, 256> t{};
  for (const OpInfo& row : op_table_rows::kRows) t[static_cast<uint8_t>(row.op)] = row;
  return t;
}();

static_assert(std::size(op_table_rows::kRows) == 31 && wire::Op::MAX == wire::Op::Release,
              "a wire::Op was added or removed: give it a row in op_table.hpp");
static_assert(
    [] {
      size_t known = 0;
      for (const OpInfo& row : kOpTable) known += row.known() ? 1 : 0;
      return known == std::size(op_table_rows::kRows);
    }(),
    "two rows of op_table.hpp name the same wire::Op");

/// The row of an operation (an unknown one's handler is OpHandler::unknown). Constant time, no
/// branch on the operation.
constexpr const OpInfo& op_info(wire::Op op) noexcept {
  return kOpTable[static_cast<uint8_t>(op)];
}

/// Whether op may be retried blindly: op_info(op).idempotent.
constexpr bool idempotent(wire::Op op) noexcept {
  return op_info(op).idempotent;
}

}  // namespace patro::detail
