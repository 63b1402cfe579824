#include "filehandle_node.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstring>
#include <ctime>
#include <thread>

#include "patro/filehandle.hpp"

namespace patro::detail {

FileNode::~FileNode() {
  MutexLock lock(mu);
  if (fd >= 0) ::close(fd);
}

DirNode::~DirNode() {
  MutexLock lock(mu);
  if (dir) ::closedir(dir);
}

namespace {

// Perl's limits on what one call may ask of a handle.
constexpr int kMaxFormatWidth = 4096;
constexpr size_t kReadChunk = 64 * 1024;

[[noreturn]] void fail(const std::string& op, const std::string& path, int err) {
  throw RemoteError(Errc::remote_exception,
                    op + " on " + (path.empty() ? std::string("a handle") : "'" + path + "'") +
                        ": " + std::strerror(err),
                    "std::system_error", err);
}

[[noreturn]] void closed(const std::string& op, const std::string& path) {
  throw RemoteError(Errc::remote_exception,
                    op + " on closed filehandle" + (path.empty() ? "" : " '" + path + "'") + ": " +
                        std::strerror(EBADF),
                    "std::system_error", EBADF);
}

struct Mode {
  int flags = 0;
  bool read = false;
  bool write = false;
};

bool valid_layer(std::string_view layer) {
  // ":raw", ":utf8", ":encoding(UTF-8)", ":crlf"...: letters, digits and ():-_ only.
  for (char ch : layer)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == ':' || ch == '(' || ch == ')' ||
          ch == '-' || ch == '_'))
      return false;
  return layer.empty() || layer.front() == ':';
}

std::optional<Mode> parse_mode(std::string_view mode) {
  while (!mode.empty() && mode.back() == ' ') mode.remove_suffix(1);
  const size_t colon = mode.find(':');
  std::string_view layer = colon == std::string_view::npos ? "" : mode.substr(colon);
  mode = mode.substr(0, colon);
  while (!mode.empty() && mode.back() == ' ') mode.remove_suffix(1);
  if (!valid_layer(layer)) return std::nullopt;
  if (mode == "<") return Mode{O_RDONLY, true, false};
  if (mode == ">") return Mode{O_WRONLY | O_CREAT | O_TRUNC, false, true};
  if (mode == ">>") return Mode{O_WRONLY | O_CREAT | O_APPEND, false, true};
  if (mode == "+<") return Mode{O_RDWR, true, true};
  if (mode == "+>") return Mode{O_RDWR | O_CREAT | O_TRUNC, true, true};
  if (mode == "+>>") return Mode{O_RDWR | O_CREAT | O_APPEND, true, true};
  return std::nullopt;
}

size_t unread(const FileNode& n) PATRO_REQUIRES(n.mu) {
  return n.rbuf.size() - n.rpos;
}

/// Forgets the read-ahead, moving the descriptor back to where the reader is.
void drop_read_buffer(FileNode& n) PATRO_REQUIRES(n.mu) {
  if (unread(n) > 0) (void)::lseek(n.fd, -static_cast<off_t>(unread(n)), SEEK_CUR);
  n.rbuf.clear();
  n.rpos = 0;
}

/// Reads more into the buffer; the bytes read (0 at end of file).
size_t fill(FileNode& n, const char* op) PATRO_REQUIRES(n.mu) {
  if (n.rpos > 0) {
    n.rbuf.erase(0, n.rpos);
    n.rpos = 0;
  }
  const size_t old = n.rbuf.size();
  n.rbuf.resize(old + kReadChunk);
  ssize_t r;
  do {
    r = ::read(n.fd, n.rbuf.data() + old, kReadChunk);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    const int err = errno;
    n.rbuf.resize(old);
    fail(op, n.path, err);
  }
  n.rbuf.resize(old + static_cast<size_t>(r));
  return static_cast<size_t>(r);
}

void write_all(FileNode& n, std::string_view data, const char* op) PATRO_REQUIRES(n.mu) {
  drop_read_buffer(n);
  while (!data.empty()) {
    const ssize_t w = ::write(n.fd, data.data(), data.size());
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(op, n.path, errno);
    }
    data.remove_prefix(static_cast<size_t>(w));
  }
}

