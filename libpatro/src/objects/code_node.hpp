// A served callable (patro::Code). Calls run with the node's mutex held, so one callable's calls
// are serialized.
#pragma once

#include "node.hpp"
#include "patro/object.hpp"

namespace patro::detail {

class CodeNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::code;
  explicit CodeNode(Invoker fn) : Node(NodeKind::code), fn(std::move(fn)) {}
  const Invoker fn;
};

}  // namespace patro::detail
