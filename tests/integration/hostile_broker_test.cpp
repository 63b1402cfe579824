// Hostile peers against patro-broker, each attack spoken as docs/WIRE.md has it, with
// raw ZeroMQ sockets, against a real patro-broker and a real patro-worker: a REGISTER that takes
// over a live server's id and name, a REPLY forged by another server and by a stranger,
// REGISTERs too large for the broker, a SERVER_ALIVE that keeps
// a dead server registered, a flood of malformed REGISTERs, and (CURVE) another allowed server
// key taking an id, and keys removed from the allow lists by a SIGHUP. Each asserts that the
// attack is refused and that the victim is still served.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.hpp>

#include <algorithm>
#include <optional>
#include <sstream>
#include <thread>

#include <patro/patro.hpp>

#include "../support/broker_setup.hpp"
#include "../support/process.hpp"
#include "../support/register_message.hpp"
#include "../support/sanitizers.hpp"
#include "wire.hpp"

using namespace std::chrono_literals;
using patro::test::BrokerOptions;
using patro::test::BrokerProcess;
using patro::test::curve_broker;
using patro::test::Keys;
using patro::test::Process;
using patro::test::program;
using patro::test::read_file;
using patro::test::register_message;
using patro::test::TempDir;
using patro::test::wait_for_name;
using patro::test::write_file;
namespace d = patro::detail;