/// One line (with its newline), or null at end of file.
Value read_line(FileNode& n, size_t limit) PATRO_REQUIRES(n.mu) {
  size_t searched = n.rpos;
  for (;;) {
    const size_t nl = n.rbuf.find('\n', searched);
    if (nl != std::string::npos) {
      std::string line = n.rbuf.substr(n.rpos, nl + 1 - n.rpos);
      n.rpos = nl + 1;
      return Value(std::move(line));
    }
    if (unread(n) > limit)
      throw Error(Errc::message_too_large,
                  "a line of '" + n.path + "' is longer than " + std::to_string(limit) + " bytes");
    const size_t seen = n.rbuf.size() - n.rpos;
    if (fill(n, "readline") == 0) {
      if (unread(n) == 0) return Value();
      std::string rest = n.rbuf.substr(n.rpos);
      n.rpos = n.rbuf.size();
      return Value(std::move(rest));
    }
    searched = n.rpos + seen;  // fill() moved the unread bytes to the front
  }
}

std::string read_bytes(FileNode& n, size_t want) PATRO_REQUIRES(n.mu) {
  while (unread(n) < want) {
    if (fill(n, "read") == 0) break;
  }
  const size_t take = std::min(want, unread(n));
  std::string out = n.rbuf.substr(n.rpos, take);
  n.rpos += take;
  return out;
}

int64_t int_arg(const ValueArray& args, size_t i, const std::string& op) {
  if (i >= args.size())
    throw Error(Errc::invalid_argument, op + " needs argument " + std::to_string(i + 1));
  if (args[i].type() != Type::integer)
    throw Error(Errc::type_mismatch, op + ": argument " + std::to_string(i + 1) +
                                         " must be an integer, not " + type_name(args[i].type()));
  return *args[i].if_int();
}

std::string string_arg(const ValueArray& args, size_t i, const std::string& op) {
  if (i >= args.size())
    throw Error(Errc::invalid_argument, op + " needs argument " + std::to_string(i + 1));
  if (args[i].type() != Type::string)
    throw Error(Errc::type_mismatch, op + ": argument " + std::to_string(i + 1) +
                                         " must be a string, not " + type_name(args[i].type()));
  return *args[i].if_string();
}

void refuse_unless_allowed(const ServedCall& c, const std::string& op) {
  if (c.options.secure_filehandles)
    throw Error(Errc::unsupported,
                op + " through a proxy is refused: the server runs with secure_filehandles "
                     "(a server may allow it with ServerOptions::secure_filehandles = false)");
}

bool permitted(const struct stat& st, char test) {
  const mode_t owner = test == 'r' ? S_IRUSR : test == 'w' ? S_IWUSR : S_IXUSR;
  const mode_t group = test == 'r' ? S_IRGRP : test == 'w' ? S_IWGRP : S_IXGRP;
  const mode_t other = test == 'r' ? S_IROTH : test == 'w' ? S_IWOTH : S_IXOTH;
  if (::geteuid() == 0)
    return test != 'x' || (st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) || S_ISDIR(st.st_mode);
  if (st.st_uid == ::geteuid()) return st.st_mode & owner;
  if (st.st_gid == ::getegid()) return st.st_mode & group;
  return st.st_mode & other;
}

Value stat_hash(const struct stat& st) {
  ValueHash h;
  h["dev"] = static_cast<int64_t>(st.st_dev);
  h["ino"] = static_cast<int64_t>(st.st_ino);
  h["mode"] = static_cast<int64_t>(st.st_mode);
  h["nlink"] = static_cast<int64_t>(st.st_nlink);
  h["uid"] = static_cast<int64_t>(st.st_uid);
  h["gid"] = static_cast<int64_t>(st.st_gid);
  h["size"] = static_cast<int64_t>(st.st_size);
  h["atime"] = static_cast<int64_t>(st.st_atime);
  h["mtime"] = static_cast<int64_t>(st.st_mtime);
  h["ctime"] = static_cast<int64_t>(st.st_ctime);
  return Value(std::move(h));
}

