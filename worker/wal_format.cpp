#include "wal_format.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <exception>

namespace patro::worker::wal_format {

namespace {

constexpr std::string_view kFileMagic("PATROWAL", 8);
constexpr std::string_view kRecordMagic("PWr1", 4);

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint64_t get_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t crc(uint32_t sum, std::string_view s) {
  return static_cast<uint32_t>(
      crc32(sum, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

// A record read at some offset: its payload and size, or why it is not one.
struct Parsed {
  bool ok = false;
  bool checksum_ok = false;  // the bytes are a whole record (its sequence may still be wrong)
  std::string_view payload;
  size_t size = 0;
  uint64_t sequence = 0;
  std::string why;
};

Parsed parse_current(std::string_view data, size_t at, uint64_t expected) {
  Parsed p;
  const size_t left = data.size() - at;
  if (left < kRecordHeaderSize) {
    p.why = "an incomplete record header (" + std::to_string(left) + " bytes)";
    return p;
  }
  const char* h = data.data() + at;
  if (std::string_view(h, 4) != kRecordMagic) {
    p.why = "no record magic";
    return p;
  }
  p.sequence = get_u64(h + 4);
  const uint32_t len = get_u32(h + 12);
  if (len > kMaxPayload) {
    p.why = "a record length of " + std::to_string(len) + " bytes, over the limit";
    return p;
  }
  if (left - kRecordHeaderSize < len) {
    p.why = "a record of " + std::to_string(len) + " bytes running past the end of the file (" +
            std::to_string(left - kRecordHeaderSize) + " left)";
    return p;
  }
  p.payload = std::string_view(h + kRecordHeaderSize, len);
  const uint32_t sum = crc(crc(0, std::string_view(h, 16)), p.payload);
  if (sum != get_u32(h + 16)) {
    p.why = "a record whose checksum does not match";
    return p;
  }
  p.checksum_ok = true;
  p.size = kRecordHeaderSize + len;
  if (p.sequence != expected) {
    p.why = "record sequence " + std::to_string(p.sequence) + " where " + std::to_string(expected) +
            " was due";
    return p;
  }
  p.ok = true;
  return p;
}

Parsed parse_legacy(std::string_view data, size_t at) {
  Parsed p;
  const size_t left = data.size() - at;
  if (left < kLegacyHeaderSize) {
    p.why = "an incomplete record header (" + std::to_string(left) + " bytes)";
    return p;
  }
  const uint32_t len = get_u32(data.data() + at);
  if (len == 0) {  // format 0 never wrote an empty record: zeros, as a crash may leave
    p.why = "a record of length 0";
    return p;
  }
  if (len > kMaxPayload) {
    p.why = "a record length of " + std::to_string(len) + " bytes, over the limit";
    return p;
  }
  if (left - kLegacyHeaderSize < len) {
    p.why = "a record of " + std::to_string(len) + " bytes running past the end of the file (" +
            std::to_string(left - kLegacyHeaderSize) + " left)";
    return p;
  }
  p.payload = std::string_view(data.data() + at + kLegacyHeaderSize, len);
  if (crc(0, p.payload) != get_u32(data.data() + at + 4)) {
    p.why = "a record whose checksum does not match";
    return p;
  }
  p.ok = p.checksum_ok = true;
  p.size = kLegacyHeaderSize + len;
  return p;
}

// Whether a good record starts anywhere in [from, end): then what lies before it is damage, not
// the incomplete last write of a crash. A format-1 file is searched for format-1 records; a
// format-0 one for either format's (a format-1 file whose header was overwritten reads as
// format 0) and for a format-1 file header.
// Each candidate is checksummed over the length it claims, so a file crafted with a plausible
// length at every offset would take time quadratic in its size: past kSearchBudget bytes
// checksummed, the search stops and calls the damage corruption (the start stops; --repair cuts),
// erring towards keeping data rather than cutting what might be good records.
constexpr size_t kSearchBudget = size_t{256} << 20;

bool good_record_after(std::string_view data, size_t from, Format format) {
  size_t budget = kSearchBudget;
  const auto spent = [&budget](const Parsed& p) {
    budget -= std::min(budget, p.payload.size());
    return budget == 0;
  };
  for (size_t o = data.find(kRecordMagic, from); o != std::string_view::npos;
       o = data.find(kRecordMagic, o + 1)) {
    const Parsed p = parse_current(data, o, 0);
    if (p.checksum_ok || spent(p)) return true;
  }
  if (format == Format::current) return false;
  if (data.find(kFileMagic, from) != std::string_view::npos) return true;
  for (size_t o = from; o + kLegacyHeaderSize < data.size(); ++o) {
    const Parsed p = parse_legacy(data, o);
    if (p.ok || spent(p)) return true;
  }
  return false;
}

}  // namespace

std::string file_header() {
  std::string out(kFileMagic);
  put_u32(out, kVersion);
  put_u32(out, crc(0, out));
  return out;
}

std::string frame(uint64_t sequence, std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + kRecordHeaderSize);
  out.append(kRecordMagic);
  put_u64(out, sequence);
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, crc(crc(0, out), payload));
  out.append(payload);
  return out;
}

Scan scan(std::string_view data, const std::function<void(std::string_view, size_t)>& apply) {
  Scan s;
  if (data.empty()) return s;
  size_t at = 0;
  const bool prefix_of_magic =
      data.size() < kFileMagic.size() && kFileMagic.substr(0, data.size()) == data;
  if (prefix_of_magic || data.substr(0, kFileMagic.size()) == kFileMagic) {
    s.format = Format::current;
    if (data.size() < kFileHeaderSize) {  // a crash while the file was being created
      s.problem = Problem::torn_tail;
      s.what = "an incomplete file header (" + std::to_string(data.size()) + " bytes)";
      return s;
    }
    s.version = get_u32(data.data() + 8);
    if (crc(0, data.substr(0, 12)) != get_u32(data.data() + 12)) {
      s.problem = Problem::corrupt;
      s.what = "a file header whose checksum does not match";
      return s;
    }
    if (s.version != kVersion) {
      s.problem = Problem::corrupt;
      s.what = "format version " + std::to_string(s.version) + ", which this patro-worker (" +
               std::to_string(kVersion) + ") cannot read";
      return s;
    }
    at = s.good_end = kFileHeaderSize;
  } else {
    s.format = Format::legacy;
  }
  std::string why;
  bool bad_sequence = false;
  while (at < data.size()) {
    const Parsed p = s.format == Format::current ? parse_current(data, at, s.next_sequence)
                                                 : parse_legacy(data, at);
    if (!p.ok) {
      why = p.why;
      bad_sequence = p.checksum_ok;  // a whole record, out of place: never a torn write
      break;
    }
    try {
      apply(p.payload, at);
    } catch (const std::exception& e) {
      s.problem = Problem::corrupt;
      s.problem_at = at;
      s.what = std::string("a record that cannot be replayed (") + e.what() + ")";
      return s;
    }
    at += p.size;
    s.good_end = at;
    ++s.records;
    ++s.next_sequence;
  }
  if (at < data.size()) {
    s.problem_at = at;
    s.what = why;
    s.problem = bad_sequence || good_record_after(data, at + 1, s.format) ? Problem::corrupt
                                                                          : Problem::torn_tail;
  }
  return s;
}

}  // namespace patro::worker::wal_format
