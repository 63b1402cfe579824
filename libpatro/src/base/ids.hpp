// Unguessable ids (holding an object id is the capability to use the object).
#pragma once

#include <cstdint>

namespace patro::detail {

/// 64 random bits from the kernel's CSPRNG; never 0.
uint64_t random_id();

}  // namespace patro::detail
