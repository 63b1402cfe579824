// The wire trace (README "Wire trace"): with PATRO_DEBUG=1 a client process and a server process
// each log every request and reply, one line each, in the documented format; a get, a call that
// fails and a batch of oneway calls, through the broker and on the direct path. Without it nothing
// of the kind is printed. Real processes, real sockets; their stderr is read from files.
#include <doctest/doctest.h>

#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerProcess;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::redirected;
using patro::test::TempDir;
using patro::test::wait_for_file;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The lines that match pattern (a whole line: the log prefix, then the trace's text).
std::vector<std::smatch> matching(const std::vector<std::string>& lines,
                                  const std::string& pattern) {
  const std::regex re(pattern);
  std::vector<std::smatch> out;
  for (const std::string& line : lines) {
    std::smatch m;
    if (std::regex_match(line, m, re)) out.push_back(m);
  }
  return out;
}

std::string quoted(const std::string& s) {
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  return std::regex_replace(s, special, R"(\$&)");
}

// A test server with its own broker; its stderr goes to server.err, with env set.
struct Cluster {
  TempDir dir;
  BrokerProcess broker{dir};
  std::string conf = dir.file("server.conf");
  std::unique_ptr<Process> server;

  explicit Cluster(std::vector<std::string> env) {
    server = std::make_unique<Process>(
        redirected({program("PATRO_TEST_SERVER"), conf, "--broker", broker.back, "--heartbeat-ms",
                    "100", "--threads", "2"},
                   dir.file("server.err"), std::move(env)));
    REQUIRE(wait_for_file(conf, 20s));
  }
  ~Cluster() {
    if (server) server->stop();
    broker.proc->stop();
  }

  // Runs the test client's trace mode (route: auto, direct or broker); its stdout and stderr.
  std::pair<std::string, std::string> run_client(const std::string& route,
                                                 std::vector<std::string> env) {
    const std::string out = dir.file("client-" + route + ".out");
    const std::string err = dir.file("client-" + route + ".err");
    Process client(
        redirected({program("PATRO_TEST_CLIENT"), "trace", conf, "0", route}, err, std::move(env)),
        out);
    const auto rc = client.wait(60s);
    REQUIRE(rc.has_value());
    CHECK(*rc == 0);
    return {read_file(out), read_file(err)};
  }
};

// What the client printed: "obj I HEX", "get V", "error CODE", "n V".
struct ClientOut {
  std::string obj0, obj2, obj3, get, error, n;
  explicit ClientOut(const std::string& text) {
    for (const std::string& line : lines_of(text)) {
      std::istringstream in(line);
      std::string key, a, b;
      in >> key >> a >> b;
      if (key == "obj") (a == "0" ? obj0 : a == "2" ? obj2 : obj3) = b;
      if (key == "get") get = a;
      if (key == "error") error = a;
      if (key == "n") n = a;
    }
  }
};

const std::string kMs = R"(\d+\.\d{3}ms)";

// Every line the trace documents for the client's calls, on both sides, with the same request
// ids; via: "broker" or "direct".
void check_trace(const std::string& client_err, const std::string& server_err, const ClientOut& ids,
                 const std::string& via) {
  const auto client = lines_of(client_err), server = lines_of(server_err);
  const std::string cpre = R"(\S+ TRACE client\[\d+\]: )", spre = R"(\S+ TRACE server\[\d+\]: )";
  REQUIRE(ids.obj0.size() == 32);

  // The get: a request and its reply on each side, one request id.
  const std::string get = "get obj=" + ids.obj0 + quoted(R"( path=["abc"])");
  auto sent = matching(client, cpre + R"(-> request #(\d+) )" + get + " args=\\[\\] via=" + via);
  REQUIRE(sent.size() == 1);
  const std::string rid = sent[0][1];
  CHECK(matching(client, cpre + "<- reply #" + rid + ' ' + get + " ok " + kMs +
                             R"( result=\[123\] via=)" + via)
            .size() == 1);
  CHECK(matching(server, spre + "<- request #" + rid + ' ' + get +
                             R"( args=\[\] client=[0-9a-f]{16} via=)" + via)
            .size() == 1);
  CHECK(
      matching(server, spre + "-> reply #" + rid + ' ' + get + " ok " + kMs + R"( result=\[123\])")
          .size() == 1);

  // The call that fails: its error code on both sides, its text.
  const std::string call = "call no_such_method obj=" + ids.obj3 + " path=-";
  sent = matching(client, cpre + R"(-> request #(\d+) )" + call + R"( args=\[7,"x"\] via=)" + via);
  REQUIRE(sent.size() == 1);
  const std::string cid = sent[0][1];
  // The text names the class's methods too, so the trace may cut it to its width ("...").
  const std::string failed = " unknown_method " + kMs + R"( error=".*no_such_method.*(?:"|\.\.\.))";
  CHECK(matching(client, cpre + "<- reply #" + cid + ' ' + call + failed + " via=" + via).size() ==
        1);
  CHECK(matching(server, spre + "<- request #" + cid + ' ' + call + R"( args=\[7,"x"\] client=)" +
                             "[0-9a-f]{16} via=" + via)
            .size() == 1);
  CHECK(matching(server, spre + "-> reply #" + cid + ' ' + call + failed).size() == 1);

  // The two oneway calls: their batch's lines on each side. The client's heartbeat thread may
  // send what is queued between the two sends (a loaded machine does it now and then): then
  // they are two batches of one call each, traced the same way.
  const auto batches = matching(client, cpre + R"(-> batch #(\d+) calls=([12]) via=)" + via);
  REQUIRE((batches.size() == 1 || batches.size() == 2));
  int calls = 0;
  for (const std::smatch& batch : batches) {
    const std::string bid = batch[1], k = batch[2];
    calls += std::stoi(k);
    CHECK(matching(client, cpre + "<- batch #" + bid + " calls=" + k + " ok " + kMs +
                               " failed=0 via=" + via)
              .size() == 1);
    CHECK(matching(server,
                   spre + "<- batch #" + bid + " calls=" + k + " client=[0-9a-f]{16} via=" + via)
              .size() == 1);
    CHECK(matching(server, spre + "-> batch #" + bid + " calls=" + k + " ok " + kMs + " failed=0")
              .size() == 1);
  }
  CHECK(calls == 2);
  const std::string n = "obj=" + ids.obj2 + quoted(R"( path=["n"])");
  for (const std::string& op :
       {std::string("set ") + n + R"( args=\[5\])", std::string("add ") + n + R"( args=\[1\])"}) {
    auto queued = matching(client, cpre + R"(-> oneway #(\d+) )" + op);
    REQUIRE(queued.size() == 1);
    CHECK(
        matching(server, spre + "<- oneway #" + std::string(queued[0][1]) + ' ' + op + " ok " + kMs)
            .size() == 1);
  }
}

// Nothing the trace prints: no TRACE line, no request or reply line.
void check_quiet(const std::string& err) {
  CHECK(err.find("TRACE") == std::string::npos);
  CHECK(err.find("-> request") == std::string::npos);
  CHECK(err.find("<- reply") == std::string::npos);
  CHECK(err.find("oneway #") == std::string::npos);
}

}  // namespace

TEST_CASE("PATRO_DEBUG=1 traces every request and reply on both sides, through the broker") {
  Cluster c({"PATRO_DEBUG=1"});
  auto [out, err] = c.run_client("broker", {"PATRO_DEBUG=1"});
  const ClientOut ids(out);
  CHECK(ids.get == "123");
  CHECK(ids.error == "unknown_method");
  CHECK(ids.n == "6");
  check_trace(err, read_file(c.dir.file("server.err")), ids, "broker");
}

TEST_CASE("PATRO_DEBUG=1 traces the direct path, with via=direct on both sides") {
  Cluster c({"PATRO_DEBUG=1"});
  auto [out, err] = c.run_client("direct", {"PATRO_DEBUG=1"});
  const ClientOut ids(out);
  CHECK(ids.get == "123");
  CHECK(ids.n == "6");
  check_trace(err, read_file(c.dir.file("server.err")), ids, "direct");
}

TEST_CASE("without PATRO_DEBUG nothing is traced; PATRO_LOG_LEVEL=trace (any case) traces") {
  // The tests' environment sets PATRO_LOG_LEVEL=warn; PATRO_DEBUG=0 is off.
  Cluster c({"-u", "PATRO_DEBUG", "PATRO_DEBUG=0"});
  auto [out, err] = c.run_client("broker", {"-u", "PATRO_DEBUG"});
  const ClientOut ids(out);
  CHECK(ids.get == "123");
  CHECK(ids.error == "unknown_method");
  check_quiet(err);
  check_quiet(read_file(c.dir.file("server.err")));

  // The level by name: the client traces, the server (still quiet) does not.
  auto [out2, err2] = c.run_client("auto", {"-u", "PATRO_DEBUG", "PATRO_LOG_LEVEL=Trace"});
  CHECK(ClientOut(out2).get == "123");
  CHECK(err2.find("TRACE client[") != std::string::npos);
  CHECK(matching(lines_of(err2), R"(\S+ TRACE client\[\d+\]: -> request #\d+ get obj=[0-9a-f]{32})"
                                 R"( path=\["abc"\] args=\[\] via=(broker|direct))")
            .size() == 1);
  check_quiet(read_file(c.dir.file("server.err")));
}
