#include "server_identity.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
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
void write_durably(const std::string& dir, const std::string& path, const std::string& text,
                   mode_t mode = 0640) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
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

constexpr size_t kSecretBytes = 32;

// The secret's bytes from its 64 hex digits (a trailing newline allowed); nullopt if it is not.
std::optional<std::string> parse_secret(std::string t) {
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.size() != 2 * kSecretBytes) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < t.size(); i += 2) {
    unsigned byte = 0;
    const auto [stop, ec] = std::from_chars(t.data() + i, t.data() + i + 2, byte, 16);
    if (ec != std::errc() || stop != t.data() + i + 2) return std::nullopt;
    out.push_back(static_cast<char>(byte));
  }
  return out;
}

// The first bytes (up to 159) of a small file of the data directory, never through a symbolic
// link; nullopt if it does not exist, and a failure if it cannot be read.
std::optional<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT)
      fail("cannot read " + path + ": " + std::strerror(errno) +
           (errno == ELOOP ? " (a symbolic link is not followed)" : ""));
    return std::nullopt;
  }
  char buf[160];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

}  // namespace

std::string server_secret_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot read the server secret " + path + ": " + std::strerror(errno));
  struct stat st {};
  const bool stated = ::fstat(fd, &st) == 0;
  char buf[160];
  const ssize_t n = stated && S_ISREG(st.st_mode) ? ::read(fd, buf, sizeof buf - 1) : -1;
  ::close(fd);
  if (!stated || !S_ISREG(st.st_mode)) fail("the server secret " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0)
    fail("the server secret " + path + " can be read by others than its owner (chmod 600 it)");
  const std::optional<std::string> secret =
      n > 0 ? parse_secret(std::string(buf, static_cast<size_t>(n))) : std::nullopt;
  if (!secret)
    fail(path +
         " does not hold a server secret (64 hex digits, as `openssl rand -hex 32` "
         "writes them)");
  return *secret;
}

std::string data_directory_server_secret(const std::string& dir) {
  const std::string path = dir + "/" + kServerSecretFile;
  if (const std::optional<std::string> text = read_small_file(path)) {
    const std::optional<std::string> secret = text->empty() ? std::nullopt : parse_secret(*text);
    if (!secret)
      fail(path +
           " does not hold a server secret (64 hex digits): restore the file, or remove it " +
           "to make a new one (a restart then waits until the broker drops the old process)");
    return *secret;
  }
  std::string secret(kSecretBytes, '\0');
  for (size_t got = 0; got < secret.size();) {
    const ssize_t n = ::getrandom(secret.data() + got, secret.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      fail(std::string("cannot make a server secret: getrandom: ") + std::strerror(errno));
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string text;
  for (unsigned char c : secret) {
    text += hex[c >> 4];
    text += hex[c & 15];
  }
  write_durably(dir, path, text + "\n", 0600);
  return secret;
}

uint64_t data_directory_server_id(const std::string& dir, uint64_t given) {
  const std::string path = dir + "/" + kServerIdFile;
  if (const std::optional<std::string> text = read_small_file(path)) {
    const std::optional<uint64_t> id = text->empty() ? std::nullopt : parse_server_id(*text);
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
  uint64_t id = given;
  if (id == 0) {
    std::random_device rd;
    while (id == 0) id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  write_durably(dir, path, format_server_id(id) + "\n");
  return id;
}

}  // namespace patro::worker
