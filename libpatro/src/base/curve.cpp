#include "patro/curve.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "patro/error.hpp"
#include "rights.hpp"

namespace patro {

namespace {
constexpr std::string_view kZ85 =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// The key of a `public-key = "Z85"` (or secret-key) line; empty when the line is another.
std::string keyed_value(const std::string& line, std::string_view name) {
  const std::string t = trim(line);
  if (t.rfind(name, 0) != 0) return {};
  const auto q1 = t.find('"');
  const auto q2 = t.rfind('"');
  if (q1 == std::string::npos || q2 <= q1) return {};
  return t.substr(q1 + 1, q2 - q1 - 1);
}

std::string slurp(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in)
    throw Error(Errc::invalid_argument, std::string("cannot read ") + what + " '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  bool ok = fd >= 0 && ::fchmod(fd, mode) == 0 &&
            ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  if (fd >= 0) ok = ::close(fd) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(Errc::invalid_argument, "cannot write '" + path + "'");
  }
}

std::string certificate(const CurveKeyPair& keys, bool secret) {
  std::string out =
      secret ? "#   ZeroMQ CURVE **Secret** Certificate (written by patro keygen)\n"
               "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
             : "#   ZeroMQ CURVE Public Certificate (written by patro keygen)\n"
               "#   Exchange securely, or use a secure mechanism to verify the contents\n"
               "#   of this file after exchange. Store public certificates in your home\n"
               "#   directory, in the .curve subdirectory.\n\n";
  out += "metadata\ncurve\n    public-key = \"" + keys.public_key + "\"\n";
  if (secret) out += "    secret-key = \"" + keys.secret_key + "\"\n";
  return out;
}
}  // namespace

bool curve_available() noexcept {
  return zmq_has("curve") != 0;
}

CurveKeyPair curve_keypair() {
  std::array<char, 41> pub{}, sec{};
  if (zmq_curve_keypair(pub.data(), sec.data()) != 0)
    throw Error(Errc::unsupported, "this libzmq has no CURVE (built without libsodium)");
  return CurveKeyPair{pub.data(), sec.data()};
}

bool is_curve_key(std::string_view text) noexcept {
  return text.size() == 40 && text.find_first_not_of(kZ85) == std::string_view::npos;
}

std::string key_fingerprint(std::string_view public_key) {
  return std::string(public_key.substr(0, 8));
}

CurveKeyPair read_key_file(const std::string& path) {
  std::istringstream in(slurp(path, "key file"));
  CurveKeyPair keys;
  for (std::string line; std::getline(in, line);) {
    if (auto p = keyed_value(line, "public-key"); !p.empty()) keys.public_key = p;
    if (auto s = keyed_value(line, "secret-key"); !s.empty()) keys.secret_key = s;
  }
  if (!is_curve_key(keys.public_key) || !is_curve_key(keys.secret_key))
    throw Error(Errc::invalid_argument,
                "key file '" + path +
                    "' holds no key pair (public-key and secret-key lines; patro keygen writes "
                    "one)");
  return keys;
}

void write_key_file(const std::string& path, const CurveKeyPair& keys) {
  if (!is_curve_key(keys.public_key) || !is_curve_key(keys.secret_key))
    throw Error(Errc::invalid_argument, "not a CURVE key pair");
  write_file(path, certificate(keys, true), 0600);
  write_file(path + ".pub", certificate(keys, false), 0644);
}

std::string read_public_key(const std::string& z85_or_file) {
  // A path may look like a key ("/tmp/…" of 40 characters is all Z85): a file that exists wins.
  struct stat st {};
  if (is_curve_key(z85_or_file) && ::stat(z85_or_file.c_str(), &st) != 0) return z85_or_file;
  std::istringstream in(slurp(z85_or_file, "public key file"));
  for (std::string line; std::getline(in, line);) {
    if (auto p = keyed_value(line, "public-key"); !p.empty() && is_curve_key(p)) return p;
    if (const std::string t = trim(line); is_curve_key(t)) return t;
  }
  throw Error(Errc::invalid_argument, "'" + z85_or_file +
                                          "' is neither a Z85 public key (40 characters) nor a "
                                          "file holding one");
}

