// patro-bench's beanstalkd client: the few commands of beanstalkd's text protocol that a producer
// and a consumer of one tube use (use, watch, ignore, put, reserve-with-timeout, delete), over
// TcpConn. Any reply other than the expected one is an error naming it. Bench-only code.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "tcp_conn.hpp"

namespace patro::bench {

class BeanstalkClient {
 public:
  /// Connects to beanstalkd on 127.0.0.1:port, uses and watches tube only.
  BeanstalkClient(uint16_t port, const std::string& tube,
                  std::chrono::milliseconds timeout = std::chrono::seconds(30));

  /// Puts n jobs with this body (priority 0, no delay, time-to-run 60 s), pipelined.
  void put_many(const std::string& body, uint64_t n);
  /// reserve-with-timeout 0: a ready job's id, or nothing when none is ready.
  std::optional<uint64_t> reserve();
  /// Deletes a reserved job.
  void remove(uint64_t id);

 private:
  std::string expect(const std::string& command, const std::string& reply_prefix);

  TcpConn conn_;
};

}  // namespace patro::bench
