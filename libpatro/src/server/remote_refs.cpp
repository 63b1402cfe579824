#include "remote_refs.hpp"

#include <atomic>

#include "log.hpp"

namespace patro::detail {

namespace {
std::atomic<RemoteRefs::Factory> factory_{nullptr};

Value plain(const ObjectId& id, const std::string& type_name, const std::string& reftype) {
  return Value(Reference{nullptr, nullptr, id, {}, type_name, reftype, {}, false});
}
}  // namespace

void RemoteRefs::set_factory(Factory factory) noexcept {
  factory_.store(factory);
}

Value RemoteRefs::make(const ObjectId& id, const std::string& type_name, const std::string& reftype,
                       uint64_t pass) {
  Maker maker;
  {
    MutexLock lock(mu_);
    if (!maker_ && !failed_ && !closed_) {
      Factory f = factory_.load();
      try {
        if (f == nullptr) throw Error(Errc::unsupported, "no client connections in this library");
        const std::vector<std::string> brokers = brokers_();
        if (brokers.empty()) throw Error(Errc::broker_unreachable, "not registered yet");
        maker_ = f(brokers, curve_);
      } catch (const std::exception& e) {
        failed_ = true;
        PATRO_LOG(warn, "server") << "references to other servers' objects cannot be called from "
                                     "this server (no connection of its own: "
                                  << e.what() << ")";
      }
    }
    maker = maker_;
  }
  return maker ? maker(id, type_name, reftype, pass) : plain(id, type_name, reftype);
}

void RemoteRefs::close() {
  Maker gone;
  MutexLock lock(mu_);
  closed_ = true;
  gone.swap(maker_);
  lock.unlock();
}

}  // namespace patro::detail
