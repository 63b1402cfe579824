#include "command.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
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
}  // namespace

int run_command(const std::vector<std::string>& cmd, const std::vector<std::string>& extra_env,
                const std::string* stdin_data) {
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
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdin_data != nullptr) {
    in_fd = data_fd(*stdin_data);
    if (in_fd < 0) {
      std::fprintf(stderr, "patro: cannot hand the job to %s: %s\n", argv[0], std::strerror(errno));
      posix_spawn_file_actions_destroy(&actions);
      return 127;
    }
    posix_spawn_file_actions_adddup2(&actions, in_fd, 0);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE, SIGUSR1}) sigaddset(&defaults, s);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t child = -1;
  const int err = posix_spawnp(&child, argv[0], &actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (in_fd >= 0) ::close(in_fd);
  if (err != 0) {
    std::fprintf(stderr, "patro: cannot run %s: %s\n", argv[0], std::strerror(err));
    return 127;
  }
  // Until the command exits: each turn takes a signal (or a second passes) and reaps.
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
  return status;
}

}  // namespace patro::cli
