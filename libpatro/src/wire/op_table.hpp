// The operations of schemas/request.fbs, one row each: which handler of the server's dispatcher
// runs it, and how clients and servers treat it. The rows are written once, in schemas/wire.json
// (generated into wire_constants.hpp at build time, and into the Python client's _wire_constants);
// the client (retries, oneway calls) and the server (dispatch, fencing, oneway batches) read this
// table. A new wire::Op gets a row there, or the static_asserts below fail.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>

#include "request_generated.h"
#include "wire_constants.hpp"

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
// The rows are schemas/wire.json's "ops", which the Python client reads too.
#define PATRO_OP_ROW(op, name, handler, idempotent, mutating, oneway) \
  OpInfo{wire::Op::op, name, OpHandler::handler, idempotent, mutating, oneway},
inline constexpr OpInfo kRows[] = {PATRO_OP_ROWS(PATRO_OP_ROW)};
#undef PATRO_OP_ROW
}  // namespace op_table_rows

/// The table by operation number (wire::Op is a ubyte; its numbers are sparse).
inline constexpr std::array<OpInfo, 256> kOpTable = [] {
  std::array<OpInfo, 256> t{};
  for (const OpInfo& row : op_table_rows::kRows) t[static_cast<uint8_t>(row.op)] = row;
  return t;
}();

// sizeof is not evaluated: EnumValuesOp() is request.fbs's list of operations.
static_assert(std::size(op_table_rows::kRows) == sizeof(wire::EnumValuesOp()) / sizeof(wire::Op),
              "a wire::Op was added or removed: give it a row in schemas/wire.json");
static_assert(
    [] {
      size_t known = 0;
      for (const OpInfo& row : kOpTable) known += row.known() ? 1 : 0;
      return known == std::size(op_table_rows::kRows);
    }(),
    "two rows of schemas/wire.json name the same wire::Op");

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
