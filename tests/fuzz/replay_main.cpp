// Runs a fuzz target over files and directories of inputs (its checked-in corpus), so the normal
// test run, with any compiler, replays what the fuzzers found. Exits 1 if no input was found.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {
int run_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A copy of exactly the input's size, so that ASan sees a read past its end.
  std::vector<uint8_t> data(bytes.begin(), bytes.end());
  // libFuzzer never passes a null pointer, even for an empty input; nor does this.
  static const uint8_t empty = 0;
  LLVMFuzzerTestOneInput(data.empty() ? &empty : data.data(), data.size());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    if (std::filesystem::is_directory(arg)) {
      for (const auto& e : std::filesystem::directory_iterator(arg))
        if (e.is_regular_file()) n += run_file(e.path());
    } else {
      n += run_file(arg);
    }
  }
  std::printf("replayed %d inputs\n", n);
  return n > 0 ? 0 : 1;
}
