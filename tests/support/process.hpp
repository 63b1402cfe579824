// Child processes for multi-process tests: started with fork+exec, killed when the test ends
// (passed or failed) and when the test process itself dies (PR_SET_PDEATHSIG).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace patro::test {

class Process {
 public:
  /// Starts argv[0] with the arguments; stdout goes to stdout_file if given.
  explicit Process(std::vector<std::string> argv, const std::string& stdout_file = {});
  ~Process();
  Process(Process&& o) noexcept : pid_(o.pid_), status_(o.status_) { o.pid_ = -1; }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  int pid() const noexcept { return pid_; }
  /// Sends sig; SIGSTOP returns once the process is stopped (bounded).
  void signal(int sig) const;
  /// Waits up to timeout for the exit; the exit code (128+signal if killed), or nullopt.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  /// SIGTERM, then SIGKILL after grace; returns the exit code.
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  /// SIGKILL at once (kill -9), and waits up to timeout; whether it ended.
  bool kill(std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

 private:
  int pid_ = -1;
  std::optional<int> status_;
};

/// A directory under /tmp removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// How a BrokerProcess runs: its endpoints ("*" ports pick free ones), timing, more options, and
/// where its stderr goes.
struct BrokerOptions {
  std::string front = "tcp://127.0.0.1:*";
  std::string back = "tcp://127.0.0.1:*";
  /// --heartbeat-ms and --liveness; empty leaves the broker's own default.
  std::string heartbeat_ms = "100";
  std::string liveness = "5";
  /// More options, after the others (--curve-key, --metrics, --log-file ...).
  std::vector<std::string> extra;
  /// When set, stderr is appended to this file and env is set, as redirected() does.
  std::string err_file;
  std::vector<std::string> env;
};

/// A patro-broker process (from $PATRO_BROKER); its bound endpoints are read from the file it
/// writes (dir/broker-endpoints). Throws if it does not start.
struct BrokerProcess {
  std::string front, back;
  std::unique_ptr<Process> proc;
  BrokerProcess(const TempDir& dir, const BrokerOptions& options);
  /// A 100 ms heartbeat and the given liveness.
  explicit BrokerProcess(const TempDir& dir,
                         const std::string& front_endpoint = "tcp://127.0.0.1:*",
                         const std::string& back_endpoint = "tcp://127.0.0.1:*",
                         const std::string& liveness = "5");
};

/// argv run through sh so that stderr is appended to err_file and env ("K=V" words, or env(1)'s
/// options such as "-u", "NAME") is set: for Process.
std::vector<std::string> redirected(std::vector<std::string> argv, const std::string& err_file,
                                    std::vector<std::string> env = {});

/// Waits until path exists and is non-empty (a config file being written); false on timeout.
bool wait_for_file(const std::string& path, std::chrono::milliseconds timeout);
/// Waits until the file holds text (a line a process logs) at least `times` times; false on
/// timeout.
bool wait_for_text(const std::string& path, const std::string& text,
                   std::chrono::milliseconds timeout, size_t times = 1);
/// How many times the file holds text.
size_t count_text(const std::string& path, const std::string& text);
/// A file's bytes (empty when it cannot be read).
std::string read_file(const std::string& path);
/// Replaces a file's bytes with data (creating it); throws if it cannot be written.
void write_file(const std::string& path, const std::string& data);
/// The path of a program built in the tree, from the environment variable that meson sets.
std::string program(const char* env_var);

}  // namespace patro::test
