// The README's hash example, client side.
//
//   patro-example-hash-client CONFIG_FILE
#include <cstdio>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CONFIG_FILE\n", argv[0]);
    return 2;
  }
  try {
    std::vector<patro::Proxy> ps = patro::get_proxies(argv[1]);
    patro::Proxy p = ps.at(0);
    std::printf("ref(p)            = %s\n", patro::ref(p).c_str());
    std::printf("p[\"abc\"]          = %s\n", p["abc"].get().to_string().c_str());
    p["def"][2] = "pqr";
    std::printf("p[\"def\"][2]       = %s (after setting it)\n",
                p["def"][2].get().to_string().c_str());
    patro::Value removed = p["def"][1]["ghi"].erase();
    std::printf("erased def[1]{ghi} = %s\n", removed.to_string().c_str());
    patro::Proxy def = p["def"].get();  // a nested container comes back as a proxy
    std::printf("def has %zu elements; def[-1] = %s\n", def.size(),
                def[-1].get().to_string().c_str());
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "hash-client: %s\n", e.what());
    return 1;
  }
  return 0;
}
