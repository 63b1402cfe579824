// Whether this test program is built with AddressSanitizer or ThreadSanitizer, whose programs run
// several times slower: a test that repeats work many times (jobs, lines, calls) may repeat it
// fewer times there. A bug in the path repeated shows in the smaller number too, and the
// sanitizers report it at its first occurrence; what the count itself proves (none lost, none
// twice) is asserted on whatever count ran.
#pragma once

namespace patro::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

/// n in a plain build, n / divisor under a sanitizer.
constexpr long scaled(long n, long divisor) {
  return kSanitized ? n / divisor : n;
}

}  // namespace patro::test
