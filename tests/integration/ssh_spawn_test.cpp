// patro::spawn through a real sshd with nothing between the hosts but ssh (issue 29): the far
// host is a network namespace this test makes (a veth pair, 10.236.1.0/24: the host's end
// 10.236.1.1, the far end 10.236.1.2) where nftables drops everything but tcp/22 in and out (and
// loopback), with an sshd of the test's own (its config, host key and authorized_keys in a temp
// dir) in a mount namespace of its own, so the far side's /dev/shm is a tmpfs of its own. Over
// ssh alone: patro-worker and a patronize() program are spawned, used (their calls go through
// ssh's port forward to a broker on this host's loopback; the far worker's log lines come back
// over the same connection, with its pid as the far host sees it), stopped with their last proxy,
// and leave no process and no /dev/shm segment on either side; a killed ssh client ends the far
// worker (its watchdog sees its input end); a worker under CURVE works through the forward.
//
// Skipped (a MESSAGE says why) unless root with ip, nft, unshare, sshd and ssh at hand
// (tools/install-deps.sh installs them). Every wait is bounded; sshd is killed and the namespace
// deleted at the end, passed or failed.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using namespace std::chrono_literals;
using patro::test::Process;
using patro::test::program;
using patro::test::TempDir;

namespace {

constexpr const char* kNearAddress = "10.236.1.1";
constexpr const char* kFarAddress = "10.236.1.2";

bool have(const std::string& command) {
  return std::system(("command -v " + command + " >/dev/null 2>&1").c_str()) == 0;
}

int run(const std::string& command) {
  const int st = std::system(command.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

std::string read_command(const std::string& command) {
  std::string out;
  if (FILE* f = ::popen(command.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    ::pclose(f);
  }
  return out;
}

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string comm(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

bool process_gone(int pid) {
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

// Whether a TCP connection to address:port opens within timeout.
bool connects(const char* address, int port, std::chrono::milliseconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, address, &a.sin_addr);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (!ok && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      ok = err == 0;
    }
  }
  ::close(fd);
  return ok;
}

// The far host: a network namespace, a veth pair, nftables rules, and sshd in a mount namespace
// of its own. skip is set when it cannot be made here.
class FarHost {
 public:
  /// forwarding: its sshd's AllowTcpForwarding.
  explicit FarHost(bool forwarding = true)
      : ns_("patro-ssh-" + std::to_string(::getpid())), link_("pssh" + std::to_string(::getpid())) {
    if (::geteuid() != 0) {
      skip = "needs root (network and mount namespaces)";
      return;
    }
    for (const char* c : {"/usr/sbin/ip", "nft", "unshare", "ssh", "ssh-keygen", "/usr/sbin/sshd"})
      if (!have(c)) {
        skip = std::string("no ") + c + " here (tools/install-deps.sh installs it)";
        return;
      }
    if (run("ip netns add " + ns_ + " 2>/dev/null") != 0) {
      skip = "cannot make network namespaces here";
      return;
    }
    made_ = true;
    const std::string far_link = link_ + "f";
    if (run("ip link add " + link_ + " type veth peer name " + far_link + " netns " + ns_ +
            " 2>/dev/null") != 0) {
      skip = "cannot make veth pairs here";
      return;
    }
    const std::string nft = dir_.file("far.nft");
    std::ofstream(nft) << "table inet patro_far {\n"
                          "  chain input { type filter hook input priority 0; policy drop;\n"
                          "    iif \"lo\" accept; tcp dport 22 accept; }\n"
                          "  chain output { type filter hook output priority 0; policy drop;\n"
                          "    oif \"lo\" accept; tcp sport 22 accept; }\n"
                          "}\n";
    const std::string setup =
        "set -e; ip addr add " + std::string(kNearAddress) + "/24 dev " + link_ + "; ip link set " +
        link_ + " up; ip -n " + ns_ + " addr add " + kFarAddress + "/24 dev " + far_link +
        "; ip -n " + ns_ + " link set " + far_link + " up; ip -n " + ns_ +
        " link set lo up; ip netns exec " + ns_ + " nft -f " + nft +
        "; ssh-keygen -q -t ed25519 -N '' -f " + dir_.file("host_key") +
        "; ssh-keygen -q -t ed25519 -N '' -f " + dir_.file("client_key") + "; cp " +
        dir_.file("client_key.pub") + " " + dir_.file("authorized_keys") + "; mkdir -p /run/sshd";
    if (run(setup) != 0) {
      skip = "could not set up the far host (ip, nft or ssh-keygen failed)";
      return;
    }
    std::ofstream(dir_.file("sshd_config"))
        << "ListenAddress " << kFarAddress << ":22\n"
        << "HostKey " << dir_.file("host_key") << "\n"
        << "AuthorizedKeysFile " << dir_.file("authorized_keys") << "\n"
        << "PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
           "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\n"
           "PrintLastLog no\nLogLevel ERROR\n"
        << "AllowTcpForwarding " << (forwarding ? "yes" : "no") << "\n";
    // Its own /dev/shm: a tmpfs in the mount namespace sshd (and every session) lives in.
    sshd_ = std::make_unique<Process>(std::vector<std::string>{
        "/usr/sbin/ip", "netns", "exec", ns_, "unshare", "--mount", "--propagation", "private",
        "sh", "-c",
        "mount -t tmpfs -o size=64m,mode=1777 patro-far-shm /dev/shm && exec /usr/sbin/sshd -D "
        "-E " +
            dir_.file("sshd.log") + " -f " + dir_.file("sshd_config")});
    for (int i = 0; i < 100 && !connects(kFarAddress, 22, 100ms); ++i)
      std::this_thread::sleep_for(50ms);
    if (!connects(kFarAddress, 22, 1000ms)) {
      skip = "sshd did not start in the namespace";
      return;
    }
  }
  ~FarHost() {
    // Everything left in the namespace first (sessions outlive a killed sshd), then sshd, then
    // the namespace (its end of the veth pair takes ours with it).
    if (made_) run("ip netns pids " + ns_ + " 2>/dev/null | xargs -r kill -9 2>/dev/null");
    if (sshd_) sshd_->kill(5000ms);
    if (made_) run("ip netns del " + ns_ + " 2>/dev/null; ip link del " + link_ + " 2>/dev/null");
  }
  FarHost(const FarHost&) = delete;
  FarHost& operator=(const FarHost&) = delete;

  std::string skip;

  /// ssh's command line to the far host, then the remote command.
  std::vector<std::string> ssh(std::vector<std::string> command) const {
    std::vector<std::string> argv{"ssh",
                                  "-F",
                                  "/dev/null",
                                  "-i",
                                  dir_.file("client_key"),
                                  "-o",
                                  "StrictHostKeyChecking=no",
                                  "-o",
                                  "UserKnownHostsFile=/dev/null",
                                  "-o",
                                  "BatchMode=yes",
                                  "-o",
                                  "LogLevel=ERROR",
                                  std::string("root@") + kFarAddress};
    // ssh gives the far side no environment: the sanitizers' options (tools/run-tests.sh: TSan's
    // suppressions of libzmq's own hand-offs, which it cannot see) go with the command, or a far
    // program of a sanitizer build reports those and exits 66.
    std::vector<std::string> env;
    for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"})
      if (const char* v = std::getenv(name); v != nullptr && *v != '\0')
        env.push_back(std::string(name) + "=" + v);
    if (!env.empty() && !command.empty() && command[0] != "--") {
      argv.push_back("env");
      argv.insert(argv.end(), env.begin(), env.end());
    }
    argv.insert(argv.end(), command.begin(), command.end());
    return argv;
  }

  /// Processes in the far namespace, by pid and name, but sshd's listener.
  std::vector<std::pair<int, std::string>> processes() const {
    std::vector<std::pair<int, std::string>> out;
    std::istringstream pids(read_command("ip netns pids " + ns_ + " 2>/dev/null"));
    for (int pid; pids >> pid;)
      if (pid != sshd_->pid()) out.emplace_back(pid, comm(pid));
    return out;
  }
  int far_pid(const std::string& name) const {
    for (const auto& [pid, n] : processes())
      if (n == name) return pid;
    return 0;
  }
  /// What the far side's /dev/shm holds (seen through sshd's mount namespace).
  std::set<std::string> far_shm() const {
    return entries("/proc/" + std::to_string(sshd_->pid()) + "/root/dev/shm");
  }
  /// Waits (bounded) until only sshd's listener is left in the namespace.
  bool wait_far_empty(std::chrono::milliseconds timeout) const {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!processes().empty()) {
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  std::string ns_, link_;
  bool made_ = false;
  std::unique_ptr<Process> sshd_;
};

std::set<std::string> near_segments_of(int pid) {
  std::set<std::string> out;
  for (const std::string& e : entries("/dev/shm"))
    if (e.rfind("patro-pid" + std::to_string(pid) + "-", 0) == 0) out.insert(e);
  return out;
}

// ssh's handshake and the far side's start on a loaded machine (CI runs tests side by side) take
// longer than spawn's default start timeout allows.
patro::SpawnOptions spawn_options() {
  patro::SpawnOptions o;
  o.start_timeout = 30000ms;
  return o;
}

// Whether pid (a child of ours) was reaped: no zombie left (sshd stays a child of ours).
bool reaped(int pid) {
  int st = 0;
  return ::waitpid(pid, &st, WNOHANG) == -1 && errno == ECHILD;
}

// Waits (bounded) until pid is gone: a far process that init reaps.
bool wait_gone(int pid, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!process_gone(pid)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

}  // namespace

TEST_CASE("spawn through ssh alone: a forward to a broker here, used, stopped, nothing left") {
  FarHost far;
  if (!far.skip.empty()) {
    MESSAGE("skipped: " << far.skip);
    return;
  }
  // Nothing but ssh between the hosts: not even the far host's other ports answer.
  REQUIRE(connects(kFarAddress, 22, 2000ms));
  CHECK_FALSE(connects(kFarAddress, 7171, 500ms));
  REQUIRE(far.processes().empty());
  REQUIRE(far.far_shm().empty());

  SUBCASE("patro-worker: used through the forward, stopped with its last proxy") {
    int ssh_pid = 0, worker_pid = 0;
    // Its log lines come back over the same connection (Log::Remote): at trace, the far
    // server's wire trace of each request.
    std::mutex records_mu;
    std::vector<patro::LogRecord> records;
    patro::SpawnOptions o = spawn_options();
    o.client.forward_logs = patro::LogLevel::trace;
    o.client.on_log = [&](const patro::LogRecord& r) {
      const std::lock_guard<std::mutex> lock(records_mu);
      records.push_back(r);
    };
    {
      auto ps = patro::spawn(
          far.ssh({program("PATRO_WORKER"), "counter", "n", "queue", "jobs", "hash", "kv"}), o);
      REQUIRE(ps.size() == 3);
      ssh_pid = patro::spawned_pid(ps[0]);
      REQUIRE(ssh_pid > 0);
      CHECK(comm(ssh_pid) == "ssh");
      worker_pid = far.far_pid("patro-worker");
      REQUIRE(worker_pid > 0);  // it runs on the far host, not here
      CHECK(ps[0].call("add", 5) == 5);
      CHECK(ps[0].call("get") == 5);
      ps[1].call("push", "job-1");
      const patro::Value job = ps[1].call("take", 1000);
      CHECK(job.to_string().find("job-1") != std::string::npos);
      ps[2].call("set", "k", "v");
      CHECK(ps[2].call("get", "k") == "v");
      // Its lock segment lives in the far side's /dev/shm, not here.
      CHECK_FALSE(far.far_shm().empty());
      CHECK(near_segments_of(worker_pid).empty());
      // Through the broker only: the far side's direct path would be its own loopback. Many calls
      // in a row all succeed (no direct attempt to time out).
      for (int i = 0; i < 50; ++i) REQUIRE(ps[0].call("add", 1) == 6 + i);
      const patro::Client c = patro::client(ps[0]);
      CHECK(c.broker().rfind("tcp://127.0.0.1:", 0) == 0);  // the broker spawn runs here
      const patro::ClientStats stats = c.stats();
      CHECK(stats.direct_replies == 0);
      CHECK(stats.resends == 0);  // none sent twice: no direct attempt failed first
      // The far worker's lines, with its pid as the far host sees it (bounded wait).
      const auto until = std::chrono::steady_clock::now() + 10s;
      size_t from_worker = 0;
      while (std::chrono::steady_clock::now() < until) {
        {
          const std::lock_guard<std::mutex> lock(records_mu);
          from_worker = static_cast<size_t>(
              std::count_if(records.begin(), records.end(), [&](const patro::LogRecord& r) {
                return r.pid == worker_pid && !r.host.empty() && !r.who.empty();
              }));
        }
        if (from_worker > 0) break;
        (void)ps[0].call("get");  // a request: one more trace line
        std::this_thread::sleep_for(50ms);
      }
      CHECK(from_worker > 0);
      CHECK(c.stats().log_lines > 0);
    }
    // The last proxy went: ssh ended (the far worker's watchdog saw its input end) and was
    // reaped; nothing is left on either side.
    CHECK(process_gone(ssh_pid));
    CHECK(reaped(ssh_pid));
    CHECK(far.wait_far_empty(5000ms));
    CHECK(wait_gone(worker_pid, 5000ms));
    CHECK(far.far_shm().empty());
    CHECK(near_segments_of(worker_pid).empty());
  }

  SUBCASE("a user's own patronize() program through the forward, and stop_spawned") {
    // patro-test-server calls patronize() with no broker: under spawn's forward it registers
    // with the forward's end and prints its config itself.
    auto ps = patro::spawn(far.ssh({program("PATRO_TEST_SERVER"), far.dir().file("server.conf")}),
                           spawn_options());
    REQUIRE(ps.size() >= 1);
    const int server_pid = far.far_pid("patro-test-serv");
    CHECK(server_pid > 0);
    CHECK(patro::ref(ps[0]) == "HASH");
    ps[0]["abc"] = 7;
    CHECK(ps[0]["abc"].get() == 7);
    CHECK(patro::stop_spawned(ps[0]) == 0);  // ssh ended as the far side did: cleanly
    CHECK(far.wait_far_empty(5000ms));
    CHECK(far.far_shm().empty());
  }

  SUBCASE("the far worker's watchdog: the ssh client killed, the far worker ends") {
    patro::SpawnOptions o = spawn_options();
    o.watchdog = 2000ms;
    o.stop_timeout = 2000ms;
    auto ps = patro::spawn(far.ssh({program("PATRO_WORKER"), "counter", "n"}), o);
    REQUIRE(ps.size() == 1);
    CHECK(ps[0].call("add", 2) == 2);
    const int ssh_pid = patro::spawned_pid(ps[0]);
    const int worker_pid = far.far_pid("patro-worker");
    REQUIRE(worker_pid > 0);
    CHECK_FALSE(far.far_shm().empty());
    REQUIRE(::kill(ssh_pid, SIGKILL) == 0);
    // sshd sees the connection go, the far worker's input ends: it ends, and its segment goes.
    CHECK(far.wait_far_empty(10000ms));
    CHECK(wait_gone(worker_pid, 5000ms));
    CHECK(far.far_shm().empty());
    CHECK(patro::stop_spawned(ps[0]) == 128 + SIGKILL);  // reaped here
    CHECK(reaped(ssh_pid));
  }

  SUBCASE("CURVE inside the forward: the worker's --curve-key and --broker-key") {
    if (!patro::curve_available()) {
      MESSAGE("skipped: this libzmq has no CURVE");
      return;
    }
    const patro::CurveKeyPair broker_keys = patro::curve_keypair();
    const patro::CurveKeyPair server_keys = patro::curve_keypair();
    const patro::CurveKeyPair client_keys = patro::curve_keypair();
    // Files (the far host shares this file system), as Z85 holds characters a shell reads.
    patro::write_key_file(far.dir().file("server.key"), server_keys);
    std::ofstream(far.dir().file("broker.pub")) << broker_keys.public_key << "\n";
    patro::SpawnOptions o = spawn_options();
    o.forward_broker.curve = broker_keys;
    o.forward_broker.allow_servers = {server_keys.public_key};
    o.forward_broker.allow_clients = {client_keys.public_key};
    o.client.curve.keys = client_keys;
    {
      auto ps = patro::spawn(
          far.ssh({program("PATRO_WORKER"), "--curve-key", far.dir().file("server.key"),
                   "--broker-key", far.dir().file("broker.pub"), "counter", "n"}),
          o);
      REQUIRE(ps.size() == 1);
      CHECK(ps[0].call("add", 3) == 3);
      CHECK(ps[0].call("get") == 3);
    }
    CHECK(far.wait_far_empty(5000ms));
    CHECK(far.far_shm().empty());
    // A far worker whose key the broker here does not allow is refused: a clear error, and
    // nothing is left.
    patro::write_key_file(far.dir().file("stranger.key"), patro::curve_keypair());
    CHECK_THROWS_AS(patro::spawn(far.ssh({program("PATRO_WORKER"), "--curve-key",
                                          far.dir().file("stranger.key"), "--broker-key",
                                          far.dir().file("broker.pub"), "counter", "n"}),
                                 o),
                    patro::Error);
    CHECK(far.wait_far_empty(5000ms));
    CHECK(far.far_shm().empty());
  }
}

TEST_CASE("spawn through ssh: clear errors") {
  // No remote command (ssh's options before and after the destination, with their arguments in
  // the next word or the same one, and "--"): invalid_argument before anything runs.
  patro::SpawnOptions on;
  on.ssh_forward = patro::SshForward::on;
  for (const std::vector<std::string>& argv :
       std::vector<std::vector<std::string>>{{"ssh", "-o", "BatchMode=yes", "host1"},
                                             {"ssh", "-p", "2222", "-i", "key", "host1"},
                                             {"ssh", "-vp2222", "host1", "-l", "me"},
                                             {"ssh", "-4", "--", "host1"},
                                             {"ssh"}}) {
    CAPTURE(argv.size());
    try {
      (void)patro::spawn(argv, on);
      FAIL("no error");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::invalid_argument);
      CHECK(std::string(e.what()).find("remote command") != std::string::npos);
    }
  }
}

TEST_CASE("spawn through ssh to an sshd that forbids forwarding: a clear error, nothing left") {
  FarHost far(false);
  if (!far.skip.empty()) {
    MESSAGE("skipped: " << far.skip);
    return;
  }
  try {
    (void)patro::spawn(far.ssh({program("PATRO_WORKER"), "counter", "n"}), spawn_options());
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(e.code() == patro::Errc::server_unavailable);
    CHECK(std::string(e.what()).find("could not forward a port") != std::string::npos);
  }
  CHECK(far.wait_far_empty(5000ms));
  CHECK(far.far_shm().empty());
}
