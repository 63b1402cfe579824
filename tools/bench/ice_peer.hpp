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
/// True when it was built with IceSSL as well (Ice over TLS: the peer of the CURVE rows).
bool ice_ssl_built() noexcept;

/// The Ice server role: an object adapter on 127.0.0.1 (a free port) with a server thread pool of
/// `threads` threads serving one Store object. Prints its proxy string on stdout, then serves
/// until SIGTERM or SIGINT. Returns the exit status. With `tls_dir`, the adapter's endpoint is
/// IceSSL's (`ssl`), with the certificate and key that write_tls_files wrote there.
int run_ice_server(int threads, const std::string& tls_dir = {});

/// Writes a certificate authority (ca.pem) and a server certificate for 127.0.0.1 signed by it
/// (server.pem, server.key; ECDSA P-256) into `dir` with openssl. Throws if openssl fails.
void write_tls_files(const std::string& dir);

/// One Ice client connection to the server at `proxy`: synchronous and pipelined (AMI) gets.
/// Used by one thread. With `tls_dir`, over IceSSL, verifying the server's certificate against
/// the authority there.
class IceClient {
 public:
  explicit IceClient(const std::string& proxy, const std::string& tls_dir = {});
  ~IceClient();
  IceClient(const IceClient&) = delete;
  IceClient& operator=(const IceClient&) = delete;

  /// One twoway get, waiting for its reply.
  int64_t get();
  /// Starts one get (AMI) and keeps it in flight.
  void start_get();
  /// Waits for the oldest get in flight; false if none was.
  bool finish_oldest();
  /// The connection's TLS cipher suite ("" over plain TCP), once a call has connected it.
  std::string cipher();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace patro::bench
