#include "process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace patro::test {

Process::Process(std::vector<std::string> argv, const std::string& stdout_file) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // Only async-signal-safe calls between fork and exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!stdout_file.empty()) {
      int fd = open(stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        close(fd);
      }
    }
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
  }
}

void Process::signal(int sig) const {
  if (pid_ <= 0 || status_) return;
  ::kill(pid_, sig);
  if (sig != SIGSTOP) return;
  // A signal is delivered asynchronously, and each thread stops on its own: return once every
  // thread is stopped (bounded), so that what the test does next meets a frozen process (a thread
  // still running on another CPU could take one more message).
  const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
  for (int i = 0; i < 5000; ++i) {
    bool all = true, any = false;
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
      std::ifstream stat(t.path() / "stat");
      std::string line;
      if (!std::getline(stat, line)) continue;  // a thread that just ended
      const auto paren = line.rfind(')');
      any = true;
      all = all && paren != std::string::npos && paren + 2 < line.size() &&
            (line[paren + 2] == 'T' || line[paren + 2] == 't');
    }
    if (any && all) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int Process::stop(std::chrono::milliseconds grace) {
  if (status_) return *status_;
  signal(SIGTERM);
  if (auto s = wait(grace)) return *s;
  signal(SIGKILL);
  return *wait(std::chrono::milliseconds(10000));
}

bool Process::kill(std::chrono::milliseconds timeout) {
  if (status_) return true;
  signal(SIGKILL);
  return wait(timeout).has_value();
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/patro-test-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

BrokerProcess::BrokerProcess(const TempDir& dir, const BrokerOptions& options) {
  const std::string file = dir.file("broker-endpoints");
  std::remove(file.c_str());
  std::vector<std::string> argv{
      program("PATRO_BROKER"), "--front", options.front, "--back", options.back,
      "--endpoints-file",      file};
  if (!options.heartbeat_ms.empty())
    argv.insert(argv.end(), {"--heartbeat-ms", options.heartbeat_ms});
  if (!options.liveness.empty()) argv.insert(argv.end(), {"--liveness", options.liveness});
  argv.insert(argv.end(), options.extra.begin(), options.extra.end());
  if (!options.err_file.empty()) argv = redirected(std::move(argv), options.err_file, options.env);
  proc = std::make_unique<Process>(std::move(argv));
  if (!wait_for_file(file, std::chrono::seconds(20)))
    throw std::runtime_error("patro-broker did not write " + file);
  std::istringstream in(read_file(file));
  in >> front >> back;
}

BrokerProcess::BrokerProcess(const TempDir& dir, const std::string& front_endpoint,
                             const std::string& back_endpoint, const std::string& liveness)
    : BrokerProcess(dir,
                    BrokerOptions{front_endpoint, back_endpoint, "100", liveness, {}, {}, {}}) {}

std::vector<std::string> redirected(std::vector<std::string> argv, const std::string& err_file,
                                    std::vector<std::string> env) {
  std::vector<std::string> out{"/bin/sh", "-c", "f=$1; shift; exec env \"$@\" 2>>\"$f\"", "sh",
                               err_file};
  out.insert(out.end(), env.begin(), env.end());
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

size_t count_text(const std::string& path, const std::string& text) {
  const std::string data = read_file(path);
  size_t n = 0;
  for (size_t at = data.find(text); !text.empty() && at != std::string::npos;
       at = data.find(text, at + text.size()))
    ++n;
  return n;
}

bool wait_for_text(const std::string& path, const std::string& text,
                   std::chrono::milliseconds timeout, size_t times) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (count_text(path, text) >= times) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && st.st_size > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.flush();
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string program(const char* env_var) {
  const char* p = std::getenv(env_var);
  if (p == nullptr) throw std::runtime_error(std::string("set ") + env_var + " (meson test does)");
  return p;
}

}  // namespace patro::test
