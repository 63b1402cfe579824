// `patro-worker verify DIR`: checks a --data directory offline, as a start would read it, and
// changes nothing: each write-ahead log's header, every record's magic, sequence and checksum,
// and that each record is what its object (by the file's name) writes.
#pragma once

#include <ostream>
#include <string>

namespace patro::worker {

/// Exit status: 0 clean; 1 a log is damaged or unreadable (a start would refuse it); 3 only torn
/// tails (a start cuts them, with a warning). One line per file on out; problems, each naming the
/// file and the offset, on err.
int verify_data_directory(const std::string& dir, std::ostream& out, std::ostream& err);

}  // namespace patro::worker
