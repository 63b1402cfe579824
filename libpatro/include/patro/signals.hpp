// Waiting for SIGINT / SIGTERM in programs that serve (brokers, servers, workers).
#pragma once

#include <chrono>
#include <optional>

#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and in every thread it starts later,
/// so that wait() can take them. Construct it first thing in main, before any Patro object.
class TerminationSignals {
 public:
  TerminationSignals();
  TerminationSignals(const TerminationSignals&) = delete;
  TerminationSignals& operator=(const TerminationSignals&) = delete;
  /// Waits for one of the signals and returns its number.
  int wait() const;
  /// Waits up to timeout; nullopt if none came.
  std::optional<int> wait_for(std::chrono::milliseconds timeout) const;
};

}  // namespace patro
PATRO_PUBLIC_END
