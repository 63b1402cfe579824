// patro-bench's ZeroC Ice peer (ice_peer.hpp). Compiled only where Ice is; ice_peer_none.cpp
// stands in elsewhere.
#include "ice_peer.hpp"

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <future>
#include <stdexcept>

#include <Ice/Ice.h>
#ifdef PATRO_BENCH_ICESSL
#include <Ice/RegisterPlugins.h>
#include <IceSSL/IceSSL.h>
#endif

#include "bench_store.h"

namespace patro::bench {

namespace {

class Store : public PatroBench::Store {
 public:
  long long get(std::string key, const Ice::Current&) override { return key == "k" ? 1 : 0; }
};

// Properties both sides share; with tls_dir, IceSSL's (loaded when the communicator starts).
Ice::InitializationData init_data(const std::string& tls_dir) {
  Ice::InitializationData init;
  init.properties = Ice::createProperties();
  init.properties->setProperty("Ice.Warn.Connections", "0");
  if (!tls_dir.empty()) {
#ifdef PATRO_BENCH_ICESSL
    Ice::registerIceSSL(true);
    init.properties->setProperty("IceSSL.DefaultDir", tls_dir);
    init.properties->setProperty("IceSSL.CAs", "ca.pem");
    // TLS 1.3 only, as a current deployment would run it.
    init.properties->setProperty("IceSSL.Protocols", "tls1_3");
#else
    throw std::runtime_error("built without IceSSL");
#endif
  }
  return init;
}

}  // namespace

bool ice_built() noexcept {
  return true;
}

bool ice_ssl_built() noexcept {
#ifdef PATRO_BENCH_ICESSL
  return true;
#else
  return false;
#endif
}

void write_tls_files(const std::string& dir) {
  // One shell command line: the authority, then the server's key and a certificate for
  // 127.0.0.1 (the name and address the clients verify) that the authority signs.
  const std::string cmd = "cd '" + dir + "' && " +
                          "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
                          "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=patro-bench-ca && "
                          "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                          "-keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
                          "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && "
                          "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
                          "-CAcreateserial -out server.pem -days 2 -extfile server.ext";
  const std::string quiet = "(" + cmd + ") >/dev/null 2>&1";
  if (std::system(quiet.c_str()) != 0)
    throw std::runtime_error("openssl could not write the TLS files in " + dir);
}

int run_ice_server(int threads, const std::string& tls_dir) {
  // Created before any Ice thread, so every thread has SIGINT and SIGTERM blocked and they reach
  // the handler below.
  Ice::CtrlCHandler signals;
  Ice::InitializationData init = init_data(tls_dir);
  const std::string n = std::to_string(threads);
  init.properties->setProperty("Ice.ThreadPool.Server.Size", n);
  init.properties->setProperty("Ice.ThreadPool.Server.SizeMax", n);
  if (!tls_dir.empty()) {
    init.properties->setProperty("IceSSL.CertFile", "server.pem");
    init.properties->setProperty("IceSSL.KeyFile", "server.key");
    // The clients are not asked for certificates: the bench's CURVE broker has no allow list
    // either, so neither side authenticates its clients.
    init.properties->setProperty("IceSSL.VerifyPeer", "0");
  }
  Ice::CommunicatorHolder ich(init);
  auto communicator = ich.communicator();
  signals.setCallback([communicator](int) { communicator->shutdown(); });
  auto adapter = communicator->createObjectAdapterWithEndpoints(
      "Bench", std::string(tls_dir.empty() ? "tcp" : "ssl") + " -h 127.0.0.1 -p 0");
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

IceClient::IceClient(const std::string& proxy, const std::string& tls_dir)
    : impl_(std::make_unique<Impl>()) {
  Ice::InitializationData init = init_data(tls_dir);
  if (!tls_dir.empty()) init.properties->setProperty("IceSSL.CheckCertName", "1");
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

std::string IceClient::cipher() {
#ifdef PATRO_BENCH_ICESSL
  auto info = impl_->store->ice_getConnection()->getInfo();
  for (; info; info = info->underlying) {
    if (auto ssl = std::dynamic_pointer_cast<IceSSL::ConnectionInfo>(info)) return ssl->cipher;
  }
#endif
  return {};
}

bool IceClient::finish_oldest() {
  if (impl_->inflight.empty()) return false;
  auto f = std::move(impl_->inflight.front());
  impl_->inflight.pop_front();
  (void)f.get();
  return true;
}

}  // namespace patro::bench
