// patro-bench without its Ice peer (Ice was not found, or -Dice=disabled): the Ice rows say
// "skipped (not built)".
#include "ice_peer.hpp"

#include <cstdio>
#include <stdexcept>

namespace patro::bench {

struct IceClient::Impl {};

bool ice_built() noexcept {
  return false;
}

bool ice_ssl_built() noexcept {
  return false;
}

int run_ice_server(int, const std::string&) {
  std::fprintf(stderr, "patro-bench: built without ZeroC Ice\n");
  return 1;
}

void write_tls_files(const std::string&) {
  throw std::runtime_error("built without ZeroC Ice");
}

IceClient::IceClient(const std::string&, const std::string&) {
  throw std::runtime_error("built without ZeroC Ice");
}
IceClient::~IceClient() = default;
int64_t IceClient::get() {
  return 0;
}
void IceClient::start_get() {}
bool IceClient::finish_oldest() {
  return false;
}
std::string IceClient::cipher() {
  return {};
}

}  // namespace patro::bench
