// PATRO_API: what libpatro exports. The library is built with hidden symbols; each public header
// opens its namespace with PATRO_API, so exactly the declarations of include/patro/ (the public
// API) are visible to programs, and nothing from the private sources under src/ is.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define PATRO_API __attribute__((visibility("default")))
#else
#define PATRO_API
#endif

// PATRO_PRIVATE: a class of the private sources that a public header declares (a handle's
// implementation) stays hidden, although the public namespace it lives in is exported.
#if defined(__GNUC__) || defined(__clang__)
#define PATRO_PRIVATE __attribute__((visibility("hidden")))
#else
#define PATRO_PRIVATE
#endif
