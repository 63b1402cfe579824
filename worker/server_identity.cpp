#include "server_identity.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <random>

#include <patro/error.hpp>

namespace patro::worker {

std::optional<uint64_t> parse_server_id(const std::string& text) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.rfind("0x", 0) == 0 || t.rfind("0X", 0) == 0) t = t.substr(2);
  if (t.empty() || t.size() > 16) return std::nullopt;
  uint64_t id = 0;
  const char* end = t.data() + t.size();
  const auto [stop, ec] = std::from_chars(t.data(), end, id, 16);
  if (ec != std::errc() || stop != end) return std::nullopt;
  if (id == 0) return std::nullopt;  // 0 means "random" in ServerOptions
  return id;
}

std::string format_server_id(uint64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error(Errc::invalid_argument, what);
}

// Writes text to path through path.tmp, synced, then renamed and the directory synced: a crash
// leaves the old state or the new, never a torn file.
void write_durably(const std::string& dir, const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) fail("cannot write " + tmp + ": " + std::strerror(errno));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = ok ? errno : err;
    ::unlink(tmp.c_str());
    fail("cannot write " + path + ": " + std::strerror(e));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

uint64_t data_directory_server_id(const std::string& dir, uint64_t given) {
  const std::string path = dir + "/" + kServerIdFile;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    char buf[64] = {};
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    const std::optional<uint64_t> id =
        n > 0 ? parse_server_id(std::string(buf, static_cast<size_t>(n))) : std::nullopt;
    if (!id)
      fail(path +
           " does not hold a server id (16 hex digits): this data directory's identity is "
           "lost; restore the file, or remove it to start under a new id (clients must "
           "then look the names up again)");
    if (given != 0 && given != *id)
      fail("--server-id " + format_server_id(given) + " differs from " + format_server_id(*id) +
           ", the id kept in " + path + " (remove the file to change it)");
    return *id;
  }
  if (errno != ENOENT)
    fail("cannot read " + path + ": " + std::strerror(errno) +
         (errno == ELOOP ? " (a symbolic link is not followed)" : ""));
  uint64_t id = given;
  if (id == 0) {
    std::random_device rd;
    while (id == 0) id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  write_durably(dir, path, format_server_id(id) + "\n");
  return id;
}

}  // namespace patro::worker
