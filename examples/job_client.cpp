// A client of patro-worker's main job: producers push jobs; consumers take them, write a log line
// for each, acknowledge them, and count what they did in a shared counter under its lock.
//
//   patro-example-jobs produce ENDPOINT COUNT
//   patro-example-jobs consume ENDPOINT NAME
//   patro-example-jobs counter ENDPOINT -      prints the counter
#include <cstdio>
#include <cstdlib>
#include <string>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s produce ENDPOINT COUNT | consume ENDPOINT NAME\n", argv[0]);
    return 2;
  }
  const std::string role = argv[1], endpoint = argv[2];
  try {
    patro::Proxy jobs = patro::get_proxy(endpoint, "jobs");
    if (role == "produce") {
      const int count = std::atoi(argv[3]);
      for (int i = 0; i < count; ++i) jobs.call("push", "job " + std::to_string(i));
      std::printf("producer: pushed %d jobs\n", count);
      return 0;
    }
    patro::Proxy done = patro::get_proxy(endpoint, "done");
    if (role == "counter") {
      std::printf("%s\n", done.call("get").to_string().c_str());
      return 0;
    }
    patro::Proxy log = patro::get_proxy(endpoint, "events");
    const std::string me = argv[3];
    int taken = 0;
    for (;;) {
      // Blocks on the server (no polling) until a job comes, or 1 s passes with none.
      patro::Value job = jobs.call("take", 1000);
      if (job.is_null()) break;
      log.call("write", me + " did " + job[1].as<std::string>());
      jobs.call("ack", job[0], job[2]);
      ++taken;
    }
    // A read-modify-write of the shared counter: safe only under its lock.
    patro::synchronize(done, [&] {
      const int64_t before = done.call("get").as<int64_t>();
      done.call("set", before + taken);
    });
    std::printf("%s: took, logged and acknowledged %d jobs\n", me.c_str(), taken);
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return 1;
  }
  return 0;
}
