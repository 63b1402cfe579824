#include "command.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "context.hpp"

extern char** environ;

namespace patro::cli {

namespace {
// The data in an anonymous file, read from its start: a command that never reads its stdin
// cannot block patro (as a pipe would, once full).
int data_fd(const std::string& data) {
  const int fd = ::memfd_create("patro-job", MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

// The reaper learns of patro's death by this signal (PR_SET_PDEATHSIG).
constexpr int kParentDied = SIGUSR2;

int64_t mono_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

struct Reaped {
  bool cmd_done = false;
  int cmd_status = 0;
};

// Reaps every child that ended (the command, and descendants orphaned to this subreaper).
void reap(pid_t cmd, Reaped& r) {
  for (;;) {
    int st = 0;
    const pid_t w = ::waitpid(-1, &st, WNOHANG);
    if (w <= 0) return;
    if (w == cmd) {
      r.cmd_done = true;
      r.cmd_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
  }
}

// patro is gone: SIGTERM to the command's process group, SIGKILL after the grace period, and
// back only once nothing of the group is left (or 5 s more passed: a process stuck in the
// kernel outlives even SIGKILL).
void end_group(pid_t cmd, Reaped& r, int64_t grace_ms) {
  ::kill(-cmd, SIGTERM);
  ::kill(-cmd, SIGCONT);  // a stopped process takes its SIGTERM only when continued
  const int64_t start = mono_ms();
  bool killed = false;
  for (;;) {
    reap(cmd, r);
    if (::kill(-cmd, 0) != 0 && errno == ESRCH) return;
    const int64_t waited = mono_ms() - start;
    if (!killed && waited >= grace_ms) {
      ::kill(-cmd, SIGKILL);
      killed = true;
    }
    if (waited >= grace_ms + 5000) return;
    const timespec tick{0, 10 * 1000000};
    ::nanosleep(&tick, nullptr);
  }
}

// The reaper: a child of patro in a process group of its own, so that neither a signal to the
// command's group nor one to patro's takes it. It runs the command in a third group (its
// foreground on patro's terminal, if patro had it), passes on the signals patro passes it,
// and when patro dies ends the command's group. Its exit status is the command's.
[[noreturn]] void reaper(pid_t parent, char* const* argv, char* const* envp, int in_fd, int err_w,
                         int64_t grace_ms, pid_t terminal_group) {
  ::prctl(PR_SET_PDEATHSIG, kParentDied);
  if (::getppid() != parent) ::_exit(128 + SIGKILL);  // gone already: nothing was started
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  ::setpgid(0, 0);
  sigset_t set = handled_signals();  // blocked already, as inherited from patro
  sigaddset(&set, kParentDied);
  sigaddset(&set, SIGTTOU);  // to give the terminal back from the background
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  const pid_t cmd = ::fork();
  if (cmd < 0) ::_exit(127);
  if (cmd == 0) {
    ::setpgid(0, 0);
    if (terminal_group > 0) ::tcsetpgrp(0, ::getpid());
    if (in_fd >= 0) ::dup2(in_fd, 0);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE, SIGUSR1, SIGUSR2, SIGTTOU})
      ::signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvpe(argv[0], argv, envp);
    const int err = errno;
    (void)!::write(err_w, &err, sizeof err);
    ::_exit(127);
  }
  ::setpgid(cmd, cmd);  // as the child does: whichever runs first
  ::close(err_w);
  if (in_fd >= 0) ::close(in_fd);
  Reaped r;
  for (;;) {
    reap(cmd, r);
    if (r.cmd_done) break;
    const timespec turn{0, 200 * 1000000};
    const int sig = ::sigtimedwait(&set, nullptr, &turn);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) ::kill(-cmd, sig);
    if (sig == kParentDied || ::getppid() != parent) {
      end_group(cmd, r, grace_ms);
      break;
    }
  }
  if (terminal_group > 0 && ::tcgetpgrp(0) == cmd) ::tcsetpgrp(0, terminal_group);
  ::_exit(r.cmd_done ? r.cmd_status : 128 + SIGKILL);
}
}  // namespace

int run_command(const std::vector<std::string>& cmd, const std::vector<std::string>& extra_env,
                const std::string* stdin_data, std::chrono::milliseconds grace) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    bool replaced = false;
    for (const std::string& x : extra_env) {
      const size_t eq = x.find('=');
      if (std::strncmp(*e, x.c_str(), eq + 1) == 0) replaced = true;
    }
    if (!replaced) env_strings.emplace_back(*e);
  }
  env_strings.insert(env_strings.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> words = cmd;
  for (auto& s : words) argv.push_back(s.data());
  argv.push_back(nullptr);

  int in_fd = -1;
  if (stdin_data != nullptr) {
    in_fd = data_fd(*stdin_data);
    if (in_fd < 0) {
      std::fprintf(stderr, "patro: cannot hand the job to %s: %s\n", argv[0], std::strerror(errno));
      return 127;
    }
  }
  // The command gets the terminal only if patro has it (its group is the foreground one).
  const pid_t terminal_group = ::isatty(0) && ::tcgetpgrp(0) == ::getpgrp() ? ::getpgrp() : 0;
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "patro: cannot run %s: %s\n", argv[0], std::strerror(errno));
    if (in_fd >= 0) ::close(in_fd);
    return 127;
  }
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(err[0]);
    reaper(parent, argv.data(), envp.data(), in_fd, err[1], grace.count(), terminal_group);
  }
  ::close(err[1]);
  if (in_fd >= 0) ::close(in_fd);
  if (child < 0) {
    ::close(err[0]);
    std::fprintf(stderr, "patro: cannot run %s: %s\n", argv[0], std::strerror(errno));
    return 127;
  }
  // EOF once the command is running (its exec closed the pipe), or why it could not be run.
  int exec_err = 0;
  ssize_t n = 0;
  while ((n = ::read(err[0], &exec_err, sizeof exec_err)) < 0 && errno == EINTR) {
  }
  ::close(err[0]);
  // Until the reaper exits: each turn takes a signal (or a second passes) and reaps.
  const sigset_t set = handled_signals();
  int status = 127;
  for (;;) {
    int st = 0;
    const pid_t w = waitpid(child, &st, WNOHANG);
    if (w == child) {
      status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (w < 0 && errno != EINTR) break;
    timespec one_second{1, 0};
    const int sig = sigtimedwait(&set, nullptr, &one_second);
    if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) ::kill(child, sig);
  }
  if (n == static_cast<ssize_t>(sizeof exec_err)) {
    std::fprintf(stderr, "patro: cannot run %s: %s\n", argv[0], std::strerror(exec_err));
    return 127;
  }
  return status;
}

}  // namespace patro::cli
