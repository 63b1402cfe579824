// patro-worker's --data directory: created if missing, and held by one worker at a time through
// an flock on DIR/patro-worker.lock for the worker's whole life (the kernel drops it when the
// process dies, kill -9 included), so that a second worker started on the same directory by
// mistake refuses before it opens, renames or compacts anything there.
#pragma once

#include <string>

namespace patro::worker {

/// mkdir -p, new directories with mode 0750 (the data is the service's own). Throws patro::Error
/// if dir cannot be made or is not a directory.
void make_data_directory(const std::string& dir);

class DataDirLock {
 public:
  static constexpr const char* kFileName = "patro-worker.lock";
  /// Takes the lock at once, or throws patro::Error naming the directory and the pid that holds
  /// it. Writes this process's pid into the lock file (for that message).
  explicit DataDirLock(const std::string& dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  int fd_ = -1;
};

/// The pid written in DIR's lock file if a process holds it now, else 0. Takes nothing.
long data_directory_holder(const std::string& dir);

}  // namespace patro::worker