ValueArray file_op(FileNode& n, ServedCall& c) PATRO_REQUIRES(n.mu) {
  const std::string op(c.name);
  const ValueArray& a = c.args;
  const size_t limit = c.options.limits.max_message_size;
  const bool list = c.context == wire::CallContext::List;

  // Opening and closing are the server's business unless it says otherwise.
  if (op == "open" || op == "close" || op == "sysopen") {
    refuse_unless_allowed(c, op);
    if (op == "close") {
      if (n.fd < 0) closed("close", n.path);
      ::close(n.fd);
      n.fd = -1;
      n.rbuf.clear();
      n.rpos = 0;
      return {Value(true)};
    }
    if (op == "open") {
      open_file(n, string_arg(a, 0, op), string_arg(a, 1, op));
      return {Value(true)};
    }
    const std::string path = string_arg(a, 0, op);
    const int64_t flags = int_arg(a, 1, op);
    const int64_t perms = a.size() > 2 ? int_arg(a, 2, op) : 0666;
    constexpr int64_t kAllowed = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND;
    if ((flags & ~kAllowed) != 0 || (flags & O_ACCMODE) == O_ACCMODE)
      throw Error(Errc::invalid_argument, "sysopen: flags " + std::to_string(flags) +
                                              " are not O_RDONLY/O_WRONLY/O_RDWR with "
                                              "O_CREAT, O_EXCL, O_TRUNC or O_APPEND");
    const int fd = ::open(path.c_str(), static_cast<int>(flags) | O_CLOEXEC,
                          static_cast<mode_t>(perms & 07777));
    if (fd < 0) fail("sysopen", path, errno);
    if (n.fd >= 0) ::close(n.fd);
    n.fd = fd;
    n.path = path;
    n.can_read = (flags & O_ACCMODE) != O_WRONLY;
    n.can_write = (flags & O_ACCMODE) != O_RDONLY;
    n.rbuf.clear();
    n.rpos = 0;
    return {Value(true)};
  }

  // File tests answer for a closed handle too: it does not exist.
  if (op == "test" && n.fd < 0 && !a.empty() && a[0] == "e") return {Value(false)};
  if (op == "opened") return {Value(n.fd >= 0)};
  if (n.fd < 0) closed(op, n.path);

  if (op == "print" || op == "printf" || op == "write") {
    std::string out;
    if (op == "printf") {
      out = perl_sprintf(string_arg(a, 0, op), a, 1);
    } else {
      for (const Value& v : a) out += perl_string(v);
    }
    write_all(n, out, op.c_str());
    return {Value(true)};
  }
  if (op == "readline") {
    if (!list) return {read_line(n, limit)};
    ValueArray lines;
    size_t total = 0;
    for (;;) {
      Value line = read_line(n, limit);
      if (line.is_null()) break;
      total += line.if_string()->size();
      if (total > limit)
        throw Error(Errc::message_too_large, "the lines of '" + n.path + "' are more than " +
                                                 std::to_string(limit) +
                                                 " bytes; read them one at a time");
      lines.push_back(std::move(line));
    }
    return lines;
  }
  if (op == "read" || op == "getc") {
    const int64_t want = op == "getc" ? 1 : int_arg(a, 0, op);
    if (want < 0) throw Error(Errc::invalid_argument, "read: negative length");
    if (static_cast<uint64_t>(want) > limit)
      throw Error(
          Errc::message_too_large,
          "read: " + std::to_string(want) + " bytes is over the limit of " + std::to_string(limit));
    std::string got = read_bytes(n, static_cast<size_t>(want));
    if (op == "getc" && got.empty()) return {Value()};
    return {Value(std::move(got))};
  }
  if (op == "eof") {
    if (unread(n) > 0) return {Value(false)};
    if (!n.can_read) return {Value(true)};
    return {Value(fill(n, "eof") == 0)};
  }
  if (op == "seek") {
    int64_t pos = int_arg(a, 0, op);
    const int64_t whence = a.size() > 1 ? int_arg(a, 1, op) : 0;
    if (whence < 0 || whence > 2)
      throw Error(Errc::invalid_argument, "seek: whence must be 0, 1 or 2");
    if (whence == SEEK_CUR) pos -= static_cast<int64_t>(unread(n));
    n.rbuf.clear();
    n.rpos = 0;
    if (::lseek(n.fd, static_cast<off_t>(pos), static_cast<int>(whence)) < 0)
      fail("seek", n.path, errno);
    return {Value(true)};
  }
  if (op == "tell") {
    const off_t at = ::lseek(n.fd, 0, SEEK_CUR);
    if (at < 0) fail("tell", n.path, errno);
    return {Value(static_cast<int64_t>(at) - static_cast<int64_t>(unread(n)))};
  }
  if (op == "truncate") {
    const int64_t len = int_arg(a, 0, op);
    if (len < 0) throw Error(Errc::invalid_argument, "truncate: negative length");
    drop_read_buffer(n);
    if (::ftruncate(n.fd, static_cast<off_t>(len)) != 0) fail("truncate", n.path, errno);
    return {Value(true)};
  }
  if (op == "flush") return {Value(true)};  // writes are not buffered
  if (op == "binmode") {
    const std::string layer = a.empty() ? std::string(":raw") : string_arg(a, 0, op);
    if (!valid_layer(layer))
      throw Error(Errc::invalid_argument, "binmode: '" + layer.substr(0, 40) + "' is not a layer");
    return {Value(true)};
  }
  if (op == "flock") {
    const int64_t how = int_arg(a, 0, op);
    const int64_t kind = how & ~int64_t{LOCK_NB};
    if (kind != LOCK_SH && kind != LOCK_EX && kind != LOCK_UN)
      throw Error(Errc::invalid_argument, "flock: operation " + std::to_string(how) +
                                              " is not LOCK_SH, LOCK_EX or LOCK_UN (| LOCK_NB)");
    // A blocking flock waits no longer than the caller does.
    // TODO(perf): this holds the handle's lock and a worker while it waits.
    for (;;) {
      if (::flock(n.fd, static_cast<int>(kind) | LOCK_NB) == 0) return {Value(true)};
      const int err = errno;
      if (err == EINTR) continue;
      if (err != EWOULDBLOCK || (how & LOCK_NB) || std::chrono::steady_clock::now() >= c.deadline)
        fail("flock", n.path, err);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (op == "stat" || op == "test") {
    struct stat st {};
    if (::fstat(n.fd, &st) != 0) fail(op, n.path, errno);
    if (op == "stat") return {stat_hash(st)};
    const std::string t = string_arg(a, 0, op);
    if (t.size() != 1) throw Error(Errc::invalid_argument, "a file test is one letter");
    switch (t[0]) {
      case 'e':
        return {Value(true)};
      case 's':
        return {st.st_size > 0 ? Value(static_cast<int64_t>(st.st_size)) : Value()};
      case 'z':
        return {Value(st.st_size == 0)};
      case 'f':
        return {Value(S_ISREG(st.st_mode))};
      case 'd':
        return {Value(S_ISDIR(st.st_mode))};
      case 'r':
      case 'w':
      case 'x':
        return {Value(permitted(st, t[0]))};
      case 'M':
        return {Value(std::difftime(std::time(nullptr), st.st_mtime) / 86400.0)};
      default:
        throw Error(Errc::invalid_argument, "unknown file test -" + t);
    }
  }
  throw Error(Errc::unknown_method, "a file handle has no operation \"" + op + "\"");
}

ValueArray dir_op(DirNode& n, ServedCall& c) PATRO_REQUIRES(n.mu) {
  const std::string op(c.name);
  if (op == "opendir" || op == "closedir") {
    refuse_unless_allowed(c, op);
    if (op == "closedir") {
      if (!n.dir) closed("closedir", n.path);
      ::closedir(n.dir);
      n.dir = nullptr;
      return {Value(true)};
    }
    open_dir(n, string_arg(c.args, 0, op));
    return {Value(true)};
  }
  if (!n.dir) closed(op, n.path);
  if (op == "readdir") {
    const size_t limit = c.options.limits.max_message_size;
    ValueArray names;
    size_t total = 0;
    for (;;) {
      errno = 0;
      const dirent* e = ::readdir(n.dir);
      if (!e) {
        if (errno != 0) fail("readdir", n.path, errno);
        break;
      }
      if (c.context != wire::CallContext::List) return {Value(std::string(e->d_name))};
      total += std::strlen(e->d_name) + 16;
      if (total > limit)
        throw Error(Errc::message_too_large, "directory '" + n.path + "' has too many entries");
      names.emplace_back(std::string(e->d_name));
    }
    if (c.context != wire::CallContext::List) return {Value()};
    return names;
  }
  if (op == "telldir") return {Value(static_cast<int64_t>(::telldir(n.dir)))};
  if (op == "seekdir") {
    ::seekdir(n.dir, static_cast<long>(int_arg(c.args, 0, op)));
    return {Value(true)};
  }
  if (op == "rewinddir") {
    ::rewinddir(n.dir);
    return {Value(true)};
  }
  throw Error(Errc::unknown_method, "a directory handle has no operation \"" + op + "\"");
}

// --- sprintf ---

Value perl_numify(const Value& v) {
  switch (v.type()) {
    case Type::integer:
    case Type::number:
      return v;
    case Type::boolean:
      return Value(int64_t{*v.if_bool() ? 1 : 0});
    case Type::string: {
      const std::string& s = *v.if_string();
      char* end = nullptr;
      const double d = std::strtod(s.c_str(), &end);
      if (end == s.c_str()) return Value(int64_t{0});
      errno = 0;
      const long long i = std::strtoll(s.c_str(), &end, 10);
      if (errno == 0 && (*end == '\0' || *end == '\n' || *end == ' ') &&
          static_cast<double>(i) == d)
        return Value(static_cast<int64_t>(i));
      return Value(d);
    }
    default:
      return Value(int64_t{0});
  }
}

double to_double(const Value& v) {
  Value n = perl_numify(v);
  return n.type() == Type::integer ? static_cast<double>(*n.if_int()) : *n.if_double();
}

int64_t to_int(const Value& v) {
  Value n = perl_numify(v);
  if (n.type() == Type::integer) return *n.if_int();
  const double d = *n.if_double();
  if (!std::isfinite(d)) return 0;
  if (d >= 9.2e18) return INT64_MAX;
  if (d <= -9.2e18) return INT64_MIN;
  return static_cast<int64_t>(d);
}

template <class... T>
std::string format_one(const std::string& spec, T... v) {
  const int size = std::snprintf(nullptr, 0, spec.c_str(), v...);
  if (size < 0) return std::string();
  std::string out(static_cast<size_t>(size) + 1, '\0');
  std::snprintf(out.data(), out.size(), spec.c_str(), v...);
  out.resize(static_cast<size_t>(size));
  return out;
}

}  // namespace

std::string perl_sprintf(std::string_view f, const ValueArray& args, size_t next) {
  std::string out;
  auto take = [&]() -> Value { return next < args.size() ? args[next++] : Value(); };
  size_t i = 0;
  while (i < f.size()) {
    const char ch = f[i];
    if (ch != '%') {
      out += ch;
      ++i;
      continue;
    }
    const size_t start = i++;
    std::string flags;
    while (i < f.size() && std::strchr("-+ 0#", f[i]) && flags.size() < 5) flags += f[i++];
    auto number = [&](int& into) -> bool {
      if (i < f.size() && f[i] == '*') {
        ++i;
        into = static_cast<int>(
            std::clamp<int64_t>(to_int(take()), -kMaxFormatWidth, kMaxFormatWidth));
        return true;
      }
      bool any = false;
      into = 0;
      while (i < f.size() && std::isdigit(static_cast<unsigned char>(f[i]))) {
        into = into * 10 + (f[i++] - '0');
        if (into > kMaxFormatWidth)
          throw Error(Errc::invalid_argument,
                      "printf: a width or precision over " + std::to_string(kMaxFormatWidth));
        any = true;
      }
      return any;
    };
    int width = 0, precision = -1;
    const bool has_width = number(width);
    if (has_width && width < 0) {
      flags += '-';
      width = -width;
    }
    if (i < f.size() && f[i] == '.') {
      ++i;
      number(precision);
      if (precision < 0) precision = -1;
    }
    while (i < f.size() && std::strchr("hlqLV", f[i])) ++i;  // size modifiers mean nothing here
    if (i >= f.size()) {
      out.append(f.substr(start));
      break;
    }
    const char conv = f[i++];
    // Keep only the flags and precision C defines for the conversion (the rest are undefined
    // behaviour in snprintf): '#' only for o x X e f g a, '0' '+' ' ' not for c and s.
    const bool text = conv == 'c' || conv == 's' || conv == 'b' || conv == 'B';
    const bool alternate = std::strchr("oxXeEfFgGaA", conv) != nullptr;
    std::string kept;
    for (char fl : flags) {
      if (fl == '#' && !alternate) continue;
      if ((fl == '0' || fl == '+' || fl == ' ') && text) continue;
      if ((fl == '+' || fl == ' ') && std::strchr("uoxX", conv)) continue;
      kept += fl;
    }
    if (conv == 'c') precision = -1;
    std::string spec = "%" + kept;
    if (width > 0) spec += std::to_string(width);
    if (precision >= 0) spec += "." + std::to_string(precision);
    switch (conv) {
      case '%':
        out += '%';
        break;
      case 'c': {
        const int64_t code = to_int(take());
        out += format_one(spec + "c", static_cast<int>(code >= 0 && code < 256 ? code : '?'));
        break;
      }
      case 's':
        out += format_one(spec + "s", perl_string(take()).c_str());
        break;
      case 'd':
      case 'i':
        out += format_one(spec + "lld", static_cast<long long>(to_int(take())));
        break;
      case 'u':
      case 'o':
      case 'x':
      case 'X':
        out += format_one(spec + "ll" + conv,
                          static_cast<unsigned long long>(static_cast<uint64_t>(to_int(take()))));
        break;
      case 'b':
      case 'B': {
        uint64_t u = static_cast<uint64_t>(to_int(take()));
        std::string bits;
        do {
          bits.insert(bits.begin(), static_cast<char>('0' + (u & 1)));
          u >>= 1;
        } while (u);
        out += format_one(spec + "s", bits.c_str());
        break;
      }
      case 'e':
      case 'E':
      case 'f':
      case 'F':
      case 'g':
      case 'G':
      case 'a':
      case 'A':
        out += format_one(spec + conv, to_double(take()));
        break;
      default:
        out.append(f.substr(start, i - start));  // Perl prints an invalid conversion as it is
        break;
    }
    if (out.size() > (64u << 20))
      throw Error(Errc::invalid_argument, "printf: the output is too large");
  }
  return out;
}

void open_file(FileNode& n, std::string_view mode, const std::string& path) {
  const std::string_view base = mode.substr(0, mode.find(':'));
  if (base.find('|') != std::string_view::npos || base.find('&') != std::string_view::npos ||
      base.find('-') != std::string_view::npos)
    throw Error(Errc::unsupported, "open mode '" + std::string(mode.substr(0, 20)) +
                                       "' is refused: pipes and duplicated handles are never "
                                       "opened for a client");
  const auto m = parse_mode(mode);
  if (!m)
    throw Error(Errc::invalid_argument, "open mode '" + std::string(mode.substr(0, 20)) +
                                            "' is not one of < > >> +< +> +>>");
  const int fd = ::open(path.c_str(), m->flags | O_CLOEXEC, 0666);
  if (fd < 0) fail("open", path, errno);
  if (n.fd >= 0) ::close(n.fd);
  n.fd = fd;
  n.path = path;
  n.can_read = m->read;
  n.can_write = m->write;
  n.rbuf.clear();
  n.rpos = 0;
}

void open_dir(DirNode& n, const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) fail("opendir", path, errno);
  if (n.dir) ::closedir(n.dir);
  n.dir = d;
  n.path = path;
}

