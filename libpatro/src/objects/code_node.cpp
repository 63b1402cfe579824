#include "code_node.hpp"

namespace patro::detail {

std::shared_ptr<Node> make_code_node(Invoker fn) {
  return std::make_shared<CodeNode>(std::move(fn));
}

}  // namespace patro::detail
