// Checks for the multi-process tests that count what was acknowledged: numbers written one per
// line by the clients, and that each of 0..total-1 came exactly once.
#pragma once

#include <doctest/doctest.h>

#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace patro::test {

/// The whitespace-separated integers of a file (none if it is missing).
inline std::vector<long> read_numbers(const std::string& path) {
  std::vector<long> out;
  std::istringstream in(read_file(path));
  for (long v; in >> v;) out.push_back(v);
  return out;
}

/// Each of 0..total-1 exactly once in got: none twice, none lost.
inline void check_exactly_once(const std::vector<long>& got, long total, const char* what = "") {
  INFO(what);
  std::set<long> distinct(got.begin(), got.end());
  CHECK(got.size() == static_cast<size_t>(total));       // none twice
  CHECK(distinct.size() == static_cast<size_t>(total));  // none lost
  if (!distinct.empty()) {
    CHECK(*distinct.begin() == 0);
    CHECK(*distinct.rbegin() == total - 1);
  }
}

}  // namespace patro::test