ValueArray file_operation(const std::shared_ptr<Node>& target, ServedCall& c) {
  if (target->kind == NodeKind::file) {
    auto& n = node_cast<FileNode>(*target);
    MutexLock lock(n.mu);
    return file_op(n, c);
  }
  if (target->kind == NodeKind::dir) {
    auto& n = node_cast<DirNode>(*target);
    MutexLock lock(n.mu);
    return dir_op(n, c);
  }
  throw Error(Errc::type_mismatch, "cannot " + std::string(c.name).substr(0, 40) + " a " +
                                       target->reftype() + ": it is not a file handle");
}

}  // namespace patro::detail

namespace patro {

FileHandle FileHandle::open(const std::string& path, std::string_view mode) {
  auto node = std::make_shared<detail::FileNode>();
  detail::MutexLock lock(node->mu);
  try {
    detail::open_file(*node, mode, path);
  } catch (const Error& e) {
    throw Error(Errc::invalid_argument, e.what());
  }
  lock.unlock();
  return FileHandle(node);
}

void FileHandle::close() const {
  auto& n = detail::node_cast<detail::FileNode>(*node_);
  detail::MutexLock lock(n.mu);
  if (n.fd >= 0) ::close(n.fd);
  n.fd = -1;
  n.rbuf.clear();
  n.rpos = 0;
}

bool FileHandle::is_open() const {
  auto& n = detail::node_cast<detail::FileNode>(*node_);
  detail::MutexLock lock(n.mu);
  return n.fd >= 0;
}

FileHandle::operator Value() const {
  return detail::reference_to(node_);
}

DirHandle DirHandle::open(const std::string& path) {
  auto node = std::make_shared<detail::DirNode>();
  detail::MutexLock lock(node->mu);
  try {
    detail::open_dir(*node, path);
  } catch (const Error& e) {
    throw Error(Errc::invalid_argument, e.what());
  }
  lock.unlock();
  return DirHandle(node);
}

void DirHandle::close() const {
  auto& n = detail::node_cast<detail::DirNode>(*node_);
  detail::MutexLock lock(n.mu);
  if (n.dir) ::closedir(n.dir);
  n.dir = nullptr;
}

DirHandle::operator Value() const {
  return detail::reference_to(node_);
}

}  // namespace patro
