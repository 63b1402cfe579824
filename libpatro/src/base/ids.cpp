#include "ids.hpp"

#include <sys/random.h>

#include <cerrno>
#include <random>

namespace patro::detail {

uint64_t random_id() {
  uint64_t id = 0;
  while (id == 0) {
    ssize_t n = getrandom(&id, sizeof id, 0);
    if (n != static_cast<ssize_t>(sizeof id)) {
      if (n < 0 && errno == EINTR) continue;
      std::random_device rd;  // fall back to the library's source
      id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    }
  }
  return id;
}

}  // namespace patro::detail
