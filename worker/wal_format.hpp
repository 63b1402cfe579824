// The bytes of a write-ahead log file, and how a file is read back: no I/O here, so that the
// worker's start, `patro-worker verify` and the unit tests judge a file the same way.
//
// Format 1 (written since): a 16-byte header, "PATROWAL", the version (u32) and a CRC-32 of
// those 12 bytes; then records, each [magic:4 "PWr1"][sequence:8][length:4][crc32:4][payload],
// little-endian, the CRC covering the magic, sequence and length as well as the payload, the
// sequence 1, 2, 3... in each file. Format 0 (before): no header, records [length:4][crc32:4]
// [payload]; still read, and written again in format 1 by the next compaction.
//
// A record that does not check out is either a torn tail or corruption. A crash can only leave
// the last write incomplete, so a bad record with no good record anywhere after it is a torn
// tail (cut, with a warning); one with a good record after it is corruption (the start stops).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace patro::worker::wal_format {

constexpr uint32_t kVersion = 1;
constexpr size_t kFileHeaderSize = 16;
constexpr size_t kRecordHeaderSize = 20;
constexpr size_t kLegacyHeaderSize = 8;
/// The largest payload a record may have; a length field above it is damage, not a record.
constexpr uint32_t kMaxPayload = 64u << 20;

/// The file header of format kVersion.
std::string file_header();
/// A record of format kVersion.
std::string frame(uint64_t sequence, std::string_view payload);
constexpr int64_t framed_size(size_t payload) {
  return static_cast<int64_t>(payload + kRecordHeaderSize);
}

enum class Format { empty, legacy, current };
enum class Problem {
  none,
  torn_tail,  // the bytes from problem_at to the end are an incomplete last write
  corrupt     // the bytes at problem_at are damaged and good records follow (or the header is)
};

struct Scan {
  Format format = Format::empty;
  uint32_t version = 0;  // as the header says (0: format 0, or no header yet)
  size_t good_end = 0;   // the end of the last good record (of the header if none)
  uint64_t records = 0;  // good records read
  uint64_t next_sequence = 1;
  Problem problem = Problem::none;
  size_t problem_at = 0;  // where the first bad byte is
  std::string what;       // what is wrong there, for the message
};

/// Reads data (a whole file) record by record, calling apply(payload, offset) on each good one
/// up to the first problem. An exception from apply is corruption at that record's offset (a
/// record whose checksum holds but whose content its owner cannot take).
Scan scan(std::string_view data, const std::function<void(std::string_view, size_t)>& apply);

}  // namespace patro::worker::wal_format
