#include "redis_peer.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace patro::bench {
namespace {

constexpr uint64_t kPipelined = 1000;  // XADDs written before their replies are read
constexpr int64_t kMaxBulk = 1 << 20;
constexpr int64_t kMaxElements = 1 << 20;
constexpr int kMaxDepth = 8;

int64_t length(std::string_view s, const std::string& line) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty())
    throw std::runtime_error("redis: a bad number in '" + line + "'");
  return v;
}

}  // namespace

RedisClient::RedisClient(uint16_t port, std::chrono::milliseconds timeout)
    : conn_("redis", port, timeout) {}

void RedisClient::send(const std::vector<std::string_view>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (std::string_view a : args) {
    out += "$" + std::to_string(a.size()) + "\r\n";
    out += a;
    out += "\r\n";
  }
  conn_.write_all(out);
}

RespReply RedisClient::reply(int depth) {
  if (depth > kMaxDepth) throw std::runtime_error("redis: a reply nested too deep");
  const std::string line = conn_.read_line();
  if (line.empty()) throw std::runtime_error("redis: an empty reply line");
  RespReply r;
  const std::string_view rest = std::string_view(line).substr(1);
  switch (line[0]) {
    case '+':
      r.kind = RespReply::Kind::simple;
      r.text = rest;
      return r;
    case '-':
      r.kind = RespReply::Kind::error;
      r.text = rest;
      return r;
    case ':':
      r.kind = RespReply::Kind::integer;
      r.integer = length(rest, line);
      return r;
    case '$': {
      const int64_t n = length(rest, line);
      if (n == -1) return r;  // nil
      if (n < 0 || n > kMaxBulk) throw std::runtime_error("redis: a bad bulk length: " + line);
      r.kind = RespReply::Kind::bulk;
      r.text = conn_.read_exact(static_cast<size_t>(n) + 2);
      if (r.text.compare(static_cast<size_t>(n), 2, "\r\n") != 0)
        throw std::runtime_error("redis: a bulk string not ended by CRLF");
      r.text.resize(static_cast<size_t>(n));
      return r;
    }
    case '*': {
      const int64_t n = length(rest, line);
      if (n == -1) return r;  // nil
      if (n < 0 || n > kMaxElements) throw std::runtime_error("redis: a bad array length: " + line);
      r.kind = RespReply::Kind::array;
      r.elements.reserve(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) r.elements.push_back(reply(depth + 1));
      return r;
    }
    default:
      throw std::runtime_error("redis: not a RESP reply: '" + line.substr(0, 80) + "'");
  }
}

RespReply RedisClient::command(const std::vector<std::string_view>& args) {
  send(args);
  RespReply r = reply();
  if (r.kind == RespReply::Kind::error)
    throw std::runtime_error("redis: " + std::string(args.at(0)) + ": " + r.text);
  return r;
}

void RedisClient::create_group(const std::string& stream, const std::string& group) {
  const RespReply r = command({"XGROUP", "CREATE", stream, group, "0", "MKSTREAM"});
  if (r.kind != RespReply::Kind::simple || r.text != "OK")
    throw std::runtime_error("redis: XGROUP CREATE did not answer OK");
}

void RedisClient::add_many(const std::string& stream, const std::string& body, uint64_t n) {
  for (uint64_t done = 0; done < n;) {
    const uint64_t m = std::min(kPipelined, n - done);
    for (uint64_t i = 0; i < m; ++i) send({"XADD", stream, "*", "j", body});
    for (uint64_t i = 0; i < m; ++i) {
      const RespReply r = reply();
      if (r.kind != RespReply::Kind::bulk)
        throw std::runtime_error("redis: XADD answered " +
                                 (r.kind == RespReply::Kind::error ? r.text : "no id"));
    }
    done += m;
  }
}

std::vector<std::string> RedisClient::read_group(const std::string& stream,
                                                 const std::string& group,
                                                 const std::string& consumer, uint64_t count) {
  const std::string n = std::to_string(count);
  const RespReply r =
      command({"XREADGROUP", "GROUP", group, consumer, "COUNT", n, "STREAMS", stream, ">"});
  std::vector<std::string> ids;
  if (r.kind == RespReply::Kind::nil) return ids;
  // [[stream, [[id, [field, value]], ...]]]
  auto bad = [] { return std::runtime_error("redis: XREADGROUP answered an unexpected shape"); };
  if (r.kind != RespReply::Kind::array || r.elements.size() != 1) throw bad();
  const RespReply& s = r.elements[0];
  if (s.kind != RespReply::Kind::array || s.elements.size() != 2 ||
      s.elements[1].kind != RespReply::Kind::array)
    throw bad();
  for (const RespReply& entry : s.elements[1].elements) {
    if (entry.kind != RespReply::Kind::array || entry.elements.size() != 2 ||
        entry.elements[0].kind != RespReply::Kind::bulk)
      throw bad();
    ids.push_back(entry.elements[0].text);
  }
  if (ids.size() > count) throw bad();
  return ids;
}

void RedisClient::ack(const std::string& stream, const std::string& group,
                      const std::vector<std::string>& ids) {
  std::vector<std::string_view> args{"XACK", stream, group};
  for (const auto& id : ids) args.push_back(id);
  const RespReply r = command(args);
  if (r.kind != RespReply::Kind::integer || r.integer != static_cast<int64_t>(ids.size()))
    throw std::runtime_error("redis: XACK acknowledged " + std::to_string(r.integer) + " of " +
                             std::to_string(ids.size()));
}

}  // namespace patro::bench
