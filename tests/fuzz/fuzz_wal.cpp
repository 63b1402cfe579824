// Fuzz target: a write-ahead log file's bytes, read back as the worker's start and `patro-worker
// verify` read them (wal_format::scan, no I/O). It must never crash, and never report success for
// data it dropped:
// - each record it hands over is the bytes at its offset, re-encoded the same (format 1: the
//   sequence 1, 2, 3...; format 0: [length][crc32][payload]), one after another from the header;
// - no problem means every byte is in the header or a good record; a problem starts at the end
//   of the last good record (nothing between is skipped);
// - a torn tail never hides a good record: with a good record appended after it, the cut bytes
//   are corruption (or part of good records).
// A payload starting with '!' is refused by the apply callback, as an owner refuses a record it
// cannot take: that is corruption at that record's offset.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "wal_format.hpp"

namespace {
namespace wf = patro::worker::wal_format;

void check(bool ok) {
  if (!ok) std::abort();
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A format-0 record, as patro-worker wrote them before format 1.
std::string legacy_frame(std::string_view payload) {
  std::string out;
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(payload.data()),
                                           static_cast<uInt>(payload.size()))));
  out.append(payload);
  return out;
}

struct Checked {
  wf::Scan scan;
  bool refused = false;  // the callback refused a record (at scan.problem_at)
};

Checked scan_checked(std::string_view data) {
  Checked c;
  size_t expect_at = std::string_view::npos;  // known once the format is: the header's end
  uint64_t sequence = 0;
  c.scan = wf::scan(data, [&](std::string_view payload, size_t at) {
    // The payload lies inside data, in the record at `at`.
    check(at < data.size() && payload.data() >= data.data() &&
          payload.data() + payload.size() <= data.data() + data.size());
    const bool current = data.substr(0, 8) == "PATROWAL";
    if (expect_at == std::string_view::npos) expect_at = current ? wf::kFileHeaderSize : 0;
    check(at == expect_at);
    const std::string bytes = current ? wf::frame(++sequence, payload) : legacy_frame(payload);
    check(data.substr(at, bytes.size()) == bytes);
    if (!payload.empty() && payload[0] == '!') {
      c.refused = true;
      throw std::runtime_error("refused");
    }
    expect_at = at + bytes.size();
  });
  const wf::Scan& s = c.scan;
  check((s.format == wf::Format::empty) == data.empty());
  check(s.good_end <= data.size());
  if (expect_at != std::string_view::npos) check(s.good_end == expect_at);
  if (s.problem == wf::Problem::none) {
    check(!c.refused);
    check(s.good_end == data.size());
  } else {
    check(!s.what.empty());
    check(s.problem_at == s.good_end);
    check(s.problem_at < data.size());
    if (c.refused) check(s.problem == wf::Problem::corrupt);
  }
  if (s.format == wf::Format::current && s.good_end >= wf::kFileHeaderSize)
    check(s.next_sequence == s.records + 1);
  return c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const Checked c = scan_checked(bytes);
  const wf::Scan& s = c.scan;
  // (A torn file header, from a crash at the file's creation, has nothing to hide.)
  const bool torn_header = s.format == wf::Format::current && s.good_end < wf::kFileHeaderSize;
  if (s.problem == wf::Problem::torn_tail && !torn_header) {
    std::string more(bytes);
    more +=
        s.format == wf::Format::current ? wf::frame(s.next_sequence, "more") : legacy_frame("more");
    const wf::Scan t = scan_checked(more).scan;
    check(t.problem == wf::Problem::corrupt || t.good_end > s.good_end);
  }
  return 0;
}
