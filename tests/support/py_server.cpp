// A server for the Python client's tests (tests/python). Serves, in this order and by name:
//   0 h       the hash of the README {"abc": 123, "def": [456, {"ghi": "jkl"}, "mno"]}
//   1 foofie  Foofie(17): blerp gives (5, 6, 7, v) in list context and ++v in scalar context
//   2 sq      sub { $_[0] = $_[0] * $_[0]; 19 } (changes its argument)
//   3 add42   a callable of one integer: x + 42
//   4 counter a hash {"n": 0}, for lock tests
//   5 money   Money(1000 cents): withdraw(c) throws Overdrawn past the balance
//   6 fh      with --file PATH: PATH opened "+<" (read and write), as a served file handle
//   last      slow_hash(ms): sleeps ms, then returns a new hash {"slept": ms} (a reference)
// writes its config to CONFIG and runs until SIGTERM/SIGINT.
//
//   patro-test-py-server CONFIG [--broker ENDPOINT] [--heartbeat-ms N] [--threads N] [--name NAME]
//                               [--file PATH] [--server-id N] [--broker-key Z85|FILE]
//                               [--curve-key FILE] [--lease-ms N]
// --server-id: a fixed server id (decimal), so a restarted server serves the same object ids.
// With --broker-key (CURVE), the config it writes carries the broker's key.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "example_classes.hpp"

int main(int argc, char** argv) {
  patro::TerminationSignals signals;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG [options]\n", argv[0]);
    return 2;
  }
  patro::ServerOptions opts;
  std::string file, broker_key, curve_key;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--broker")
      opts.broker = argv[i + 1];
    else if (a == "--heartbeat-ms")
      opts.heartbeat.interval = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    else if (a == "--threads")
      opts.threads = static_cast<unsigned>(std::atoi(argv[i + 1]));
    else if (a == "--name")
      opts.name = argv[i + 1];
    else if (a == "--file")
      file = argv[i + 1];
    else if (a == "--server-id")
      opts.server_id = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--broker-key")
      broker_key = argv[i + 1];
    else if (a == "--curve-key")
      curve_key = argv[i + 1];
    else if (a == "--lease-ms")
      opts.reference_lease = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    else {
      std::fprintf(stderr, "bad option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    if (!broker_key.empty()) opts.curve.broker_key = patro::read_public_key(broker_key);
    if (!curve_key.empty()) opts.curve.keys = patro::read_key_file(curve_key);
    patro::test::register_example_classes();
    auto h =
        patro::Hash{{"abc", 123}, {"def", patro::Array{456, patro::Hash{{"ghi", "jkl"}}, "mno"}}};
    auto foofie = std::make_shared<patro::test::Foofie>(patro::test::Foofie{17});
    patro::Code sq = [](patro::Args& a) -> patro::Value {
      a[0] = a[0].as<int64_t>() * a[0].as<int64_t>();
      return 19;
    };
    patro::Code add42 = [](int64_t x) { return x + 42; };
    patro::Hash counter{{"n", 0}};
    auto money = std::make_shared<patro::test::Money>(patro::test::Money{1000});
    std::vector<patro::Named> objects{patro::named("h", h),
                                      patro::named("foofie", foofie),
                                      patro::named("sq", sq),
                                      patro::named("add42", add42),
                                      patro::named("counter", counter),
                                      patro::named("money", money)};
    if (!file.empty()) objects.push_back(patro::named("fh", patro::FileHandle::open(file, "+<")));
    // Last: a callable that sleeps ms, then returns a new hash (a reference).
    patro::Code slow_hash = [](int64_t ms) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      return patro::Hash{{"slept", ms}};
    };
    objects.push_back(patro::named("slow_hash", slow_hash));
    auto cfg = patro::patronize(opts, std::move(objects));
    cfg.to_file(argv[1]);
    signals.wait();
    cfg.stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "py-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