namespace {

// A patro-broker with a 100 ms heartbeat and a liveness of 5, its stderr in dir/broker.log at
// level info.
struct Broker : BrokerProcess {
  std::string log;
  explicit Broker(const TempDir& dir, BrokerOptions o = {})
      : BrokerProcess(dir, logged(dir, std::move(o))), log(dir.file("broker.log")) {}
  static BrokerOptions logged(const TempDir& dir, BrokerOptions o) {
    o.err_file = dir.file("broker.log");
    o.env = {"PATRO_LOG_LEVEL=info"};
    return o;
  }
  size_t log_lines_with(const std::string& text) const {
    std::istringstream in(read_file(log));
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line.find(text) != std::string::npos;
    return n;
  }
};

// A patro-worker with a queue named `name`, registered with the broker's back end.
Process worker(const std::string& back, const std::string& name,
               std::vector<std::string> extra = {}) {
  std::vector<std::string> argv{
      program("PATRO_WORKER"), "--broker", back, "--heartbeat-ms", "100", "--threads", "4"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("queue");
  argv.push_back(name);
  return Process(argv);
}

// Through the broker only: the attacks are on what the broker routes.
patro::ClientOptions via_broker(patro::ClientOptions o = {}) {
  o.route = patro::Route::broker;
  o.connect_timeout = 10s;
  o.call_timeout = 5s;
  return o;
}

// The registered server that serves `name`.
std::optional<patro::BrokerServer> server_of(const std::string& front, const std::string& name,
                                             const patro::ClientOptions& o) {
  const patro::BrokerInfo info = patro::broker_info(front, o);
  for (const auto& n : info.names) {
    if (n.name != name) continue;
    for (const auto& s : info.servers)
      if (s.id == n.id.server) return s;
  }
  return std::nullopt;
}

// The server that serves `name`, once all its `lanes` registered (the name comes with the
// first lane's REGISTER; the others follow): bounded wait.
patro::BrokerServer wait_for_lanes(const std::string& front, const std::string& name,
                                   const patro::ClientOptions& o, unsigned lanes) {
  auto served = server_of(front, name, o);
  for (int i = 0; i < 400 && (!served || served->lanes < lanes); ++i) {
    std::this_thread::sleep_for(25ms);
    served = server_of(front, name, o);
  }
  REQUIRE(served);
  REQUIRE(served->lanes == lanes);
  return *served;
}

// A raw DEALER on the broker's back end: the attacker.
struct Raw {
  zmq::context_t ctx;
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  explicit Raw(const std::string& endpoint, const patro::CurveKeyPair* keys = nullptr,
               const std::string& broker_key = {}) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.set(zmq::sockopt::maxmsgsize, int64_t{-1});
    if (keys) {
      s.set(zmq::sockopt::curve_serverkey, broker_key);
      s.set(zmq::sockopt::curve_publickey, keys->public_key);
      s.set(zmq::sockopt::curve_secretkey, keys->secret_key);
    }
    s.connect(endpoint);
  }
  void send(std::vector<zmq::message_t> frames) {
    for (size_t i = 0; i < frames.size(); ++i)
      (void)s.send(frames[i],
                   i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  // The next message whose header is `want`, within timeout; empty if none. Every REQUEST seen
  // on the way is counted in `requests`.
  d::Multipart next(d::Command want, std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      s.set(zmq::sockopt::rcvtimeo, 100);
      d::Multipart m;
      if (!d::recv_multipart(s, m)) continue;
      uint64_t stamp = 0;  // a REQUEST from the broker has a 12-byte header: when it was forwarded
      const auto cmd = m.empty() ? std::nullopt : d::parse_header(m[0], stamp);
      if (cmd == d::Command::request) ++requests;
      if (cmd == want) return m;
    }
    return {};
  }
  size_t requests = 0;
};

std::vector<zmq::message_t> frames(zmq::message_t a, zmq::message_t b = {}) {
  std::vector<zmq::message_t> out;
  out.push_back(std::move(a));
  if (b.size() > 0) out.push_back(std::move(b));
  return out;
}

// The refusal a REGISTERED carries; nullopt if the message is no REGISTERED or has none.
std::optional<std::string> refusal(const d::Multipart& m) {
  if (m.size() != 2 || d::parse_header(m[0]) != d::Command::registered) return std::nullopt;
  patro::Limits limits;
  d::AlignedScratch scratch;
  const auto* c = d::verified_control(m[1], limits, scratch);
  const auto* r = c ? c->body_as_Registered() : nullptr;
  if (!r || !r->refusal()) return std::nullopt;
  return r->refusal()->str();
}

long rss_kib(int pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// Ten jobs pushed through the broker, each one answered: they reached the real queue.
void push_ten(const patro::Proxy& jobs) {
  for (int i = 0; i < 10; ++i) {
    try {
      jobs.call("push", "secret" + std::to_string(i));
    } catch (const patro::Error& e) {
      FAIL_CHECK("push " << i << ": " << std::string(e.what()));
    }
  }
  CHECK(jobs.call("size") == 10);
}

}  // namespace

TEST_CASE("item 1: a REGISTER for a live server's id and name from another socket is refused") {
  TempDir dir;
  Broker b(dir);
  Process w = worker(b.back, "jobs");
  const auto o = via_broker();
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  const patro::BrokerServer victim = wait_for_lanes(b.front, "jobs", o, 4);
  const patro::ObjectId jobs_id = patro::broker_info(b.front, o).names.at(0).id;

  Raw attacker(b.back);
  // As the issue found it: another incarnation, the victim's lanes; then lanes=1, incarnation 0.
  attacker.send(register_message(victim.id, 0, 4, 0x5eed, {"jobs"}, jobs_id.object));
  const auto first = refusal(attacker.next(d::Command::registered, 3s));
  CHECK(first);
  if (first) CHECK(first->find("another live process") != std::string::npos);
  Raw attacker2(b.back);
  attacker2.send(register_message(victim.id, 0, 1, 0, {"jobs", "extra"}, jobs_id.object));
  CHECK(refusal(attacker2.next(d::Command::registered, 3s)));

  // The jobs reach the real queue, and nothing reaches the attackers.
  push_ten(jobs);
  (void)attacker.next(d::Command::request, 300ms);
  (void)attacker2.next(d::Command::request, 300ms);
  CHECK(attacker.requests == 0);
  CHECK(attacker2.requests == 0);
  const auto after = server_of(b.front, "jobs", o);
  REQUIRE(after);
  CHECK(after->id == victim.id);
  CHECK(after->lanes == 4);
  for (const auto& n : patro::broker_info(b.front, o).names) CHECK(n.name != "extra");
  CHECK(b.log_lines_with("refused a REGISTER") >= 1);
  w.stop();
}

TEST_CASE(
    "item 1 with a restart proof: a REGISTER for a --data worker's live id from another "
    "incarnation "
    "without its secret, or with another, is refused; the worker is served") {
  TempDir dir;
  Broker b(dir);
  const std::string data = dir.file("data");
  Process w = worker(b.back, "jobs", {"--data", data});
  const auto o = via_broker();
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  const patro::BrokerServer victim = wait_for_lanes(b.front, "jobs", o, 4);
  const patro::ObjectId jobs_id = patro::broker_info(b.front, o).names.at(0).id;
  REQUIRE(read_file(data + "/server-secret").size() == 65);

  // What `patro ls` shows (the id, the name) and a guess at the secret: 32 bytes, as the worker's.
  Raw guess(b.back), bare(b.back);
  guess.send(register_message(victim.id, 0, 4, 0x5eed, {"jobs"}, jobs_id.object, "Patro::Queue",
                              std::string(32, '\x01')));
  const auto wrong = refusal(guess.next(d::Command::registered, 3s));
  REQUIRE(wrong);
  CHECK(wrong->find("restart proof is not the id's") != std::string::npos);
  bare.send(register_message(victim.id, 0, 4, 0x5eee, {"jobs"}, jobs_id.object));
  const auto none = refusal(bare.next(d::Command::registered, 3s));
  REQUIRE(none);
  CHECK(none->find("no restart proof") != std::string::npos);

  push_ten(jobs);
  (void)guess.next(d::Command::request, 300ms);
  (void)bare.next(d::Command::request, 300ms);
  CHECK(guess.requests == 0);
  CHECK(bare.requests == 0);
  const auto after = server_of(b.front, "jobs", o);
  REQUIRE(after);
  CHECK(after->id == victim.id);
  CHECK(after->lanes == 4);
  CHECK(w.stop() == 0);
}

TEST_CASE("item 1: a REPLY forged by another server or a stranger never reaches the client") {
  TempDir dir;
  Broker b(dir);
  Process w = worker(b.back, "jobs");
  const auto o = via_broker();
  (void)wait_for_name(b.front, "jobs", o);
  const patro::ObjectId jobs_id = patro::broker_info(b.front, o).names.at(0).id;
  // The forger registers a server of its own, which the client also talks to: so it learns the
  // client's routing id, as any server a client uses does.
  Raw forger(b.back), stranger(b.back), client(b.front);
  forger.send(register_message(0xf0f0, 0, 1, 0xabc, {"bait"}, 1));
  REQUIRE(forger.next(d::Command::registered, 3s).size() == 2);
  std::vector<zmq::message_t> bait;
  bait.push_back(d::header_frame(d::Command::request));
  bait.push_back(d::object_id_frame(patro::ObjectId{0xf0f0, 1}));
  bait.push_back(d::u64_frame(1));
  bait.push_back(zmq::message_t(std::string_view("x")));
  client.send(std::move(bait));
  const d::Multipart seen = forger.next(d::Command::request, 3s);
  REQUIRE(seen.size() == 5);
  const std::string routing = seen[1].to_string();
  // Request 2 goes to the victim (an unreadable body: it answers bad_message); both forge its
  // reply as a success at once.
  std::vector<zmq::message_t> real;
  real.push_back(d::header_frame(d::Command::request));
  real.push_back(d::object_id_frame(jobs_id));
  real.push_back(d::u64_frame(2));
  real.push_back(zmq::message_t(std::string_view("not a request")));
  client.send(std::move(real));
  for (Raw* r : {&forger, &stranger}) {
    std::vector<zmq::message_t> forged;
    forged.push_back(d::header_frame(d::Command::reply));
    forged.push_back(zmq::message_t(routing.data(), routing.size()));
    forged.push_back(d::u64_frame(2));
    forged.push_back(d::error_reply(2, patro::Errc::ok, "forged"));
    r->send(std::move(forged));
  }
  // Every reply to request 2 the client gets within a second is the victim's.
  std::vector<patro::Errc> codes;
  const auto until = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < until) {
    client.s.set(zmq::sockopt::rcvtimeo, 100);
    d::Multipart m;
    if (!d::recv_multipart(client.s, m)) continue;
    if (m.size() != 3 || d::parse_header(m[0]) != d::Command::reply || d::parse_u64(m[1]) != 2)
      continue;
    patro::Limits limits;
    d::AlignedScratch scratch;
    const auto* r = d::verified_reply(m[2], limits, scratch);
    REQUIRE(r != nullptr);
    codes.push_back(static_cast<patro::Errc>(r->error_code()));
  }
  CHECK(codes == std::vector<patro::Errc>{patro::Errc::bad_message});
  w.stop();
}

TEST_CASE("item 2: REGISTERs too large are refused at once; the broker serves and patro ls works") {
  TempDir dir;
  Broker b(dir);
  Process w = worker(b.back, "jobs");
  const auto o = via_broker();
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  const auto victim = server_of(b.front, "jobs", o);
  REQUIRE(victim);
  const long rss_before = rss_kib(b.proc->pid());

  Raw attacker(b.back);
  // 100,000 names in one REGISTER: refused whole, no name bound.
  std::vector<std::string> many;
  for (int i = 0; i < 100'000; ++i) many.push_back("n" + std::to_string(i));
  attacker.send(register_message(0xa77ac4, 0, 1, 1, many, 1));
  const auto r1 = refusal(attacker.next(d::Command::registered, 5s));
  CHECK(r1);
  if (r1) CHECK(r1->find("names") != std::string::npos);
  // 8 MiB type names, from several sockets under several ids: refused.
  for (uint64_t i = 0; i < 4; ++i) {
    Raw big(b.back);
    big.send(register_message(0xb16000 + i, 0, 1, 1, {"big" + std::to_string(i)}, 1,
                              std::string(8u << 20, 't')));
    CHECK(refusal(big.next(d::Command::registered, 5s)));
  }
  // The victim is still registered and served (not expired by a stalled broker), and the
  // broker's info (patro ls) is one valid message, without the attackers' names.
  jobs.call("push", "after");
  CHECK(jobs.call("size") == 1);
  const patro::BrokerInfo info = patro::broker_info(b.front, o);
  CHECK(info.names.size() == 1);
  CHECK(info.servers.size() == 1);
  const long rss_after = rss_kib(b.proc->pid());
  MESSAGE("broker RSS " << rss_before << " KiB -> " << rss_after << " KiB");
  CHECK(rss_after < rss_before + 64 * 1024);  // stated bound: 64 MiB over its start
  w.stop();
}

TEST_CASE("item 3: SERVER_ALIVE from another socket does not keep a dead server registered") {
  TempDir dir;
  Broker b(dir);
  const auto o = via_broker();
  std::optional<patro::BrokerServer> victim;
  {
    Process w = worker(b.back, "jobs");
    (void)wait_for_name(b.front, "jobs", o);
    victim = server_of(b.front, "jobs", o);
    REQUIRE(victim);
    w.signal(SIGKILL);
    (void)w.wait(5s);
  }
  // The forger beats every 50 ms for the victim's id, from a socket that is none of its lanes.
  Raw forger(b.back);
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {  // 5 s at most; the broker's window is 500 ms
    forger.send(frames(d::header_frame(d::Command::server_alive), d::u64_frame(victim->id)));
    std::this_thread::sleep_for(50ms);
    if (i % 4 == 3) gone = !server_of(b.front, "jobs", o);
  }
  CHECK(gone);
  CHECK(b.log_lines_with("refused a SERVER_ALIVE") >= 1);
  // A restarted worker takes the name again.
  Process again = worker(b.back, "jobs");
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  jobs.call("push", "x");
  CHECK(jobs.call("size") == 1);
  again.stop();
}

TEST_CASE("item 4: one client's unanswered requests are bounded in bytes; others are served") {
  TempDir dir;
  BrokerOptions options;
  options.extra = {"--max-client-bytes", std::to_string(1u << 20)};
  // A 5 s window: the sink below heartbeats between reads, and a loaded machine (TSan) once let
  // a 500 ms window expire it midway, whose later requests were then answered "no server".
  options.liveness = "50";
  Broker b(dir, options);
  Process w = worker(b.back, "jobs");
  const auto o = via_broker();
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  // A server that takes requests and never answers (it heartbeats, so it stays registered).
  Raw sink(b.back), flooder(b.front);
  sink.send(register_message(0x51c4, 0, 1, 0x5eed, {"sink"}, 1));
  REQUIRE(sink.next(d::Command::registered, 3s).size() == 2);
  // Quarter-MiB requests against a 1 MiB budget (a sanitizer copies a byte at a time).
  const std::string quarter(256u << 10, 'x');
  for (uint64_t id = 1; id <= 40; ++id) {
    std::vector<zmq::message_t> req;
    req.push_back(d::header_frame(d::Command::request));
    req.push_back(d::object_id_frame(patro::ObjectId{0x51c4, 1}));
    req.push_back(d::u64_frame(id));
    req.push_back(zmq::message_t(quarter.data(), quarter.size()));
    flooder.send(std::move(req));
  }
  // The broker routes four (1 MiB) and answers the rest overloaded, as not run (NO_ROUTE). Under
  // ASan on a loaded machine 10 s saw 28 of the 36 answers: the wait ends when all 36 came.
  size_t overloaded = 0;
  std::string other;  // any other answer, for the failure's message
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (overloaded < 36 && std::chrono::steady_clock::now() < until) {
    sink.send(frames(d::header_frame(d::Command::heartbeat)));
    flooder.s.set(zmq::sockopt::rcvtimeo, 100);
    d::Multipart m;
    if (!d::recv_multipart(flooder.s, m)) continue;
    if (m.size() != 3 || d::parse_header(m[0]) != d::Command::no_route) continue;
    patro::Limits limits;
    d::AlignedScratch scratch;
    const auto* r = d::verified_reply(m[2], limits, scratch);
    REQUIRE(r != nullptr);
    if (static_cast<patro::Errc>(r->error_code()) == patro::Errc::overloaded)
      ++overloaded;
    else
      other += std::string(" ") + patro::errc_name(static_cast<patro::Errc>(r->error_code()));
  }
  INFO("other answers:" << other);
  CHECK(overloaded == 36);
  (void)sink.next(d::Command::disconnect, 1s);  // counts the requests that reached it
  CHECK(sink.requests == 4);
  // Another client is served all along, and the refusals were logged a few times only.
  jobs.call("push", "x");
  CHECK(jobs.call("size") == 1);
  const size_t lines = b.log_lines_with("bytes of requests unanswered");
  CHECK(lines >= 1);
  CHECK(lines <= 6);
  w.stop();
}

TEST_CASE("item 4: replies a client does not read wait at the server, not in the broker") {
  TempDir dir;
  BrokerOptions options;
  constexpr size_t kBudget = 4u << 20;
  options.extra = {"--max-client-unread", std::to_string(kBudget)};
  options.liveness = "50";  // a 5 s window, as above
  Broker b(dir, options);
  Process w = worker(b.back, "jobs");
  const auto o = via_broker();
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  // A server that answers every request with 1 MiB, and a client that sends requests and does
  // not read: its socket takes one message, its kernel a small buffer.
  Raw sink(b.back);
  sink.send(register_message(0x51c4, 0, 1, 0x5eed, {"sink"}, 1));
  REQUIRE(sink.next(d::Command::registered, 3s).size() == 2);
  zmq::context_t ctx;
  zmq::socket_t stalled(ctx, zmq::socket_type::dealer);
  stalled.set(zmq::sockopt::linger, 0);
  stalled.set(zmq::sockopt::rcvhwm, 1);
  stalled.set(zmq::sockopt::rcvbuf, 64 << 10);
  stalled.set(zmq::sockopt::maxmsgsize, int64_t{-1});
  stalled.connect(b.front);
  const uint64_t n = patro::test::scaled(48, 2);
  const auto before = patro::broker_info(b.front, o).stats;
  for (uint64_t id = 1; id <= n; ++id) {
    std::vector<zmq::message_t> req;
    req.push_back(d::header_frame(d::Command::request));
    req.push_back(d::object_id_frame(patro::ObjectId{0x51c4, 1}));
    req.push_back(d::u64_frame(id));
    req.push_back(zmq::message_t("x", 1));
    for (size_t i = 0; i < req.size(); ++i)
      (void)stalled.send(req[i],
                         i + 1 < req.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  const std::string mib(1u << 20, 'r');
  uint64_t answered = 0;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (answered < n && std::chrono::steady_clock::now() < until) {
    d::Multipart m = sink.next(d::Command::request, 500ms);
    if (m.size() != 5) continue;  // [hdr][client routing][object id][request id][body]
    std::vector<zmq::message_t> reply;
    reply.push_back(d::header_frame(d::Command::reply));
    reply.push_back(std::move(m[1]));
    reply.push_back(std::move(m[3]));
    reply.push_back(zmq::message_t(mib.data(), mib.size()));
    sink.send(std::move(reply));
    sink.send(frames(d::header_frame(d::Command::heartbeat)));
    ++answered;
  }
  REQUIRE(answered == n);
  // Every answer passed the broker: forwarded, or held back (NO_ROUTE, counted as rejected).
  patro::BrokerStats after = patro::broker_info(b.front, o).stats;
  for (int i = 0; i < 400 && after.replies + after.rejected < before.replies + before.rejected + n;
       ++i) {
    std::this_thread::sleep_for(25ms);
    after = patro::broker_info(b.front, o).stats;
  }
  const uint64_t forwarded = after.replies - before.replies;
  CHECK(forwarded + (after.rejected - before.rejected) >= n);
  // At most the budget and one more past what the client's buffers took; the rest wait at
  // the server (a resend gets them from its reply cache).
  CHECK(forwarded >= 1);
  CHECK(forwarded <= kBudget / (1u << 20) + 8);
  if (!patro::test::kSanitized)  // ASan keeps freed memory in quarantine
    CHECK(rss_kib(b.proc->pid()) < 64 * 1024);
  // Another client is served, and the client that reads at last gets each request answered
  // once: a reply or NO_ROUTE (outcome_unknown).
  jobs.call("push", "x");
  CHECK(jobs.call("size") == 1);
  size_t replies = 0, held = 0;
  stalled.set(zmq::sockopt::rcvtimeo, 2000);
  for (d::Multipart m; replies + held < n && d::recv_multipart(stalled, m);) {
    const auto cmd = m.empty() ? std::nullopt : d::parse_header(m[0]);
    if (cmd == d::Command::reply && m.size() == 3 && m[2].size() == mib.size()) ++replies;
    if (cmd == d::Command::no_route && m.size() == 3) {
      patro::Limits limits;
      d::AlignedScratch scratch;
      const auto* r = d::verified_reply(m[2], limits, scratch);
      REQUIRE(r != nullptr);
      // Not "did not run": it ran, and a resend gets its answer from the server's reply cache.
      CHECK(static_cast<patro::Errc>(r->error_code()) == patro::Errc::outcome_unknown);
      ++held;
    }
  }
  CHECK(replies == forwarded);
  CHECK(replies + held == n);
  const size_t lines = b.log_lines_with("held back a reply");
  CHECK(lines >= 1);
  CHECK(lines <= 6);
  w.stop();
}

// A plain TCP connection to 127.0.0.1:port (no ZMTP spoken): -1 if it cannot be made.
int tcp_connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// How many of fds their peer closes (what it sends first, libzmq's greeting, is read), all
// watched at once: waits until `expected` are closed and then `settle` more with no further close,
// or until `timeout`.
size_t closed_by_peer(const std::vector<int>& fds, size_t expected,
                      std::chrono::milliseconds settle, std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  auto last_close = start;
  std::vector<bool> closed(fds.size(), false);
  size_t n_closed = 0;
  char buf[256];
  for (auto now = start; now < start + timeout; now = std::chrono::steady_clock::now()) {
    if (n_closed >= expected && now - last_close >= settle) break;
    std::vector<pollfd> ps;
    std::vector<size_t> which;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (closed[k]) continue;
      ps.push_back({fds[k], POLLIN, 0});
      which.push_back(k);
    }
    if (ps.empty() || ::poll(ps.data(), ps.size(), 50) <= 0) continue;
    for (size_t m = 0; m < ps.size(); ++m) {
      if (ps[m].revents == 0) continue;
      const ssize_t n = ::recv(ps[m].fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        closed[which[m]] = true;
        ++n_closed;
        last_close = std::chrono::steady_clock::now();
      }
    }
  }
  return n_closed;
}

TEST_CASE("item 9: connections past --max-connections are closed at once, logged a few times") {
  TempDir dir;
  BrokerOptions options;
  options.extra = {"--max-connections", "24"};
  Broker b(dir, options);
  Process w = worker(b.back, "jobs");  // 4 lanes: 4 connections
  const auto o = via_broker();
  {
    patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
    jobs.call("push", "before");
  }
  // Every lane in before the flood: what is checked below is that the flood cuts none off.
  (void)wait_for_lanes(b.front, "jobs", o, 4);
  const int port = std::stoi(b.front.substr(b.front.rfind(':') + 1));
  std::vector<int> fds;
  for (int i = 0; i < 60; ++i)
    if (const int fd = tcp_connect(port); fd >= 0) fds.push_back(fd);
  REQUIRE(fds.size() == 60);
  // At least the 36 past the cap are closed at once; a few more may follow (the settle time).
  const size_t closed = closed_by_peer(fds, 36, 500ms, 10s);
  MESSAGE(closed << " of 60 connections closed by the broker");
  // The worker's lanes and the client above (gone, or going) take a few of the 24: at least the
  // 36 past the cap are closed, and the broker kept some (it is a cap, not a refusal of all).
  CHECK(closed >= 36);
  CHECK(closed < 60);
  const size_t lines = b.log_lines_with("closed a connection");
  CHECK(lines >= 1);
  CHECK(lines <= 6);  // 5 per 10 s, then "(N more suppressed)" on a later one
  for (int fd : fds) ::close(fd);
  // The connections gone, a client is served again, and the worker was never cut off.
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  jobs.call("push", "after");
  CHECK(jobs.call("size") == 2);
  w.stop();
}

TEST_CASE("item 11: a flood of malformed REGISTERs gives a few log lines, and the broker serves") {
  TempDir dir;
  Broker b(dir);
  Process w = worker(b.back, "jobs");
  const auto o = via_broker();
  patro::Proxy jobs = wait_for_name(b.front, "jobs", o);
  Raw attacker(b.back);
  for (int i = 0; i < 5000; ++i)
    attacker.send(frames(d::header_frame(d::Command::register_server),
                         zmq::message_t(std::string_view("not a flatbuffer"))));
  jobs.call("push", "x");  // answered after the flood (the broker reads its peers in turn)
  CHECK(jobs.call("size") == 1);
  // Bounded wait until the broker has read the whole flood: its dropped count.
  for (int i = 0; i < 100 && patro::broker_info(b.front, o).stats.dropped < 5000; ++i)
    std::this_thread::sleep_for(50ms);
  CHECK(patro::broker_info(b.front, o).stats.dropped >= 5000);
  const size_t lines = b.log_lines_with("malformed REGISTER");
  MESSAGE(lines << " lines for 5000 malformed REGISTERs");
  CHECK(lines >= 1);
  CHECK(lines <= 10);
  w.stop();
}

TEST_CASE("items 1, 3 and 7 under CURVE: ids belong to keys; a SIGHUP revokes live sessions") {
  if (!patro::curve_available()) return;
  TempDir dir;
  Keys broker_key(dir, "broker"), alice(dir, "alice"), bob(dir, "bob");
  Keys server(dir, "server"), server2(dir, "server2");
  write_file(dir.file("clients"), alice.pair.public_key + "\n" + bob.pair.public_key + "\n");
  write_file(dir.file("servers"), server.pair.public_key + "\n" + server2.pair.public_key + "\n");
  Broker b(dir, curve_broker(broker_key, dir.file("clients"), dir.file("servers")));
  Process w =
      worker(b.back, "jobs", {"--broker-key", broker_key.pub(), "--curve-key", server.path});
  Process w2 =
      worker(b.back, "other", {"--broker-key", broker_key.pub(), "--curve-key", server2.path});
  patro::ClientOptions ao = via_broker(), bo = via_broker();
  ao.curve.broker_key = bo.curve.broker_key = broker_key.pair.public_key;
  ao.curve.keys = alice.pair;
  bo.curve.keys = bob.pair;
  patro::Proxy jobs = wait_for_name(b.front, "jobs", ao);
  (void)wait_for_name(b.front, "other", ao);
  const auto victim = server_of(b.front, "jobs", ao);
  REQUIRE(victim);
  const patro::ObjectId jobs_id = [&] {
    for (const auto& n : patro::broker_info(b.front, ao).names)
      if (n.name == "jobs") return n.id;
    return patro::ObjectId{};
  }();

  // Another allowed server key takes the victim's id (any incarnation): refused.
  Raw rogue(b.back, &server2.pair, broker_key.pair.public_key);
  rogue.send(register_message(victim->id, 0, 4, 0x5eed, {"jobs"}, jobs_id.object));
  const auto why = refusal(rogue.next(d::Command::registered, 3s));
  CHECK(why);
  if (why) CHECK(why->find("belongs to key") != std::string::npos);
  // Nor does that key keep it alive.
  rogue.send(frames(d::header_frame(d::Command::server_alive), d::u64_frame(victim->id)));
  patro::Proxy bobs = patro::get_proxy(b.front, "jobs", bo);
  bobs.call("push", "from bob");
  CHECK(jobs.call("size") == 1);
  CHECK(rogue.requests == 0);
  (void)rogue.next(d::Command::request, 300ms);
  CHECK(rogue.requests == 0);

  // Bob's key and server2's key leave the lists; SIGHUP. Bob's live session is refused from
  // then on, server2's worker is dropped; alice and the first worker go on.
  write_file(dir.file("clients"), alice.pair.public_key + "\n");
  write_file(dir.file("servers"), server.pair.public_key + "\n");
  b.proc->signal(SIGHUP);
  std::optional<patro::Errc> bob_error;
  for (int i = 0; i < 100 && !bob_error; ++i) {
    try {
      bobs.call("size");
      std::this_thread::sleep_for(50ms);
    } catch (const patro::Error& e) {
      bob_error = e.code();
      MESSAGE("bob after the SIGHUP: " << std::string(e.what()));
    }
  }
  CHECK(bob_error == patro::Errc::not_authorized);
  bool other_gone = false;
  for (int i = 0; i < 100 && !other_gone; ++i) {
    other_gone = !server_of(b.front, "other", ao);
    if (!other_gone) std::this_thread::sleep_for(50ms);
  }
  CHECK(other_gone);
  jobs.call("push", "from alice");
  CHECK(jobs.call("size") == 2);
  w.stop();
  w2.stop();
}
