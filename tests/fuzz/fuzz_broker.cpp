// Fuzz target: the broker fed a sequence of messages from several fake peers on both ports
// (clients on the front, servers on the back), through its handlers with no peer sockets
// (detail::BrokerDriver), with its timers run as time passes. A fresh broker per input, so an
// input's effect is its own. It must never crash or hang, and what it remembers is bounded by
// the peers that spoke: at most one server per back peer, one client per front peer, and none
// after two hours of silence.
//
// Input: messages, each a control byte (bits 0-2: the peer, bit 3: the back port, bits 4-7: how
// many half-seconds pass before it, the timers then running), a frame count byte (0-7, & 7), then
// that many frames, each a 2-byte little-endian length and that many bytes (a short last frame
// takes what is left). The peer's routing id (peer_routing) is prepended as the first frame.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "broker_driver.hpp"
#include "fuzz_common.hpp"
#include "patro/broker.hpp"
#include "patro/logging.hpp"

namespace {
constexpr unsigned kPeers = 8;

// The routing id of peer p: 5 bytes, as a ROUTER makes them (make_corpus.cpp writes the same).
std::string peer_routing(unsigned p) {
  return std::string("\0pee", 4) + static_cast<char>('0' + p);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (patro::set_log_level(patro::LogLevel::error), true);
  (void)quiet;
  using Driver = patro::detail::BrokerDriver;
  patro::BrokerOptions o;
  // inproc, in the broker's own context: nothing can connect, so every send is dropped.
  o.frontend = "inproc://fuzz-front";
  o.backend = "inproc://fuzz-back";
  patro::Broker broker(o);
  auto now = std::chrono::steady_clock::now();
  size_t at = 0;
  while (at + 2 <= size) {
    const uint8_t ctl = data[at];
    const unsigned peer = ctl & (kPeers - 1);
    const bool back = (ctl & 8) != 0;
    const unsigned frames = data[at + 1] & 7;
    at += 2;
    if (const unsigned wait = ctl >> 4; wait != 0) {
      now += std::chrono::milliseconds(500) * wait;
      Driver::tick(broker, now);
    }
    patro::detail::Multipart f;
    const std::string routing = peer_routing(peer);
    f.emplace_back(routing.data(), routing.size());
    for (unsigned i = 0; i < frames && at <= size; ++i) {
      size_t n = at < size ? data[at] : 0;
      if (at + 1 < size) n |= static_cast<size_t>(data[at + 1]) << 8;
      at = std::min(size, at + 2);
      n = std::min(n, size - at);
      f.push_back(patro::fuzz::frame_of(data + at, n));
      at += n;
    }
    Driver::deliver(broker, back, f, now);
  }
  const patro::BrokerStats s = broker.stats();
  if (s.servers > kPeers || s.clients > kPeers) std::abort();
  // An hour of silence later every peer is forgotten.
  Driver::tick(broker, now + std::chrono::hours(2));
  const patro::BrokerStats later = broker.stats();
  if (later.servers != 0 || later.clients != 0) std::abort();
  return 0;
}
