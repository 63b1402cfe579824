// patro-bench's Redis client: RESP2 commands and replies over TcpConn, and the Streams calls of a
// reliable queue (XADD to produce; XGROUP CREATE, XREADGROUP and XACK to consume: an entry read by
// a consumer stays pending in its group until acknowledged). A reply is parsed within bounds (a
// bulk string of at most 1 MiB, an array of at most 1 M elements, nested at most 8 deep); an
// error reply or a malformed one is an error naming it. Bench-only code.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tcp_conn.hpp"

namespace patro::bench {

struct RespReply {
  enum class Kind { simple, error, integer, bulk, array, nil };
  Kind kind = Kind::nil;
  std::string text;  // simple, error, bulk
  int64_t integer = 0;
  std::vector<RespReply> elements;  // array
};

class RedisClient {
 public:
  /// Connects to redis-server on 127.0.0.1:port.
  explicit RedisClient(uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(30));

  /// One command and its reply; an error reply throws.
  RespReply command(const std::vector<std::string_view>& args);

  /// XGROUP CREATE stream group 0 MKSTREAM.
  void create_group(const std::string& stream, const std::string& group);
  /// n XADDs of one field "j" with this body, pipelined.
  void add_many(const std::string& stream, const std::string& body, uint64_t n);
  /// XREADGROUP GROUP group consumer COUNT count STREAMS stream >, not blocking: the ids of the
  /// entries it delivered (none when the stream has no new entries).
  std::vector<std::string> read_group(const std::string& stream, const std::string& group,
                                      const std::string& consumer, uint64_t count);
  /// XACK of these ids; throws unless every one was pending.
  void ack(const std::string& stream, const std::string& group,
           const std::vector<std::string>& ids);

 private:
  void send(const std::vector<std::string_view>& args);
  RespReply reply(int depth = 0);

  TcpConn conn_;
};

}  // namespace patro::bench
