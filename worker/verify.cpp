#include "verify.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <patro/patro.hpp>

#include "data_dir.hpp"
#include "wal_format.hpp"

namespace patro::worker {

namespace {

bool ends_with(const std::string& s, std::string_view p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

[[noreturn]] void bad(const std::string& what) {
  throw Error(Errc::bad_message, what);
}

// What each object writes (as its replay reads it), chosen by the file name's kind prefix.
void check_record(const std::string& kind, std::string_view payload) {
  const Value r = decode(payload);
  if (kind == "counter") {
    (void)r.as<int64_t>();
    return;
  }
  if (kind != "hash" && kind != "queue") return;  // unknown kind: the framing is all we know
  const ValueArray* a = r.if_array();
  if (a == nullptr || a->empty()) bad("not an array with an operation");
  const std::string op = (*a)[0].as<std::string>();
  if (kind == "hash") {
    if (!((op == "set" && a->size() == 3) || (op == "erase" && a->size() == 2)))
      bad("not a hash record (set KEY VALUE or erase KEY)");
    (void)(*a)[1].as<std::string>();
    return;
  }
  if (a->size() < 2) bad("a queue record without a job id");
  (void)(*a)[1].as<int64_t>();
  // The forms JobQueue::replay reads (job_queue.cpp lists them).
  if (op == "push") {
    if (a->size() != 3 && a->size() != 4) bad("a push record without its job");
    if (a->size() == 4 && (*a)[3].if_hash() == nullptr)
      bad("a push record whose options are not a hash");
  } else if (op == "lease") {
    if (a->size() != 4 && a->size() != 6) bad("a lease record without its delivery and deadline");
    for (size_t i = 2; i < a->size(); ++i) (void)(*a)[i].as<int64_t>();
  } else if (op == "dedup") {
    if (a->size() != 4) bad("a dedup record without its key and time");
    (void)(*a)[2].as<std::string>();
    (void)(*a)[3].as<int64_t>();
  } else if (op == "totals") {
    if (a->size() != 4) bad("a totals record without its pushed and acknowledged counts");
    (void)(*a)[2].as<int64_t>();
    (void)(*a)[3].as<int64_t>();
  } else if (op != "ack" && op != "requeue" && op != "bury" && op != "kick") {
    bad("an unknown queue operation '" + op + "'");
  }
}

}  // namespace

int verify_data_directory(const std::string& dir, std::ostream& out, std::ostream& err) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    err << "patro-worker verify: cannot read the directory " << dir << ": " << std::strerror(errno)
        << "\n";
    return 1;
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  if (const long holder = data_directory_holder(dir); holder != 0)
    out << dir << ": in use by a running patro-worker"
        << (holder > 0 ? " (pid " + std::to_string(holder) + ")" : std::string())
        << "; a torn tail reported may be a write in progress\n";
  int status = 0;
  int logs = 0;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    if (name.find(".wal.corrupt-") != std::string::npos) {
      out << path << ": a damaged log kept by --repair (not read)\n";
      continue;
    }
    if (ends_with(name, ".wal.compact")) {
      out << path << ": the leftover of an interrupted compaction (removed at the next start)\n";
      continue;
    }
    if (!ends_with(name, ".wal")) continue;
    ++logs;
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      err << path << ": "
          << (fd < 0 && errno == ELOOP ? "a symbolic link (a start refuses to follow it)"
              : fd < 0                 ? std::string("cannot open: ") + std::strerror(errno)
                                       : std::string("not a regular file"))
          << "\n";
      if (fd >= 0) ::close(fd);
      status = 1;
      continue;
    }
    std::string data;
    char buf[1 << 16];
    bool read_failed = false;
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) read_failed = true;
      if (n <= 0) break;
      data.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    if (read_failed) {
      err << path << ": cannot read: " << std::strerror(errno) << "\n";
      status = 1;
      continue;
    }
    const std::string kind = name.substr(0, name.find('-'));
    const wal_format::Scan scan = wal_format::scan(
        data, [&](std::string_view payload, size_t) { check_record(kind, payload); });
    const std::string format = scan.format == wal_format::Format::legacy ? "format 0 (upgraded at "
                                                                           "the next start)"
                               : scan.format == wal_format::Format::empty
                                   ? "empty"
                                   : "format " + std::to_string(scan.version);
    switch (scan.problem) {
      case wal_format::Problem::none:
        out << path << ": ok, " << format << ", " << scan.records << " records, " << data.size()
            << " bytes\n";
        break;
      case wal_format::Problem::torn_tail:
        err << path << ": a torn tail at offset " << scan.good_end << " ("
            << data.size() - scan.good_end << " bytes: " << scan.what
            << "); a start cuts it, after " << scan.records << " good records\n";
        if (status == 0) status = 3;
        break;
      case wal_format::Problem::corrupt:
        err << path << ": damaged at offset " << scan.problem_at << ": " << scan.what << " ("
            << scan.records << " good records before it, " << data.size() - scan.problem_at
            << " bytes from there on); a start refuses it, --repair cuts it there\n";
        status = 1;
        break;
    }
  }
  if (logs == 0) out << dir << ": no write-ahead logs\n";
  return status;
}

}  // namespace patro::worker
