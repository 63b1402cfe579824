// doctest's runner and main, compiled once for every test program: compiling them into each test's
// own source (DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN there) took about 7 s per program under ASan,
// some 340 s of each sanitizer build.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
