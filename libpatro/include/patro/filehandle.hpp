// Served file and directory handles: the server opens them and serves them; clients use them
// through proxies (p.print(...), p.readline(), p.readdir()...), as Perl Patro serves file handles.
//
// Through a proxy a client may read, write, seek, lock and test the file, but not open or close
// it (nor sysopen, opendir, closedir): those are refused with Error(unsupported) unless the server
// runs with ServerOptions::secure_filehandles = false, and even then pipe modes are refused. A
// handle stays usable after a refusal. Operations on one handle are serialized, so lines that
// several clients print at once never interleave.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "patro/export.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// A file opened by the serving program. Copies share the handle.
class FileHandle {
 public:
  /// Opens path with one of Perl's modes: < > >> +< +> +>> (an optional layer such as ":raw"
  /// may follow). Throws Error(invalid_argument) for another mode, and for a failure with the
  /// system's message.
  static FileHandle open(const std::string& path, std::string_view mode = "<");

  /// Closes the file (the server's own close; clients then get an error with errno EBADF).
  void close() const;
  bool is_open() const;
  /// A reference to the served handle.
  operator Value() const;
  const std::shared_ptr<detail::Node>& node() const noexcept { return node_; }

 private:
  explicit FileHandle(std::shared_ptr<detail::Node> node) : node_(std::move(node)) {}
  std::shared_ptr<detail::Node> node_;
};

/// A directory opened by the serving program, read with readdir through a proxy.
class DirHandle {
 public:
  /// Throws Error(invalid_argument) with the system's message on failure.
  static DirHandle open(const std::string& path);
  void close() const;
  operator Value() const;
  const std::shared_ptr<detail::Node>& node() const noexcept { return node_; }

 private:
  explicit DirHandle(std::shared_ptr<detail::Node> node) : node_(std::move(node)) {}
  std::shared_ptr<detail::Node> node_;
};

}  // namespace patro
PATRO_PUBLIC_END
