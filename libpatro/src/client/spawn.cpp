// patro::spawn: a child process that serves, its config read from its standard output, owned by
// the connection its proxies share.
#include "patro/spawn.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string_view>
#include <thread>

#include "connection.hpp"
#include "log.hpp"
#include "os_failure.hpp"
#include "patro/broker.hpp"
#include "patro/config.hpp"
#include "patro/error.hpp"
#include "patro/server.hpp"

extern char** environ;

namespace patro::detail {

namespace {

constexpr size_t kMaxLine = 1 << 20;  // a config line longer than this is no config
constexpr const char* kSpawnedVariable = "PATRO_SPAWNED";

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

void write_all(int fd, const char* data, size_t n) noexcept {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    data += w;
    n -= static_cast<size_t>(w);
  }
}

// Copies the child's output to ours. A closed standard output of ours (a reader that went away)
// must not kill this process: SIGPIPE is blocked around the write, and one it raised is taken.
void write_out(const char* data, size_t n) noexcept {
  sigset_t pipe_set, old;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  if (::pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0) return;
  bool broken = false;
  while (n > 0) {
    const ssize_t w = ::write(STDOUT_FILENO, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      broken = w < 0 && errno == EPIPE;
      break;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  if (broken && !sigismember(&old, SIGPIPE)) {
    const timespec zero{};
    (void)::sigtimedwait(&pipe_set, nullptr, &zero);
  }
  (void)::pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

// "exited with status 3" / "was killed by signal 9 (Killed)"
std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           ::strsignal(WTERMSIG(status)) + ")";
  return "stopped (status " + std::to_string(status) + ")";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// argv[0] as execv wants it: as given when it holds a '/', else the first executable in PATH.
std::optional<std::string> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    if (dir.empty()) dir = ".";
    const std::string full = dir + "/" + name;
    struct stat st {};
    if (::stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(full.c_str(), X_OK) == 0)
      return full;
    start = end + 1;
  }
  return std::nullopt;
}

// ssh's options that take an argument (OpenSSH 9's ssh(1)), as one word or the next one.
constexpr std::string_view kSshOptionsWithArgument = "BbcDEeFIiJLlmOoPpQRSWw";
// What ssh prints (and then exits 255, with ExitOnForwardFailure) when the far sshd would not
// listen on the port asked for: taken, or forwarding not allowed there.
constexpr std::string_view kForwardFailed = "remote port forwarding failed";
// Far ports tried for a forward, at random below Linux's ephemeral range (32768-60999), where
// nothing that binds port 0 lands.
constexpr uint16_t kForwardPortLow = 10000, kForwardPortHigh = 32767;
constexpr int kForwardTries = 4;

// Where the remote command begins in an ssh command line (argv[0] is ssh): OpenSSH reads options
// before the destination and again after it, up to "--" or the first other word. nullopt: no
// remote command (or no destination).
std::optional<size_t> ssh_remote_command(const std::vector<std::string>& argv) {
  bool destination = false, terminated = false;
  size_t i = 1;
  while (i < argv.size()) {
    const std::string& a = argv[i];
    if (!terminated && a == "--") {
      terminated = true;
      ++i;
      continue;
    }
    if (!terminated && a.size() > 1 && a[0] == '-') {
      // A cluster of flags; the first that takes an argument takes the rest of the word, or the
      // next word when it ends the cluster.
      size_t step = 1;
      for (size_t k = 1; k < a.size(); ++k) {
        if (kSshOptionsWithArgument.find(a[k]) == std::string_view::npos) continue;
        if (k + 1 == a.size()) step = 2;
        break;
      }
      i += step;
      continue;
    }
    if (destination) return i;
    destination = true;
    ++i;
  }
  return std::nullopt;
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Whether a remote command (its words, and the words inside each, as the far shell splits them)
// names a broker: --broker or --broker=...
bool names_broker(const std::vector<std::string>& argv, size_t from) {
  for (size_t i = from; i < argv.size(); ++i) {
    std::istringstream words(argv[i]);
    for (std::string w; words >> w;)
      if (w == "--broker" || w.rfind("--broker=", 0) == 0) return true;
  }
  return false;
}

// Copies what a child writes to its standard error (ssh's own messages and the far side's) to
// ours, line by line, and notes ssh's "remote port forwarding failed" (kept back: spawn tries
// another port, or says so in its error).
class ErrorLines {
 public:
  void add(const char* data, size_t n) {
    pending_.append(data, n);
    size_t eol;
    while ((eol = pending_.find('\n')) != std::string::npos) {
      line(std::string_view(pending_.data(), eol + 1));
      pending_.erase(0, eol + 1);
    }
    if (pending_.size() > 4096) flush();
  }
  void flush() {
    if (!pending_.empty()) line(pending_);
    pending_.clear();
  }
  bool forward_failed() const noexcept { return forward_failed_; }

 private:
  void line(std::string_view l) {
    if (l.find(kForwardFailed) != std::string_view::npos) {
      forward_failed_ = true;
      return;
    }
    write_all(STDERR_FILENO, l.data(), l.size());
  }
  std::string pending_;
  bool forward_failed_ = false;
};

}  // namespace

/// The broker a spawn through an ssh forward runs on this host's loopback, in a thread of its
/// own, until it is destroyed.
class ForwardBroker {
 public:
  explicit ForwardBroker(BrokerOptions options) {
    options.frontend = "tcp://127.0.0.1:*";
    options.backend = "tcp://127.0.0.1:*";
    options.advertise.clear();
    broker_ = std::make_unique<Broker>(options);
    thread_ = std::thread([this] { broker_->run(); });
  }
  ~ForwardBroker() {
    broker_->stop();
    thread_.join();
  }
  ForwardBroker(const ForwardBroker&) = delete;
  ForwardBroker& operator=(const ForwardBroker&) = delete;
  /// The port of its backend on 127.0.0.1.
  std::string backend_port() const {
    const std::string e = broker_->backend_endpoint();
    return e.substr(e.rfind(':') + 1);
  }

 private:
  std::unique_ptr<Broker> broker_;
  std::thread thread_;
};

/// A child process spawn started: its pipes, the thread that copies its standard output on, and
/// its stop. Any thread may call stop(); the destructor stops it.
class ChildProcess {
 public:
  /// beat: how often to write a beat to its standard input for its watchdog; zero: never.
  /// stderr_fd: its standard error when spawn reads it (-1: it is ours). ends_at_eof: a stop
  /// closes its standard input and waits for it to end by itself before any signal (ssh, whose
  /// far side's watchdog ends at that end of input).
  ChildProcess(pid_t pid, int stdin_fd, int stdout_fd, int stderr_fd,
               std::chrono::milliseconds stop_timeout, std::chrono::milliseconds beat,
               bool ends_at_eof)
      : pid_(pid),
        stdin_fd_(stdin_fd),
        stdout_fd_(stdout_fd),
        stderr_fd_(stderr_fd),
        stop_timeout_(stop_timeout),
        beat_(beat),
        ends_at_eof_(ends_at_eof) {}
  ~ChildProcess() { (void)stop(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  int stdout_fd() const noexcept { return stdout_fd_; }
  int stderr_fd() const noexcept { return stderr_fd_; }
  /// The broker of a forward: stopped after the child, by stop().
  void set_broker(std::unique_ptr<ForwardBroker> broker) { broker_ = std::move(broker); }

  /// Copies what the child prints after its config (rest: what was read past it) to our standard
  /// output, in a thread of its own, until the child closes its end or stop(); the same thread
  /// beats for the child's watchdog, until stop() (a child whose output ended may still run).
  void forward_output(std::string rest, ErrorLines errors) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw os_failure("pipe2", errno);
    quit_read_ = fds[0];
    quit_write_ = fds[1];
    forwarder_ = std::thread([this, rest = std::move(rest), errors = std::move(errors)]() mutable {
      // A beat to a child that closed its standard input must not kill us: SIGPIPE stays blocked
      // in this thread (one raised here is dropped with the thread).
      sigset_t pipe_set;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      if (beat_.count() > 0) (void)::pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
      write_out(rest.data(), rest.size());
      char buf[4096];
      bool output = true, error_output = stderr_fd_ >= 0;
      auto next_beat = std::chrono::steady_clock::now();
      for (;;) {
        int timeout = -1;
        if (beat_.count() > 0) {
          const auto now = std::chrono::steady_clock::now();
          if (now >= next_beat) {
            beat();
            next_beat = now + beat_;
          }
          timeout = static_cast<int>(
              std::chrono::ceil<std::chrono::milliseconds>(next_beat - now).count());
        } else if (!output && !error_output) {
          return;
        }
        pollfd p[3] = {{output ? stdout_fd_ : -1, POLLIN, 0},
                       {error_output ? stderr_fd_ : -1, POLLIN, 0},
                       {quit_read_, POLLIN, 0}};
        const int r = ::poll(p, 3, timeout);
        if (r < 0) {
          if (errno == EINTR) continue;
          return;
        }
        if (p[2].revents != 0) {
          errors.flush();
          return;
        }
        if (r == 0) continue;
        if (p[0].revents != 0) {
          const ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
          if (n > 0)
            write_out(buf, static_cast<size_t>(n));
          else if (n == 0 || errno != EINTR)
            output = false;
        }
        if (p[1].revents != 0) {
          const ssize_t n = ::read(stderr_fd_, buf, sizeof buf);
          if (n > 0) {
            errors.add(buf, static_cast<size_t>(n));
          } else if (n == 0 || errno != EINTR) {
            errors.flush();
            error_output = false;
          }
        }
      }
    });
  }

  /// Closes its standard input, sends SIGTERM, SIGKILL after the stop timeout, reaps it; returns
  /// its exit status (the same on every call). Never throws.
  int stop() noexcept {
    std::lock_guard lock(mu_);
    if (!status_) {
      {
        std::lock_guard in(stdin_mu_);
        close_fd(stdin_fd_);
      }
      int st = reaped_.value_or(0);
      pid_t r = reaped_ ? pid_ : ::waitpid(pid_, &st, WNOHANG);
      if (r == 0 && ends_at_eof_)
        r = wait_until(std::chrono::steady_clock::now() + stop_timeout_, st);
      if (r == 0) {
        ::kill(pid_, SIGTERM);
        r = wait_until(std::chrono::steady_clock::now() + stop_timeout_, st);
        if (r == 0) {
          ::kill(pid_, SIGKILL);
          while ((r = ::waitpid(pid_, &st, 0)) < 0 && errno == EINTR) {
          }
        }
      }
      status_ = r == pid_ ? st : 0;
      if (forwarder_.joinable()) {
        write_all(quit_write_, "q", 1);
        forwarder_.join();
      }
      close_fd(quit_read_);
      close_fd(quit_write_);
      close_fd(stdout_fd_);
      close_fd(stderr_fd_);
      broker_.reset();  // after the child: its far side had nothing more to say through it
      // A child killed (or a server without a SIGTERM handler) leaves its lock segments behind.
      try {
        (void)remove_stale_lock_segments();
      } catch (...) {
      }
    }
    return exit_code(*status_);
  }

  /// Waits for the child's exit until deadline (polling waitpid): its pid (st: its wait status),
  /// 0 if it is still running, -1 if it cannot be waited for.
  pid_t wait_until(std::chrono::steady_clock::time_point deadline, int& st) noexcept {
    for (;;) {
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) reaped_ = st;
      if (r != 0 && !(r < 0 && errno == EINTR)) return r;
      if (std::chrono::steady_clock::now() >= deadline) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

 private:
  // One byte to the child's standard input (non-blocking: a child that does not read it loses
  // beats, never blocks us), unless stop() closed it.
  void beat() noexcept {
    std::lock_guard in(stdin_mu_);
    if (stdin_fd_ >= 0) (void)!::write(stdin_fd_, "b", 1);
  }

  const pid_t pid_;
  std::mutex stdin_mu_;  // stdin_fd_, written by the forwarder's beats and closed by stop()
  int stdin_fd_;
  int stdout_fd_;
  int stderr_fd_;
  const std::chrono::milliseconds stop_timeout_;
  const std::chrono::milliseconds beat_;
  const bool ends_at_eof_;
  std::unique_ptr<ForwardBroker> broker_;
  int quit_read_ = -1, quit_write_ = -1;
  std::thread forwarder_;
  std::mutex mu_;
  std::optional<int> status_;
  std::optional<int> reaped_;  // the wait status, once waitpid returned it
};

namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (::pipe2(fd, O_CLOEXEC) != 0) throw os_failure("pipe2", errno);
  }
  ~Pipe() {
    close_fd(fd[0]);
    close_fd(fd[1]);
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  int release(int i) noexcept {
    const int r = fd[i];
    fd[i] = -1;
    return r;
  }
};

std::string describe_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (s.size() > 200) return s + " …";
    s += (s.empty() ? "" : " ") + a;
  }
  return "'" + s + "'";
}

// A started child and what reading its standard output for a config found.
struct Started {
  std::shared_ptr<ChildProcess> child;
  std::optional<Config> config;
  std::string rest;   // its output read past the config line
  ErrorLines errors;  // its standard error, when read
  bool closed = false;
};

// Forks and execs program (argv, env), its standard input and output pipes (and its standard
// error, with capture_stderr), and reads its output up to a config or the deadline. Throws
// Error(invalid_argument) when exec fails (the child reaped).
Started start_child(const std::string& program, std::vector<std::string> argv,
                    std::vector<std::string> env_strings, const SpawnOptions& options,
                    std::chrono::steady_clock::time_point deadline,
                    std::chrono::milliseconds watchdog, bool capture_stderr) {
  // Everything the child needs, made before fork: only async-signal-safe calls between fork and
  // exec (other threads of ours may hold the allocator's locks).
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<char*> env;
  for (auto& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);

  Pipe in, out, exec_error;
  std::optional<Pipe> err;
  if (capture_stderr) err.emplace();
  const pid_t parent = ::getpid();
  const bool die_with_parent = options.die_with_parent;
  const pid_t pid = ::fork();
  if (pid < 0) throw os_failure("spawn: fork", errno);
  if (pid == 0) {
    if (die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
    }
    // A clean signal state: what the parent blocked or ignored (TerminationSignals, SIGPIPE)
    // would otherwise survive exec.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
    ::dup2(in.fd[0], STDIN_FILENO);
    ::dup2(out.fd[1], STDOUT_FILENO);
    if (err) ::dup2(err->fd[1], STDERR_FILENO);
    ::execve(program.c_str(), args.data(), env.data());
    const int e = errno;
    (void)!::write(exec_error.fd[1], &e, sizeof e);
    ::_exit(127);
  }
  close_fd(in.fd[0]);
  close_fd(out.fd[1]);
  if (err) close_fd(err->fd[1]);
  close_fd(exec_error.fd[1]);
  // Beats must never block us (a child that does not read them fills the pipe).
  if (watchdog.count() > 0) ::fcntl(in.fd[1], F_SETFL, O_NONBLOCK);
  Started s;
  s.child = std::make_shared<ChildProcess>(
      pid, in.release(1), out.release(0), err ? err->release(0) : -1, options.stop_timeout,
      watchdog.count() > 0 ? std::max(std::chrono::milliseconds(1), watchdog / 4)
                           : std::chrono::milliseconds(0),
      capture_stderr);
  ChildProcess& child = *s.child;

  // exec failed: the child wrote its errno before exiting; exec succeeded: the pipe closed.
  {
    int e = 0;
    ssize_t n;
    while ((n = ::read(exec_error.fd[0], &e, sizeof e)) < 0 && errno == EINTR) {
    }
    if (n == static_cast<ssize_t>(sizeof e)) {
      (void)child.stop();
      throw Error(Errc::invalid_argument,
                  "spawn: cannot run " + program + ": " + std::string(std::strerror(e)));
    }
  }

  // The first line of its standard output that parses as a config; lines before it are copied to
  // ours, and so is its standard error (when read) as it comes.
  std::string& buffer = s.rest;
  bool error_open = child.stderr_fd() >= 0;
  while (!s.config && !s.closed) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p[2] = {{child.stdout_fd(), POLLIN, 0},
                   {error_open ? child.stderr_fd() : -1, POLLIN, 0}};
    const int r = ::poll(p, 2, static_cast<int>(std::min<int64_t>(left.count() + 1, 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char chunk[4096];
    if (p[1].revents != 0) {
      const ssize_t n = ::read(child.stderr_fd(), chunk, sizeof chunk);
      if (n > 0) {
        s.errors.add(chunk, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        s.errors.flush();
        error_open = false;
      }
    }
    if (p[0].revents == 0) continue;
    const ssize_t n = ::read(child.stdout_fd(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      s.closed = true;
      break;
    }
    buffer.append(chunk, static_cast<size_t>(n));
    size_t eol;
    while (!s.config && (eol = buffer.find('\n')) != std::string::npos) {
      std::string_view line(buffer.data(), eol);
      size_t a = line.find_first_not_of(" \t\r");
      if (a != std::string_view::npos && line[a] == '{') {
        try {
          s.config = Config::parse(line.substr(a));
        } catch (const Error&) {
        }
      }
      if (!s.config) write_out(buffer.data(), eol + 1);
      buffer.erase(0, eol + 1);
    }
    if (!s.config && buffer.size() > kMaxLine) {
      write_out(buffer.data(), buffer.size());
      buffer.clear();
    }
  }
  if (s.closed && error_open) {
    // ssh's last words (why it ended) come on its standard error, after its output closed.
    const auto until =
        std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(500));
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      pollfd p{child.stderr_fd(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0) break;
      char chunk[4096];
      const ssize_t n = ::read(child.stderr_fd(), chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      s.errors.add(chunk, static_cast<size_t>(n));
    }
    s.errors.flush();
  }
  return s;
}

// Throws the error for a child that printed no config (s.closed: it closed its output; else the
// start timeout passed), after stopping it.
[[noreturn]] void no_config(Started& s, const std::string& what, const SpawnOptions& options) {
  std::string why;
  if (s.closed) {
    // It closed its standard output: it exited, or soon will; a short wait tells which.
    int st = 0;
    if (s.child->wait_until(std::chrono::steady_clock::now() + std::chrono::milliseconds(500),
                            st) == s.child->pid()) {
      (void)s.child->stop();
      throw Error(Errc::server_unavailable,
                  "spawn: " + what + " " + describe_status(st) + " before it printed a config");
    }
    why = " closed its standard output before it printed a config";
  } else {
    why = " printed no config within " + std::to_string(options.start_timeout.count()) + " ms";
  }
  const int status = s.child->stop();
  throw Error(s.closed ? Errc::server_unavailable : Errc::timeout,
              "spawn: " + what + why + " (stopped; exit status " + std::to_string(status) + ")");
}

// Whether spawn carries argv's connection through an ssh forward.
bool forwards(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (options.ssh_forward == SshForward::on) return true;
  if (options.ssh_forward == SshForward::off || basename_of(argv[0]) != "ssh") return false;
  const auto command = ssh_remote_command(argv);
  return command && !names_broker(argv, *command);
}

}  // namespace
}  // namespace patro::detail

namespace patro {

using detail::ChildProcess;

std::vector<Proxy> spawn(std::vector<std::string> argv, const SpawnOptions& options) {
  if (argv.empty()) throw Error(Errc::invalid_argument, "spawn: no program to run");
  const std::string what = detail::describe_command(argv);
  const auto program = detail::find_program(argv[0]);
  if (!program)
    throw Error(Errc::invalid_argument, "spawn: cannot find program '" + argv[0] + "' in PATH");
  if (options.watchdog.count() < 0)
    throw Error(Errc::invalid_argument, "spawn: a negative watchdog");

  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (std::strncmp(*e, "PATRO_SPAWNED=", 14) != 0 &&
        std::strncmp(*e, "PATRO_WATCHDOG_MS=", 18) != 0 &&
        std::strncmp(*e, "PATRO_SPAWN_BROKER=", 19) != 0)
      env_strings.emplace_back(*e);
  env_strings.push_back(std::string(detail::kSpawnedVariable) + "=1");
  const auto deadline = std::chrono::steady_clock::now() + options.start_timeout;

  if (!detail::forwards(argv, options)) {
    if (options.watchdog.count() > 0)
      env_strings.push_back("PATRO_WATCHDOG_MS=" + std::to_string(options.watchdog.count()));
    detail::Started s = detail::start_child(*program, argv, env_strings, options, deadline,
                                            options.watchdog, false);
    if (!s.config) detail::no_config(s, what, options);
    s.child->forward_output(std::move(s.rest), std::move(s.errors));
    std::vector<Proxy> proxies = get_proxies(*s.config, options.client);  // a failure stops it
    if (!proxies.empty()) proxies.front().connection()->set_child(std::move(s.child));
    return proxies;
  }

  // Through ssh's port forwarding: a broker here, its backend forwarded to the far host's
  // loopback, the far side told where (README "Remote processes: spawn").
  const auto command = detail::ssh_remote_command(argv);
  if (!command)
    throw Error(Errc::invalid_argument,
                "spawn: " + what + " is no ssh command line with a remote command to run");
  if (options.forward_watchdog.count() <= 0 && options.watchdog.count() == 0)
    throw Error(Errc::invalid_argument, "spawn: a forward needs a watchdog (forward_watchdog)");
  const std::chrono::milliseconds watchdog =
      options.watchdog.count() > 0 ? options.watchdog : options.forward_watchdog;
  // This process's log level goes along (the far side's lines come to our standard error), when
  // it is a plain word the far shell cannot misread.
  std::string log_level;
  if (const char* l = std::getenv("PATRO_LOG_LEVEL"); l != nullptr && *l != '\0') {
    log_level = l;
    if (log_level.size() > 16 ||
        log_level.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos)
      log_level.clear();
  }
  auto broker = std::make_unique<detail::ForwardBroker>(options.forward_broker);
  std::mt19937 random(std::random_device{}());
  std::uniform_int_distribution<int> ports(detail::kForwardPortLow, detail::kForwardPortHigh);
  for (int attempt = 1;; ++attempt) {
    const std::string far_port = std::to_string(ports(random));
    const std::string far_broker = "tcp://127.0.0.1:" + far_port;
    std::vector<std::string> ssh_argv{
        argv[0], "-o", "ExitOnForwardFailure=yes", "-R",
        "127.0.0.1:" + far_port + ":127.0.0.1:" + broker->backend_port()};
    ssh_argv.insert(ssh_argv.end(), argv.begin() + 1,
                    argv.begin() + static_cast<std::ptrdiff_t>(*command));
    // Words with no shell meaning, so the far shell passes them as they are.
    ssh_argv.insert(ssh_argv.end(), {"env", "PATRO_SPAWNED=1", "PATRO_SPAWN_BROKER=" + far_broker,
                                     "PATRO_WATCHDOG_MS=" + std::to_string(watchdog.count())});
    if (!log_level.empty()) ssh_argv.push_back("PATRO_LOG_LEVEL=" + log_level);
    for (size_t i = *command; i < argv.size(); ++i) {
      std::string word = argv[i];
      for (size_t at; (at = word.find("{broker}")) != std::string::npos;)
        word.replace(at, 8, far_broker);
      ssh_argv.push_back(std::move(word));
    }
    detail::Started s =
        detail::start_child(*program, ssh_argv, env_strings, options, deadline, watchdog, true);
    if (!s.config && s.errors.forward_failed()) {
      const int status = s.child->stop();
      if (attempt < detail::kForwardTries && std::chrono::steady_clock::now() < deadline) {
        PATRO_LOG(debug, "spawn") << "ssh could not listen on 127.0.0.1:" << far_port
                                  << " on the far host; trying another port";
        continue;
      }
      throw Error(Errc::server_unavailable,
                  "spawn: " + what + ": ssh could not forward a port on the far host's loopback (" +
                      std::to_string(attempt) +
                      " tries; is AllowTcpForwarding or PermitListen of its sshd against it?); "
                      "exit status " +
                      std::to_string(status));
    }
    if (!s.config) detail::no_config(s, what, options);
    s.child->set_broker(std::move(broker));
    s.child->forward_output(std::move(s.rest), std::move(s.errors));
    // The far side's direct endpoints would be on its own loopback: the broker only.
    ClientOptions client = options.client;
    if (client.route == Route::automatic) client.route = Route::broker;
    std::vector<Proxy> proxies = get_proxies(*s.config, client);  // a failure stops it
    if (!proxies.empty()) proxies.front().connection()->set_child(std::move(s.child));
    return proxies;
  }
}

int spawned_pid(const Proxy& p) {
  const auto& conn = p.connection();
  return conn && conn->child() ? conn->child()->pid() : 0;
}

int stop_spawned(const Proxy& p) {
  const auto& conn = p.connection();
  if (!conn || !conn->child())
    throw Error(Errc::invalid_argument, "stop_spawned: this proxy did not come from spawn");
  return conn->child()->stop();
}

}  // namespace patro
