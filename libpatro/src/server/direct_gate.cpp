#include "direct_gate.hpp"

#include <patro/curve.hpp>

#include "socket.hpp"

namespace patro::detail {

DirectGate::DirectGate(zmq::context_t& ctx) : sock_(ctx, zmq::socket_type::rep) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { run(); });
}

DirectGate::~DirectGate() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

bool DirectGate::vouch(const std::string& key) {
  if (!is_curve_key(key)) return false;
  MutexLock lock(mu_);
  revoked_.erase(key);  // allowed again (a SIGHUP put it back on the list)
  if (!vouched_.insert(key).second) return true;
  order_.push_back(key);
  while (order_.size() > kMaxKeys) {
    vouched_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

void DirectGate::revoke(const std::string& key) {
  MutexLock lock(mu_);
  vouched_.erase(key);
  if (revoked_.size() < kMaxKeys) revoked_.insert(key);
  any_revoked_.store(true, std::memory_order_release);
}

bool DirectGate::revoked(const std::string& key) {
  if (!any_revoked()) return false;
  MutexLock lock(mu_);
  return revoked_.count(key) != 0;
}

void DirectGate::run() {
  std::vector<zmq::message_t> req;
  while (!stopping_) {
    try {
      if (!poll_in(sock_, std::chrono::milliseconds(100))) continue;
      if (!recv_multipart(sock_, req, true)) continue;
      answer(req);
    } catch (const std::exception& e) {
      PATRO_LOG(error, "server") << "direct ZAP handler: " << e.what() << "; going on";
    }
  }
}

// [version][request id][domain][address][identity][mechanism][credentials...]
void DirectGate::answer(std::vector<zmq::message_t>& req) {
  const std::string key = zap_curve_key(req);
  bool ok = false;
  if (!key.empty()) {
    MutexLock lock(mu_);
    ok = vouched_.count(key) != 0;
  }
  if (!ok) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    PATRO_LOG_LIMITED(info, "server", refusals_)
        << "refused a direct connection from "
        << (req.size() >= 4 ? std::string(req[3].to_string_view()) : std::string("?"))
        << " with key " << (key.empty() ? std::string("(none)") : key_fingerprint(key))
        << ": no broker vouched for it (yet: a client connects again after a while)";
  }
  zap_answer(sock_, req, ok, "not vouched for by a broker", key);
}

}  // namespace patro::detail
