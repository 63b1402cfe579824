#include "beanstalk_peer.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace patro::bench {
namespace {

constexpr uint64_t kPipelined = 1000;     // puts written before their replies are read
constexpr size_t kMaxJobBytes = 1 << 20;  // beanstalkd's own default limit is 64 KiB

uint64_t number(std::string_view s, const std::string& line) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty())
    throw std::runtime_error("beanstalkd: a bad number in '" + line + "'");
  return v;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

BeanstalkClient::BeanstalkClient(uint16_t port, const std::string& tube,
                                 std::chrono::milliseconds timeout)
    : conn_("beanstalkd", port, timeout) {
  expect("use " + tube, "USING ");
  expect("watch " + tube, "WATCHING ");
  expect("ignore default", "WATCHING ");
}

std::string BeanstalkClient::expect(const std::string& command, const std::string& reply_prefix) {
  conn_.write_all(command + "\r\n");
  std::string reply = conn_.read_line();
  if (!starts_with(reply, reply_prefix))
    throw std::runtime_error("beanstalkd: '" + command + "' answered '" + reply + "'");
  return reply;
}

void BeanstalkClient::put_many(const std::string& body, uint64_t n) {
  const std::string put = "put 0 0 60 " + std::to_string(body.size()) + "\r\n" + body + "\r\n";
  for (uint64_t done = 0; done < n;) {
    const uint64_t m = std::min(kPipelined, n - done);
    std::string batch;
    batch.reserve(put.size() * m);
    for (uint64_t i = 0; i < m; ++i) batch += put;
    conn_.write_all(batch);
    for (uint64_t i = 0; i < m; ++i) {
      const std::string reply = conn_.read_line();
      if (!starts_with(reply, "INSERTED "))
        throw std::runtime_error("beanstalkd: a put answered '" + reply + "'");
    }
    done += m;
  }
}

std::optional<uint64_t> BeanstalkClient::reserve() {
  conn_.write_all("reserve-with-timeout 0\r\n");
  const std::string reply = conn_.read_line();
  if (reply == "TIMED_OUT") return std::nullopt;
  // RESERVED <id> <bytes>\r\n<data>\r\n
  if (!starts_with(reply, "RESERVED "))
    throw std::runtime_error("beanstalkd: a reserve answered '" + reply + "'");
  const std::string_view rest = std::string_view(reply).substr(9);
  const size_t space = rest.find(' ');
  if (space == std::string_view::npos)
    throw std::runtime_error("beanstalkd: a bad reply '" + reply + "'");
  const uint64_t id = number(rest.substr(0, space), reply);
  const uint64_t bytes = number(rest.substr(space + 1), reply);
  if (bytes > kMaxJobBytes) throw std::runtime_error("beanstalkd: a job too big: '" + reply + "'");
  const std::string data = conn_.read_exact(bytes + 2);
  if (data.compare(bytes, 2, "\r\n") != 0)
    throw std::runtime_error("beanstalkd: a job's body not ended by CRLF");
  return id;
}

void BeanstalkClient::remove(uint64_t id) {
  const std::string command = "delete " + std::to_string(id);
  conn_.write_all(command + "\r\n");
  const std::string reply = conn_.read_line();
  if (reply != "DELETED")
    throw std::runtime_error("beanstalkd: '" + command + "' answered '" + reply + "'");
}

}  // namespace patro::bench
