// Perl Patro's documented examples across processes: broker, server and clients each in their
// own process. Also the documentation's first example, network file synchronization: four client
// processes print through one served file handle at once.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <sstream>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {}  // namespace

TEST_CASE("Foofie, Barfie, the code reference, the dispatch table and the log file handle") {
  TempDir dir;
  BrokerProcess broker(dir);
  const std::string conf = dir.file("objects.conf"), log = dir.file("host1.log");
  Process server({program("PATRO_TEST_OBJECTS_SERVER"), conf, log, "--broker", broker.back,
                  "--heartbeat-ms", "100"},
                 dir.file("server.out"));
  REQUIRE(wait_for_file(conf, 10s));
  Process client({program("PATRO_TEST_OBJECTS_CLIENT"), "examples", conf}, dir.file("client.out"));
  CHECK(client.wait(60s) == 0);
  const std::string out = read_file(dir.file("client.out"));
  INFO(out);
  CHECK(out.find("foo.blerp (list) = [5,6,7,17]") != std::string::npos);
  CHECK(out.find("foo.blerp (scalar) = 18") != std::string::npos);
  CHECK(out.find("barfie.prod = 10") != std::string::npos);
  CHECK(out.find("barfie.prod after += 4 = 54") != std::string::npos);
  CHECK(out.find("p_foo(17) = 59") != std::string::npos);
  CHECK(out.find("p_d{f1}(7,33) = 40") != std::string::npos);
  CHECK(out.find("p_d{f3}(33,7) = 4") != std::string::npos);
  CHECK(out.find("x = 11") != std::string::npos);
  CHECK(out.find("MISMATCH") == std::string::npos);
  CHECK(server.stop() == 0);
  // The server's own objects changed, and the message is in its file.
  CHECK(read_file(dir.file("server.out")).find("foofie=18 barfie.prod=54") != std::string::npos);
  CHECK(read_file(log) == "A log message for the server\n");
  CHECK(broker.proc->stop() == 0);
}

TEST_CASE(
    "network file synchronization: four processes print 5,000 lines each through one handle") {
  TempDir dir;
  const std::string conf = dir.file("objects.conf"), log = dir.file("file.log");
  Process server({program("PATRO_TEST_OBJECTS_SERVER"), conf, log, "--heartbeat-ms", "100"},
                 dir.file("server.out"));
  REQUIRE(wait_for_file(conf, 10s));
  const std::vector<std::string> tags = {"a", "b", "c", "d"};
  std::vector<Process> clients;
  for (const auto& tag : tags)
    clients.emplace_back(
        std::vector<std::string>{program("PATRO_TEST_OBJECTS_CLIENT"), "print", conf, tag, "5000"});
  for (auto& c : clients) CHECK(c.wait(300s) == 0);
  CHECK(server.stop() == 0);

  const std::string text = read_file(log);
  CHECK(!text.empty());
  CHECK(text.back() == '\n');
  std::map<std::string, std::set<int>> seen;
  size_t lines = 0, bad = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    ++lines;
    // "TAG INDEX " and 64 copies of TAG's letter: anything else is a torn or mixed line.
    std::istringstream fields(line);
    std::string tag, tail;
    int index = -1;
    fields >> tag >> index >> tail;
    std::string rest;
    fields >> rest;
    if (tag.size() != 1 || index < 0 || tail != std::string(64, tag[0]) || !rest.empty()) {
      ++bad;
      continue;
    }
    seen[tag].insert(index);
  }
  CHECK(lines == 20000);
  CHECK(bad == 0);
  for (const auto& tag : tags) {
    CHECK(seen[tag].size() == 5000);
    CHECK(*seen[tag].begin() == 0);
    CHECK(*seen[tag].rbegin() == 4999);
  }
}
