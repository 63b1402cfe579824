// The README's hash example, server side: serves a nested hash and writes its config.
//
//   patro-example-hash-server CONFIG_FILE [BROKER_SERVER_ENDPOINT]
//
// With no broker endpoint it embeds a broker. Runs until SIGINT/SIGTERM, then prints the hash
// as this process sees it (with every change clients made).
#include <cstdio>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CONFIG_FILE [BROKER_SERVER_ENDPOINT]\n", argv[0]);
    return 2;
  }
  patro::TerminationSignals signals;
  try {
    auto h =
        patro::Hash{{"abc", 123}, {"def", patro::Array{456, patro::Hash{{"ghi", "jkl"}}, "mno"}}};
    patro::ServerOptions opts;
    if (argc == 3) opts.broker = argv[2];
    patro::Config cfg = patro::patronize(opts, h);
    cfg.to_file(argv[1]);
    std::printf("serving; config in %s\n", argv[1]);
    std::fflush(stdout);
    signals.wait();
    cfg.stop();
    auto def = h.get("def").as<patro::Array>();
    std::printf("server sees: abc=%s def[2]=%s def[1]{ghi} exists=%s\n",
                h.get("abc").to_string().c_str(), def.get(2).to_string().c_str(),
                def.get(1).as<patro::Hash>().exists("ghi") ? "yes" : "no");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hash-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
