// CURVE keys: ZeroMQ's encryption and authentication between clients, servers and the broker.
// Keys are Z85 text (40 characters), as ZeroMQ's own tools write them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "patro/export.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// A CURVE key pair, Z85 text. Empty: none.
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
  bool empty() const noexcept { return secret_key.empty(); }
};

/// CURVE settings of a client or a server, the connecting side of a connection to a broker.
struct CurveOptions {
  /// The broker's public key (Z85). Empty: no CURVE, plaintext (the broker must then be
  /// plaintext too; one off loopback refuses to be).
  std::string broker_key;
  /// This side's key pair, which the broker checks against its allow list. Empty: the pair in
  /// the file $PATRO_CURVE_KEY names, or else a fresh pair for each connection (accepted only by
  /// a broker without an allow list).
  CurveKeyPair keys;
  bool enabled() const noexcept { return !broker_key.empty(); }
};

/// Whether this libzmq was built with CURVE.
bool curve_available() noexcept;
/// A fresh key pair. Throws Error(unsupported) without CURVE.
CurveKeyPair curve_keypair();
/// Whether text is a Z85 CURVE key (40 characters of ZeroMQ's Z85 alphabet).
bool is_curve_key(std::string_view text) noexcept;
/// A short fingerprint of a public key for logs (its first 8 characters).
std::string key_fingerprint(std::string_view public_key);

/// Reads a key pair from a file `patro keygen` (or CZMQ's zcert) wrote: lines
/// `public-key = "Z85"` and `secret-key = "Z85"`. Throws Error(invalid_argument) saying what is
/// wrong.
CurveKeyPair read_key_file(const std::string& path);
/// Writes the pair to path (mode 0600: it holds the secret key) and the public key alone to
/// path + ".pub" (mode 0644), in CZMQ's certificate format. Throws Error(invalid_argument).
void write_key_file(const std::string& path, const CurveKeyPair& keys);
/// A public key given as Z85 text, or as a file that holds one (a key file or its .pub).
std::string read_public_key(const std::string& z85_or_file);
/// Reads an allow list: one Z85 public key per line (or `public-key = "Z85"` lines, so .pub files
/// can be concatenated); `#` at the start of a line or after a blank starts a comment (a key
/// itself may hold `#`). Throws Error(invalid_argument) naming the line.
std::vector<std::string> read_allow_list(const std::string& path);
/// One line of a client allow list: a key and its rights (README "Security"). Written
/// `KEY [names=GLOB,GLOB...] [read-only]`; a line with the key alone allows everything.
struct AllowEntry {
  std::string key;                 ///< Z85 public key
  std::vector<std::string> names;  ///< globs (fnmatch(3)) of the names it may reach; empty: all
  /// Only the operations the op table marks as not mutating (get, exists, size, keys, ...), and
  /// the methods a served class registered with Class::read_only_method.
  bool read_only = false;
  /// Whether the key is limited at all.
  bool restricted() const noexcept { return read_only || !names.empty(); }
  /// Whether a name matches one of the globs (always, when there are none).
  bool reaches(std::string_view name) const;
  /// The rights as an allow-list line writes them after the key ("names=jobs*,kv read-only";
  /// empty: everything).
  std::string rights_text() const;
};
/// Parses one allow-list line (no comment): `KEY [names=GLOB,...] [read-only]`, or a
/// `public-key = "KEY"` line. Throws Error(invalid_argument) saying what is wrong.
AllowEntry parse_allow_entry(std::string_view line);
/// Reads a client allow list with its rights: as read_allow_list, each line a parse_allow_entry.
/// Throws Error(invalid_argument) naming the file and the line.
std::vector<AllowEntry> read_allow_entries(const std::string& path);
/// The key pair in the file $PATRO_CURVE_KEY names; empty when it is unset.
CurveKeyPair curve_key_from_environment();

}  // namespace patro
PATRO_PUBLIC_END
