// Patro in a program's own event loop (a plain poll(2) loop): the connection is made with
// ClientOptions::continuations = event_loop, so Future::then continuations never run on a thread
// of Patro's; its event fd becomes readable when some are ready, and patro::run_ready runs them
// here, on the loop's thread. The loop keeps 64 gets of p["abc"] in flight until COUNT answered.
//
//   patro-example-event-loop-poll CONFIG_FILE [COUNT]
//
// Against the hash example's server (patro-example-hash-server). Prints how many continuations
// ran on the loop's thread and how many elsewhere (none), and exits 0 when every answer was 123.
#include <poll.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CONFIG_FILE [COUNT]\n", argv[0]);
    return 2;
  }
  const long count = argc == 3 ? std::strtol(argv[2], nullptr, 10) : 10000;
  try {
    patro::ClientOptions options;
    options.continuations = patro::Continuations::event_loop;
    patro::Proxy p = patro::get_proxies(argv[1], options).at(0);
    const std::thread::id loop_thread = std::this_thread::get_id();
    long sent = 0, answered = 0, right = 0, on_loop = 0, elsewhere = 0;
    // Sends one more get; its continuation runs in run_ready below, on this thread.
    auto send_one = [&] {
      ++sent;
      p["abc"].async_get().then([&](const patro::Future<patro::Value>& f) {
        ++answered;
        (std::this_thread::get_id() == loop_thread ? on_loop : elsewhere) += 1;
        if (f.get() == 123) ++right;
      });
    };
    for (int i = 0; i < 64 && sent < count; ++i) send_one();
    pollfd fds[1] = {{patro::event_fd(p), POLLIN, 0}};
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while (answered < count && std::chrono::steady_clock::now() < give_up) {
      // A real program polls its other descriptors here too.
      if (poll(fds, 1, 1000) < 0) return 1;
      if (!(fds[0].revents & POLLIN)) continue;
      const long before = answered;
      patro::run_ready(p);
      for (long n = answered - before; n > 0 && sent < count; --n) send_one();
    }
    std::printf("%ld answered, %ld right; %ld continuations on the loop's thread, %ld elsewhere\n",
                answered, right, on_loop, elsewhere);
    return answered == count && right == count && elsewhere == 0 ? 0 : 1;
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "event-loop-poll: %s\n", e.what());
    return 1;
  }
}