namespace {
// A line without its comment: `#` starts one at the start of a line or after a blank (Z85 keys
// may hold `#`).
std::string uncommented(std::string line) {
  for (size_t i = 0; i < line.size(); ++i)
    if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
      line.erase(i);
      break;
    }
  return trim(line);
}

template <class F>
void each_allow_line(const std::string& path, F&& f) {
  std::istringstream in(slurp(path, "allow list"));
  unsigned n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
    const std::string t = uncommented(std::move(line));
    if (t.empty() || t == "metadata" || t == "curve") continue;
    try {
      f(t);
    } catch (const Error& e) {
      throw Error(Errc::invalid_argument, "allow list '" + path + "', line " + std::to_string(n) +
                                              ": " + std::string(detail::error_message(e)));
    }
  }
}
}  // namespace

bool AllowEntry::reaches(std::string_view name) const {
  if (names.empty()) return true;
  const std::string n(name);
  for (const auto& glob : names)
    if (::fnmatch(glob.c_str(), n.c_str(), 0) == 0) return true;
  return false;
}

std::string AllowEntry::rights_text() const {
  std::string out;
  if (!names.empty()) {
    out = "names=";
    for (size_t i = 0; i < names.size(); ++i) out += (i ? "," : "") + names[i];
  }
  if (read_only) out += out.empty() ? "read-only" : " read-only";
  return out;
}

namespace detail {
AllowEntry rights_from_text(std::string_view text) {
  AllowEntry e;
  std::istringstream words{std::string(text)};
  for (std::string w; words >> w;) {
    if (w == "read-only") {
      e.read_only = true;
    } else if (w.rfind("names=", 0) == 0) {
      std::string_view globs = std::string_view(w).substr(6);
      while (!globs.empty()) {
        const auto comma = globs.find(',');
        const std::string_view g = globs.substr(0, comma);
        if (g.empty()) throw Error(Errc::invalid_argument, "an empty name in '" + w + "'");
        e.names.emplace_back(g);
        if (comma == std::string_view::npos) break;
        globs.remove_prefix(comma + 1);
        if (globs.empty()) throw Error(Errc::invalid_argument, "an empty name in '" + w + "'");
      }
      if (e.names.empty())
        throw Error(Errc::invalid_argument, "'names=' needs at least one name or glob");
    } else {
      throw Error(Errc::invalid_argument,
                  "'" + w + "' is not a right (names=GLOB,GLOB... or read-only)");
    }
  }
  return e;
}
}  // namespace detail

AllowEntry parse_allow_entry(std::string_view line) {
  const std::string t = trim(line);
  if (auto p = keyed_value(t, "public-key"); !p.empty()) {
    if (!is_curve_key(p))
      throw Error(Errc::invalid_argument, "not a Z85 public key (40 characters)");
    AllowEntry e;
    e.key = p;
    return e;
  }
  const auto blank = t.find_first_of(" \t");
  const std::string key = t.substr(0, blank);
  if (!is_curve_key(key))
    throw Error(Errc::invalid_argument, "not a Z85 public key (40 characters)");
  AllowEntry e =
      detail::rights_from_text(blank == std::string::npos ? std::string_view() : t.substr(blank));
  e.key = key;
  return e;
}

std::vector<AllowEntry> read_allow_entries(const std::string& path) {
  std::vector<AllowEntry> out;
  each_allow_line(path, [&](const std::string& t) { out.push_back(parse_allow_entry(t)); });
  return out;
}

std::vector<std::string> read_allow_list(const std::string& path) {
  std::vector<std::string> keys;
  for (auto& e : read_allow_entries(path)) keys.push_back(std::move(e.key));
  return keys;
}

CurveKeyPair curve_key_from_environment() {
  const char* path = std::getenv("PATRO_CURVE_KEY");
  if (path == nullptr || *path == '\0') return {};
  return read_key_file(path);
}

}  // namespace patro
