// A direct ROUTER off loopback in plaintext needs --insecure, as a broker's port does.
// Nothing here binds off loopback: the refusal comes before any bind, and with
// --insecure the bind to 192.0.2.2 (TEST-NET-1, on no interface) fails and the worker serves
// through its broker.
#include <doctest/doctest.h>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::redirected;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {
std::vector<std::string> worker(const TempDir& dir, const std::string& direct, bool insecure) {
  std::vector<std::string> a{program("PATRO_WORKER"),
                             "--front",
                             "tcp://127.0.0.1:*",
                             "--back",
                             "tcp://127.0.0.1:*",
                             "--threads",
                             "2",
                             "--direct",
                             direct,
                             "--config-out",
                             dir.file("worker.conf"),
                             "queue",
                             "jobs"};
  if (insecure) a.push_back("--insecure");
  return a;
}
}  // namespace

TEST_CASE("patro-worker --direct off loopback without --insecure is refused before binding") {
  TempDir dir;
  const std::string err = dir.file("err");
  Process w(redirected(worker(dir, "tcp://192.0.2.2:*", false), err));
  const auto status = w.wait(30s);
  REQUIRE(status.has_value());
  CHECK(*status == 1);
  const std::string text = read_file(err);
  CHECK(text.find("refusing to bind the direct path at tcp://192.0.2.2:* without CURVE") !=
        std::string::npos);
  CHECK(text.find("--insecure") != std::string::npos);
  CHECK(read_file(dir.file("worker.conf")).empty());  // it never served
}

TEST_CASE("with --insecure the check passes; loopback needs nothing") {
  TempDir dir;
  const std::string err = dir.file("err");
  {
    Process w(redirected(worker(dir, "tcp://192.0.2.2:*", true), err));
    REQUIRE(wait_for_file(dir.file("worker.conf"), 30s));  // serving
    CHECK(w.stop() == 0);
    CHECK(read_file(err).find("refusing") == std::string::npos);
  }
  std::remove(dir.file("worker.conf").c_str());
  Process w(redirected(worker(dir, "tcp://127.0.0.1:*", false), err));
  REQUIRE(wait_for_file(dir.file("worker.conf"), 30s));
  CHECK(w.stop() == 0);
}
