// patro-bench's ZeroC Ice peer: a server process and a client, kept apart from the rest of the
// bench so that only this file's source sees Ice's headers. Built only where Ice is (the meson
// option `ice`); elsewhere ice_built() is false and patro-bench reports the Ice rows as skipped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace patro::bench {

/// True when this patro-bench was built with its Ice peer.
bool ice_built() noexcept;

/// The Ice server role: an object adapter on 127.0.0.1 (a free port) with a server thread pool of
/// `threads` threads serving one Store object. Prints its proxy string on stdout, then serves
/// until SIGTERM or SIGINT. Returns the exit status.
int run_ice_server(int threads);

/// One Ice client connection to the server at `proxy`: synchronous and pipelined (AMI) gets.
/// Used by one thread.
class IceClient {
 public:
  explicit IceClient(const std::string& proxy);
  ~IceClient();
  IceClient(const IceClient&) = delete;
  IceClient& operator=(const IceClient&) = delete;

  /// One twoway get, waiting for its reply.
  int64_t get();
  /// Starts one get (AMI) and keeps it in flight.
  void start_get();
  /// Waits for the oldest get in flight; false if none was.
  bool finish_oldest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace patro::bench
