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
#include <thread>

#include "connection.hpp"
#include "os_failure.hpp"
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

}  // namespace

/// A child process spawn started: its pipes, the thread that copies its standard output on, and
/// its stop. Any thread may call stop(); the destructor stops it.
class ChildProcess {
 public:
  /// beat: how often to write a beat to its standard input for its watchdog; zero: never.
  ChildProcess(pid_t pid, int stdin_fd, int stdout_fd, std::chrono::milliseconds stop_timeout,
               std::chrono::milliseconds beat)
      : pid_(pid),
        stdin_fd_(stdin_fd),
        stdout_fd_(stdout_fd),
        stop_timeout_(stop_timeout),
        beat_(beat) {}
  ~ChildProcess() { (void)stop(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const noexcept { return pid_; }
  int stdout_fd() const noexcept { return stdout_fd_; }

  /// Copies what the child prints after its config (rest: what was read past it) to our standard
  /// output, in a thread of its own, until the child closes its end or stop(); the same thread
  /// beats for the child's watchdog, until stop() (a child whose output ended may still run).
  void forward_output(std::string rest) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw os_failure("pipe2", errno);
    quit_read_ = fds[0];
    quit_write_ = fds[1];
    forwarder_ = std::thread([this, rest = std::move(rest)] {
      // A beat to a child that closed its standard input must not kill us: SIGPIPE stays blocked
      // in this thread (one raised here is dropped with the thread).
      sigset_t pipe_set;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      if (beat_.count() > 0) (void)::pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
      write_out(rest.data(), rest.size());
      char buf[4096];
      bool output = true;
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
        } else if (!output) {
          return;
        }
        pollfd p[2] = {{output ? stdout_fd_ : -1, POLLIN, 0}, {quit_read_, POLLIN, 0}};
        const int r = ::poll(p, 2, timeout);
        if (r < 0) {
          if (errno == EINTR) continue;
          return;
        }
        if (p[1].revents != 0) return;
        if (r == 0 || p[0].revents == 0) continue;
        const ssize_t n = ::read(stdout_fd_, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          output = false;
          continue;
        }
        write_out(buf, static_cast<size_t>(n));
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
  const std::chrono::milliseconds stop_timeout_;
  const std::chrono::milliseconds beat_;
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

  // Everything the child needs, made before fork: only async-signal-safe calls between fork and
  // exec (other threads of ours may hold the allocator's locks).
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (std::strncmp(*e, "PATRO_SPAWNED=", 14) != 0 &&
        std::strncmp(*e, "PATRO_WATCHDOG_MS=", 18) != 0)
      env_strings.emplace_back(*e);
  env_strings.push_back(std::string(detail::kSpawnedVariable) + "=1");
  if (options.watchdog.count() < 0)
    throw Error(Errc::invalid_argument, "spawn: a negative watchdog");
  if (options.watchdog.count() > 0)
    env_strings.push_back("PATRO_WATCHDOG_MS=" + std::to_string(options.watchdog.count()));
  std::vector<char*> env;
  for (auto& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);

  detail::Pipe in, out, exec_error;
  const pid_t parent = ::getpid();
  const bool die_with_parent = options.die_with_parent;
  const pid_t pid = ::fork();
  if (pid < 0) throw detail::os_failure("spawn: fork", errno);
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
    ::execve(program->c_str(), args.data(), env.data());
    const int e = errno;
    (void)!::write(exec_error.fd[1], &e, sizeof e);
    ::_exit(127);
  }
  detail::close_fd(in.fd[0]);
  detail::close_fd(out.fd[1]);
  detail::close_fd(exec_error.fd[1]);
  // Beats must never block us (a child that does not read them fills the pipe).
  if (options.watchdog.count() > 0) ::fcntl(in.fd[1], F_SETFL, O_NONBLOCK);
  auto child = std::make_shared<ChildProcess>(
      pid, in.release(1), out.release(0), options.stop_timeout,
      options.watchdog.count() > 0 ? std::max(std::chrono::milliseconds(1), options.watchdog / 4)
                                   : std::chrono::milliseconds(0));

  // exec failed: the child wrote its errno before exiting; exec succeeded: the pipe closed.
  {
    int e = 0;
    ssize_t n;
    while ((n = ::read(exec_error.fd[0], &e, sizeof e)) < 0 && errno == EINTR) {
    }
    if (n == static_cast<ssize_t>(sizeof e)) {
      (void)child->stop();
      throw Error(Errc::invalid_argument,
                  "spawn: cannot run " + *program + ": " + std::string(std::strerror(e)));
    }
  }

  // The first line of its standard output that parses as a config; lines before it are copied to
  // ours.
  const auto deadline = std::chrono::steady_clock::now() + options.start_timeout;
  std::string buffer;
  std::optional<Config> config;
  bool closed = false;
  while (!config && !closed) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{child->stdout_fd(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    char chunk[4096];
    const ssize_t n = ::read(child->stdout_fd(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      closed = true;
      break;
    }
    buffer.append(chunk, static_cast<size_t>(n));
    size_t eol;
    while (!config && (eol = buffer.find('\n')) != std::string::npos) {
      std::string_view line(buffer.data(), eol);
      size_t a = line.find_first_not_of(" \t\r");
      if (a != std::string_view::npos && line[a] == '{') {
        try {
          config = Config::parse(line.substr(a));
        } catch (const Error&) {
        }
      }
      if (!config) detail::write_out(buffer.data(), eol + 1);
      buffer.erase(0, eol + 1);
    }
    if (!config && buffer.size() > detail::kMaxLine) {
      detail::write_out(buffer.data(), buffer.size());
      buffer.clear();
    }
  }
  if (!config) {
    std::string why;
    if (closed) {
      // It closed its standard output: it exited, or soon will; a short wait tells which.
      int st = 0;
      if (child->wait_until(std::chrono::steady_clock::now() + std::chrono::milliseconds(500),
                            st) == pid) {
        (void)child->stop();
        throw Error(Errc::server_unavailable, "spawn: " + what + " " + detail::describe_status(st) +
                                                  " before it printed a config");
      }
      why = " closed its standard output before it printed a config";
    } else {
      why = " printed no config within " + std::to_string(options.start_timeout.count()) + " ms";
    }
    const int status = child->stop();
    throw Error(closed ? Errc::server_unavailable : Errc::timeout,
                "spawn: " + what + why + " (stopped; exit status " + std::to_string(status) + ")");
  }
  child->forward_output(std::move(buffer));
  std::vector<Proxy> proxies = get_proxies(*config, options.client);  // a failure stops the child
  if (!proxies.empty()) proxies.front().connection()->set_child(std::move(child));
  return proxies;
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
