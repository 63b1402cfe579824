#include "data_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <patro/error.hpp>

namespace patro::worker {

namespace {
std::string lock_path(const std::string& dir) {
  return dir + "/" + DataDirLock::kFileName;
}
long read_pid(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::strtol(buf, nullptr, 10) : 0;
}
}  // namespace

void make_data_directory(const std::string& dir) {
  std::string at;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    at = dir.substr(0, pos);
    if (at.empty() || at == "/") continue;
    if (::mkdir(at.c_str(), 0750) != 0 && errno != EEXIST)
      throw Error(Errc::invalid_argument,
                  "cannot create --data directory " + at + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Errc::invalid_argument, "--data " + dir + " is not a directory");
}

DataDirLock::DataDirLock(const std::string& dir) {
  const std::string path = lock_path(dir);
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd_ < 0)
    throw Error(Errc::invalid_argument,
                "cannot open the lock file " + path + " of --data " + dir + ": " +
                    std::strerror(errno) +
                    (errno == ELOOP ? " (a symbolic link is not followed)" : ""));
  int rc;
  do {
    rc = ::flock(fd_, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    const long holder = err == EWOULDBLOCK ? read_pid(fd_) : 0;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error(Errc::invalid_argument,
                  "--data " + dir + " is in use by another patro-worker" +
                      (holder > 0 ? " (pid " + std::to_string(holder) + ")" : std::string()) +
                      ", which holds " + path + "; nothing in it was touched");
    throw Error(Errc::internal, "cannot lock " + path + ": " + std::strerror(err));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // The pid is only for the message a second worker gives; the lock holds without it.
  }
}

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);  // the flock goes with the descriptor
}

long data_directory_holder(const std::string& dir) {
  const int fd = ::open(lock_path(dir).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;
  long holder = 0;
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    holder = read_pid(fd);
    if (holder == 0) holder = -1;
  } else {
    ::flock(fd, LOCK_UN);
  }
  ::close(fd);
  return holder;
}

}  // namespace patro::worker
