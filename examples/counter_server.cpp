// The typed-stub example, server side: a Counter described in counter.patro, registered with the
// generated demo::register_counter<Counter>() (README "Typed stubs"). Also serves a hash, which
// is not a Counter (the client's CounterProxy::checked refuses it).
//
//   patro-example-counter-server CONFIG_FILE [BROKER_SERVER_ENDPOINT]
//
// With no broker endpoint it embeds a broker. Runs until SIGINT/SIGTERM, then prints the total.
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <patro/patro.hpp>

#include "counter_stub.hpp"

namespace {

// The implementation: plain C++, no Values. register_counter checks at compile time that it has
// every method of counter.patro with arguments and results that convert.
class Counter {
 public:
  explicit Counter(std::string name) : name_(std::move(name)) {}
  int64_t add(int64_t n) {
    history_.push_back(n);
    return total_ += n;
  }
  int64_t get() const { return total_; }
  std::string name() const { return name_; }
  void rename(std::string name) { name_ = std::move(name); }
  void reset() {
    total_ = 0;
    history_.clear();
  }
  double mean() const {
    return history_.empty() ? 0.0
                            : static_cast<double>(total_) / static_cast<double>(history_.size());
  }
  bool empty() const { return history_.empty(); }
  std::vector<int64_t> history() const { return history_; }
  int64_t add_all(const std::vector<int64_t>& ns) {
    for (int64_t n : ns) add(n);
    return total_;
  }
  patro::Bytes snapshot() const {
    patro::Bytes b;
    for (int i = 0; i < 8; ++i)
      b.data.push_back(static_cast<char>((static_cast<uint64_t>(total_) >> (8 * i)) & 0xff));
    return b;
  }
  patro::Value describe() const {
    return patro::Value::hash(
        {{"name", name_}, {"total", total_}, {"count", static_cast<int64_t>(history_.size())}});
  }

 private:
  std::string name_;
  int64_t total_ = 0;
  std::vector<int64_t> history_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CONFIG_FILE [BROKER_SERVER_ENDPOINT]\n", argv[0]);
    return 2;
  }
  patro::TerminationSignals signals;
  try {
    demo::register_counter<Counter>();
    auto counter = std::make_shared<Counter>("clicks");
    patro::Hash not_a_counter{{"total", 0}};
    patro::ServerOptions opts;
    if (argc == 3) opts.broker = argv[2];
    patro::Config cfg = patro::patronize(opts, counter, not_a_counter);
    cfg.to_file(argv[1]);
    std::printf("serving; config in %s\n", argv[1]);
    std::fflush(stdout);
    signals.wait();
    cfg.stop();
    std::printf("server sees: %s total=%lld\n", counter->name().c_str(),
                static_cast<long long>(counter->get()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "counter-server: %s\n", e.what());
    return 1;
  }
  return 0;
}
