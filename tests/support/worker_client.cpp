// A client of patro-worker for multi-process tests. ENDPOINT is the broker's client endpoint.
//   produce ENDPOINT QUEUE FIRST COUNT BATCH OUT   pushes jobs FIRST..FIRST+COUNT-1 in batches;
//                                                  appends each acknowledged job to OUT
//   consume ENDPOINT QUEUE BATCH OUT IDLE_MS       takes and acks jobs in batches; appends each
//                                                  acknowledged job to OUT; stops after IDLE_MS
//                                                  with nothing to take
//   hold ENDPOINT QUEUE BATCH OUT                  takes a batch, writes OUT, never acks; sleeps
//   log ENDPOINT LOG TAG COUNT BATCH OUT           writes COUNT lines "TAG i" (BATCH per call);
//                                                  appends each acknowledged line's i to OUT
//   changes ENDPOINT HASH COUNTER COUNT OUT        COUNT hash sets k<i>=i and counter adds;
//                                                  appends each acknowledged i to OUT
// Before MODE, --timeout-ms N sets each call's deadline (default 60000): a client that outlives
// a kill -9 of the worker fails at it, since its calls are retried until then. --pace-us N waits
// N microseconds before each produce or log call; --route auto|direct|broker picks the route.
// ENDPOINT may list several brokers, comma-separated.
// Exit status: 0 done, 1 a Patro error.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <patro/patro.hpp>

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  patro::ClientOptions co;
  co.call_timeout = 60s;
  long pace_us = 0;
  for (bool more = true; more && argc > 2;) {
    const std::string opt = argv[1];
    if (opt == "--timeout-ms") {
      co.call_timeout = std::chrono::milliseconds(std::atol(argv[2]));
      if (co.call_timeout.count() <= 0) return 2;
    } else if (opt == "--pace-us") {
      pace_us = std::atol(argv[2]);
    } else if (opt == "--route") {
      co.route = patro::parse_route(argv[2]);
    } else {
      more = false;
      continue;
    }
    argv += 2;
    argc -= 2;
  }
  auto pace = [&] {
    if (pace_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(pace_us));
  };
  if (argc < 4) return 2;
  const std::string mode = argv[1], endpoint = argv[2];
  try {
    patro::Proxy obj = patro::get_proxy(endpoint, argv[3], co);
    if (mode == "produce" && argc == 8) {
      const long first = std::atol(argv[4]), count = std::atol(argv[5]), batch = std::atol(argv[6]);
      std::ofstream out(argv[7], std::ios::app);
      for (long i = first; i < first + count; i += batch) {
        patro::ValueArray jobs;
        for (long j = i; j < std::min(first + count, i + batch); ++j) jobs.push_back(j);
        pace();
        (void)obj.call("push_many", patro::Value(jobs));
        for (const auto& j : jobs) out << j.as<int64_t>() << '\n';
        out.flush();
      }
    } else if (mode == "consume" && argc == 7) {
      const long batch = std::atol(argv[4]);
      const long idle_ms = std::atol(argv[6]);
      std::ofstream out(argv[5], std::ios::app);
      for (int rounds = 0; rounds < 1000000; ++rounds) {
        patro::Value got = obj.call("take_many", batch, idle_ms);
        if (got.size() == 0) break;
        patro::ValueArray pairs;
        for (const auto& t : *got.if_array()) pairs.push_back(patro::Value::array({t[0], t[2]}));
        patro::Value acked = obj.call("ack_many", patro::Value(pairs));
        for (size_t k = 0; k < got.size(); ++k)
          if (acked[k] == true) out << got[k][1].as<int64_t>() << '\n';
        out.flush();
      }
    } else if (mode == "hold" && argc == 6) {
      patro::Value got = obj.call("take_many", std::atol(argv[4]), 10000);
      {
        std::ofstream out(std::string(argv[5]) + ".tmp");
        for (const auto& t : *got.if_array()) out << t[1].as<int64_t>() << '\n';
      }
      std::rename((std::string(argv[5]) + ".tmp").c_str(), argv[5]);
      std::this_thread::sleep_for(60s);
    } else if (mode == "log" && argc == 8) {
      const std::string tag = argv[4];
      const long count = std::atol(argv[5]), batch = std::atol(argv[6]);
      std::ofstream out(argv[7], std::ios::app);
      for (long i = 0; i < count; i += batch) {
        patro::ValueArray lines;
        for (long j = i; j < std::min(count, i + batch); ++j)
          lines.push_back(tag + " " + std::to_string(j) + " " + std::string(40, 'x'));
        pace();
        if (batch == 1)
          (void)obj.call("write", lines.front());
        else
          (void)obj.call("write_many", patro::Value(lines));
        for (long j = i; j < std::min(count, i + batch); ++j) out << j << '\n';
        out.flush();
      }
    } else if (mode == "changes" && argc == 7) {
      patro::Proxy counter = patro::get_proxy(endpoint, argv[4], co);
      const long count = std::atol(argv[5]);
      std::ofstream out(argv[6], std::ios::app);
      for (long i = 0; i < count; ++i) {
        (void)obj.call("set", "k" + std::to_string(i), i);
        (void)counter.call("add", 1);
        out << i << '\n';
        out.flush();
      }
    } else {
      return 2;
    }
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "worker-client: %s\n", e.what());
    return 1;
  }
  return 0;
}
