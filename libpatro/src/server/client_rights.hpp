// Rights per client key (README "Security"): what each client may do here, as its broker vouches
// for it. A broker with a client allow list whose lines give rights (`names=GLOB,...`,
// `read-only`) tells the server a key's rights with the key (CLIENT_AT, for the direct path) and,
// before the first request of a client's connection reaches the server, which key that connection
// is under (KEY_RIGHTS). A request is then checked against its client's rights before it runs:
// its object must be named by a glob of the key, or be one a reply sent the client (a reference a
// permitted object returned carries the rights of the key that got it); a read-only key may use
// only the operations the op table marks as not mutating, and the methods a served class marked
// read-only. Without CURVE, or from a broker that says nothing of rights, every client may do
// everything (as before). Any thread may call it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mutex.hpp"
#include "object_table.hpp"
#include "patro/curve.hpp"
#include "wire.hpp"

namespace patro::detail {

using Rights = std::shared_ptr<const AllowEntry>;

class ClientRights {
 public:
  /// names: the names of the served objects, by object id (the object half).
  ClientRights(std::unordered_map<uint64_t, std::vector<std::string>> names, ObjectTable& objects)
      : names_(std::move(names)), objects_(objects) {}

  /// A broker says what key may do now (its allow-list line's rights; empty: everything). False
  /// (and nothing changed) for text that does not parse.
  bool set_key(const std::string& key, std::string_view rights) PATRO_EXCLUDES(mu_);
  /// A broker says that the requests it forwards from routing (as the lane marks it) come from
  /// client, under key.
  void bind(std::string routing, uint64_t client, std::string key) PATRO_EXCLUDES(mu_);
  /// A broker says a client is gone: what bind() kept for its connections through that broker is
  /// dropped (not through another: a client that moved keeps its new broker's binding).
  void drop_client(uint64_t client, unsigned broker) PATRO_EXCLUDES(mu_);

  /// Whether any key is limited: while none is, requests are not looked up at all.
  bool any() const noexcept { return any_.load(std::memory_order_acquire); }
  /// The rights of a request that came through a broker by this routing, or directly under this
  /// key; null: everything.
  Rights of_routing(std::string_view routing) const PATRO_EXCLUDES(mu_);
  Rights of_key(const std::string& key) const PATRO_EXCLUDES(mu_);

  /// Why rights do not let the request run (its text, naming the operation and the object's
  /// name), or nothing. A read-only key's calls pass here: the method decides (served_ops).
  /// target: the object the request runs on (its own, or a pipelined call's result).
  std::optional<std::string> refusal(const AllowEntry& rights, const wire::Request& req,
                                     const ObjectId& target) const;
  /// Whether rights reach object (this server's): by a name, or held by client.
  bool reaches(const AllowEntry& rights, uint64_t client, uint64_t object) const;
  /// How a refusal names an object: 'its first name', or object <id> for one without a name.
  std::string name_of(uint64_t object) const;
  /// Refusals counted (metrics: the server's heartbeats carry it to the broker).
  void count_refusal() const noexcept { refused_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t refused() const noexcept { return refused_.load(std::memory_order_relaxed); }

  /// Most connections bind() remembers: past it the oldest is forgotten (its broker tells the
  /// server again only after the client reconnects, so a forgotten one is logged).
  static constexpr size_t kMaxBound = 1'000'000;

 private:
  struct Bound {
    uint64_t client = 0;
    std::string key;
  };
  const std::unordered_map<uint64_t, std::vector<std::string>> names_;
  ObjectTable& objects_;
  mutable Mutex mu_;
  std::unordered_map<std::string, Rights> keys_ PATRO_GUARDED_BY(mu_);  // limited keys only
  std::unordered_map<std::string, Bound> bound_ PATRO_GUARDED_BY(mu_);
  std::unordered_multimap<uint64_t, std::string> routings_ PATRO_GUARDED_BY(mu_);  // by client
  std::atomic<bool> any_{false};
  mutable std::atomic<uint64_t> refused_{0};
};

}  // namespace patro::detail
