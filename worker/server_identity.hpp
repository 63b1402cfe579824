// patro-worker's server id, kept in its --data directory so that it survives restarts: the
// served objects' ids follow from it (and from their names), so a client's proxies made before a
// restart reach the same objects after it, kill -9 included.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace patro::worker {

inline constexpr const char* kServerIdFile = "server-id";
inline constexpr const char* kServerSecretFile = "server-secret";

/// Parses a server id as written (16 hex digits, optionally 0x-prefixed; not zero); nullopt if it
/// is not one.
std::optional<uint64_t> parse_server_id(const std::string& text);
/// The 16 hex digits of id.
std::string format_server_id(uint64_t id);

/// The server id of the --data directory dir: read from DIR/server-id; on the first start (no
/// such file) `given` if non-zero, else a random one, written there (atomically, synced) before
/// it is used. Throws patro::Error naming the file if it cannot be read or written, if it does
/// not hold a server id (never replaced silently: that would be another server), or if `given`
/// differs from the id it holds.
uint64_t data_directory_server_id(const std::string& dir, uint64_t given);

/// The secret kept beside the server id in the --data directory dir (ServerOptions::
/// server_secret: what proves to a broker that a restarted worker is the same server): 32 bytes,
/// read from DIR/server-secret (64 hex digits); when there is no such file (the first start, or a
/// directory from before the secret), 32 random bytes from getrandom, written there (0600,
/// atomically, synced) before they are used. Throws patro::Error naming the file if it cannot be
/// read or written or does not hold a secret (never replaced silently).
std::string data_directory_server_secret(const std::string& dir);

/// The secret in the file `path` (--server-secret, for a --server-id given without --data): 64
/// hex digits, as `openssl rand -hex 32` writes them. Throws patro::Error naming the file if it
/// cannot be read, is not a regular file, can be read by anyone but its owner, or does not hold a
/// secret.
std::string server_secret_file(const std::string& path);

}  // namespace patro::worker
