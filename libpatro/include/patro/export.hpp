// What libpatro exports. The library is built with hidden symbols; each public header wraps its
// declarations in PATRO_PUBLIC_BEGIN / PATRO_PUBLIC_END, so exactly the declarations of
// include/patro/ (the public API) are visible to programs, and nothing from the private sources
// under src/ is. (A pragma rather than an attribute on the namespace: clang does not carry a
// namespace's visibility to a function defined outside that namespace block.) PATRO_API marks
// a single declaration the same way.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define PATRO_API __attribute__((visibility("default")))
#define PATRO_PUBLIC_BEGIN _Pragma("GCC visibility push(default)")
#define PATRO_PUBLIC_END _Pragma("GCC visibility pop")
#else
#define PATRO_API
#define PATRO_PUBLIC_BEGIN
#define PATRO_PUBLIC_END
#endif

// PATRO_PRIVATE: a class of the private sources that a public header declares (a handle's
// implementation) stays hidden, although the public namespace it lives in is exported.
#if defined(__GNUC__) || defined(__clang__)
#define PATRO_PRIVATE __attribute__((visibility("hidden")))
#else
#define PATRO_PRIVATE
#endif
