// Served file and directory handles (patro::FileHandle, patro::DirHandle) and their operations.
// A file is a POSIX descriptor with a read buffer: writes go straight to the descriptor (so
// every print is in the file when the call returns), reads are buffered for readline. Every
// operation holds the node's mutex, so concurrent prints never interleave. A failed system call
// is a RemoteError carrying its errno.
#pragma once

#include <dirent.h>

#include <string>

#include "node.hpp"
#include "served_ops.hpp"

namespace patro::detail {

class FileNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::file;
  FileNode() : Node(NodeKind::file) {}
  ~FileNode() override;

  int fd PATRO_GUARDED_BY(mu) = -1;
  std::string path PATRO_GUARDED_BY(mu);
  bool can_read PATRO_GUARDED_BY(mu) = false;
  bool can_write PATRO_GUARDED_BY(mu) = false;
  std::string rbuf PATRO_GUARDED_BY(mu);  // read ahead; unread bytes are rbuf[rpos, end)
  size_t rpos PATRO_GUARDED_BY(mu) = 0;
};

class DirNode final : public Node {
 public:
  static constexpr NodeKind node_kind = NodeKind::dir;
  DirNode() : Node(NodeKind::dir) {}
  ~DirNode() override;

  DIR* dir PATRO_GUARDED_BY(mu) = nullptr;
  std::string path PATRO_GUARDED_BY(mu);
};

/// Opens path with a Perl mode (< > >> +< +> +>>, optionally followed by a layer such as :raw),
/// closing what n had. Pipe and dup modes are refused (Error(unsupported)); a failure is a
/// RemoteError with errno.
void open_file(FileNode& n, std::string_view mode, const std::string& path) PATRO_REQUIRES(n.mu);
void open_dir(DirNode& n, const std::string& path) PATRO_REQUIRES(n.mu);

/// Runs a file or directory operation named call.name.
ValueArray file_operation(const std::shared_ptr<Node>& target, ServedCall& call);

/// Perl's sprintf over Values, safe for formats from the network: only known conversions, with
/// flags, width and precision checked, reach snprintf. args[first...] are the arguments.
std::string perl_sprintf(std::string_view format, const ValueArray& args, size_t first);

}  // namespace patro::detail
