#include "client_rights.hpp"

#include "log.hpp"
#include "op_table.hpp"
#include "rights.hpp"
#include "routing.hpp"

namespace patro::detail {

bool ClientRights::set_key(const std::string& key, std::string_view rights) {
  if (!is_curve_key(key)) return false;
  AllowEntry e;
  try {
    e = rights_from_text(rights);
  } catch (const Error& err) {
    PATRO_LOG(warn, "server") << "rights for client key " << key_fingerprint(key)
                              << " that do not parse (" << err.what() << "): ignored";
    return false;
  }
  e.key = key;
  MutexLock lock(mu_);
  if (!e.restricted()) {
    keys_.erase(key);
    return true;
  }
  keys_[key] = std::make_shared<const AllowEntry>(std::move(e));
  any_.store(true, std::memory_order_release);
  return true;
}

void ClientRights::bind(std::string routing, uint64_t client, std::string key) {
  MutexLock lock(mu_);
  if (bound_.size() >= kMaxBound && bound_.find(routing) == bound_.end()) {
    PATRO_LOG(error, "server") << "more than " << kMaxBound
                               << " client connections bound to keys: forgetting one";
    bound_.erase(bound_.begin());
  }
  auto& b = bound_[routing];
  if (b.client != client) {
    if (b.client != 0) {
      auto [first, last] = routings_.equal_range(b.client);
      for (auto it = first; it != last; ++it)
        if (it->second == routing) {
          routings_.erase(it);
          break;
        }
    }
    if (client != 0) routings_.emplace(client, routing);
  }
  b.client = client;
  b.key = std::move(key);
}

void ClientRights::drop_client(uint64_t client, unsigned broker) {
  MutexLock lock(mu_);
  auto [it, last] = routings_.equal_range(client);
  while (it != last) {
    if (routing_broker(it->second) == broker) {
      bound_.erase(it->second);
      it = routings_.erase(it);
    } else {
      ++it;
    }
  }
}

Rights ClientRights::of_key(const std::string& key) const {
  MutexLock lock(mu_);
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : it->second;
}

Rights ClientRights::of_routing(std::string_view routing) const {
  MutexLock lock(mu_);
  auto b = bound_.find(std::string(routing));
  if (b == bound_.end()) return nullptr;
  auto it = keys_.find(b->second.key);
  return it == keys_.end() ? nullptr : it->second;
}

std::string ClientRights::name_of(uint64_t object) const {
  auto it = names_.find(object);
  if (it != names_.end() && !it->second.empty()) return "'" + it->second.front() + "'";
  return "object " + ObjectId{objects_.server_id(), object}.to_hex();
}

bool ClientRights::reaches(const AllowEntry& rights, uint64_t client, uint64_t object) const {
  if (rights.names.empty()) return true;
  if (auto it = names_.find(object); it != names_.end())
    for (const auto& n : it->second)
      if (rights.reaches(n)) return true;
  // A reference a reply sent this client (from an object it could reach) carries its rights.
  return objects_.held_by(client, object);
}

std::optional<std::string> ClientRights::refusal(const AllowEntry& rights, const wire::Request& req,
                                                 const ObjectId& target) const {
  const wire::Op op = req.op();
  const OpInfo& info = op_info(op);
  if (op == wire::Op::Release) return std::nullopt;  // letting go of a reference is always allowed
  auto why = [&](const std::string& because) {
    return std::string(info.name) + " on " + name_of(target.object) +
           " refused: this client's key (" + key_fingerprint(rights.key) + ") " + because;
  };
  if (target.server == objects_.server_id() && !reaches(rights, req.client_id(), target.object)) {
    std::string globs;
    for (const auto& g : rights.names) globs += (globs.empty() ? "" : ", ") + g;
    return why("may reach only the names " + globs + " and the references their objects returned");
  }
  // A call's method decides (Class::read_only_method); every other mutating op is refused.
  if (rights.read_only && info.mutating && op != wire::Op::Call)
    return why("is read-only (allow list: read-only)");
  return std::nullopt;
}

}  // namespace patro::detail
