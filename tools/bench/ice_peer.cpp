// patro-bench's ZeroC Ice peer (ice_peer.hpp). Compiled only where Ice is; ice_peer_none.cpp
// stands in elsewhere.
#include "ice_peer.hpp"

#include <cstdio>
#include <deque>
#include <future>
#include <stdexcept>

#include <Ice/Ice.h>

#include "bench_store.h"

namespace patro::bench {

namespace {

class Store : public PatroBench::Store {
 public:
  long long get(std::string key, const Ice::Current&) override { return key == "k" ? 1 : 0; }
};

}  // namespace

bool ice_built() noexcept {
  return true;
}

int run_ice_server(int threads) {
  // Created before any Ice thread, so every thread has SIGINT and SIGTERM blocked and they reach
  // the handler below.
  Ice::CtrlCHandler signals;
  Ice::InitializationData init;
  init.properties = Ice::createProperties();
  const std::string n = std::to_string(threads);
  init.properties->setProperty("Ice.ThreadPool.Server.Size", n);
  init.properties->setProperty("Ice.ThreadPool.Server.SizeMax", n);
  init.properties->setProperty("Ice.Warn.Connections", "0");
  Ice::CommunicatorHolder ich(init);
  auto communicator = ich.communicator();
  signals.setCallback([communicator](int) { communicator->shutdown(); });
  auto adapter = communicator->createObjectAdapterWithEndpoints("Bench", "tcp -h 127.0.0.1 -p 0");
  auto proxy = adapter->add(std::make_shared<Store>(), Ice::stringToIdentity("store"));
  adapter->activate();
  std::printf("%s\n", proxy->ice_toString().c_str());
  std::fflush(stdout);
  communicator->waitForShutdown();
  return 0;
}

struct IceClient::Impl {
  Ice::CommunicatorHolder ich;
  std::shared_ptr<PatroBench::StorePrx> store;
  std::deque<std::future<long long>> inflight;
  const std::string key = "k";
};

IceClient::IceClient(const std::string& proxy) : impl_(std::make_unique<Impl>()) {
  Ice::InitializationData init;
  init.properties = Ice::createProperties();
  init.properties->setProperty("Ice.Warn.Connections", "0");
  impl_->ich = Ice::CommunicatorHolder(init);
  impl_->store = Ice::uncheckedCast<PatroBench::StorePrx>(impl_->ich->stringToProxy(proxy));
  if (!impl_->store) throw std::runtime_error("not an Ice proxy: " + proxy);
}

IceClient::~IceClient() {
  try {
    while (finish_oldest()) {
    }
  } catch (...) {
  }
}

int64_t IceClient::get() {
  return impl_->store->get(impl_->key);
}

void IceClient::start_get() {
  impl_->inflight.push_back(impl_->store->getAsync(impl_->key));
}

bool IceClient::finish_oldest() {
  if (impl_->inflight.empty()) return false;
  auto f = std::move(impl_->inflight.front());
  impl_->inflight.pop_front();
  (void)f.get();
  return true;
}

}  // namespace patro::bench
