// Patro in a Boost.Asio program: the connection's event fd (ClientOptions::continuations =
// event_loop) wrapped in a posix::stream_descriptor; each time it is readable, patro::run_ready
// runs the ready Future::then continuations on the io_context's thread, and none runs elsewhere.
// A chain of COUNT gets of p["abc"], each sent from the previous one's continuation, beside an
// Asio timer that ticks on the same thread.
//
//   patro-example-event-loop-asio CONFIG_FILE [COUNT]
//
// Against the hash example's server (patro-example-hash-server); exits 0 when every answer was
// 123 and every continuation ran on the io_context's thread.
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>

#include <patro/patro.hpp>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: %s CONFIG_FILE [COUNT]\n", argv[0]);
    return 2;
  }
  const long count = argc == 3 ? std::strtol(argv[2], nullptr, 10) : 1000;
  try {
    patro::ClientOptions options;
    options.continuations = patro::Continuations::event_loop;
    patro::Proxy p = patro::get_proxies(argv[1], options).at(0);

    boost::asio::io_context io;
    // The descriptor stays Patro's: release() it before the stream_descriptor goes.
    boost::asio::posix::stream_descriptor events(io, patro::event_fd(p));
    const std::thread::id loop_thread = std::this_thread::get_id();
    long answered = 0, right = 0, elsewhere = 0, ticks = 0;
    bool done = false;

    std::function<void()> next = [&] {
      p["abc"].async_get().then([&](const patro::Future<patro::Value>& f) {
        if (std::this_thread::get_id() != loop_thread) ++elsewhere;
        if (f.get() == 123) ++right;
        if (++answered < count)
          next();
        else
          done = true;
      });
    };
    std::function<void()> watch = [&] {
      events.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [&](const boost::system::error_code& ec) {
                          if (ec) return;
                          patro::run_ready(p);
                          if (!done) watch();
                        });
    };
    boost::asio::steady_timer timer(io);
    std::function<void()> tick = [&] {
      timer.expires_after(std::chrono::milliseconds(1));
      timer.async_wait([&](const boost::system::error_code& ec) {
        ++ticks;
        if (!ec && !done) tick();
      });
    };
    boost::asio::steady_timer give_up(io, std::chrono::minutes(5));
    give_up.async_wait([&](const boost::system::error_code& ec) {
      if (!ec) io.stop();
    });

    next();
    watch();
    tick();
    while (!done && !io.stopped()) io.run_one();
    events.release();
    std::printf("%ld answered, %ld right, %ld elsewhere; the timer ticked meanwhile: %s\n",
                answered, right, elsewhere, ticks > 0 ? "yes" : "no");
    return answered == count && right == count && elsewhere == 0 ? 0 : 1;
  } catch (const patro::Error& e) {
    std::fprintf(stderr, "event-loop-asio: %s\n", e.what());
    return 1;
  }
}
