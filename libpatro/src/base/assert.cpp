#include "assert.hpp"

#include <string>

#include "log.hpp"
#include "patro/error.hpp"

namespace patro::detail {

void assertion_failed(const char* expression, const char* file, int line, const char* what) {
  std::string where = std::string(file) + ":" + std::to_string(line);
  PATRO_LOG(error, "assert") << "internal error at " << where << ": " << what << " (" << expression
                             << " is false)";
  throw Error(Errc::internal, std::string("internal error (") + what + ") at " + where);
}

}  // namespace patro::detail
