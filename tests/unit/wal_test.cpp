// The worker's write-ahead log on its own (no sockets): replay, group commit, compaction, and
// how a file is judged: a torn tail at any byte of the last record is cut, a flipped byte
// anywhere before it stops the open and changes nothing, --repair keeps the original, format 0
// files are still read, a symbolic link is never followed, an oversized record is refused.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <dirent.h>
#include <atomic>
#include <random>
#include <thread>

#include <patro/patro.hpp>

#include "../support/process.hpp"
#include "wal.hpp"
#include "wal_format.hpp"

using patro::test::read_file;
using patro::test::TempDir;
using patro::test::write_file;
using patro::worker::Wal;
using patro::worker::WalOptions;
namespace fmt = patro::worker::wal_format;

namespace {

// Opens the log, returns what it replays (and closes it).
std::vector<std::string> replay(const std::string& path, WalOptions options = {}) {
  std::vector<std::string> got;
  Wal wal(
      path, [&](std::string_view r) { got.emplace_back(r); }, options);
  return got;
}

// Writes records through a Wal (each acknowledged before it returns) and closes it.
void write_records(const std::string& path, const std::vector<std::string>& records) {
  Wal wal(path, [](std::string_view) {});
  for (const auto& r : records) wal.append(r);
}

std::vector<std::string> numbered(int n, const std::string& tag = "record") {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(tag + " " + std::to_string(i));
  return out;
}

// A format-0 file, as patro-worker wrote before the header: [length][crc32][payload].
std::string legacy_file(const std::vector<std::string>& records) {
  std::string out;
  auto put = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  for (const auto& r : records) {
    put(static_cast<uint32_t>(r.size()));
    put(static_cast<uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(r.data()), static_cast<uInt>(r.size()))));
    out += r;
  }
  return out;
}

std::string error_of(const std::string& path, WalOptions options = {}) {
  try {
    (void)replay(path, options);
  } catch (const patro::Error& e) {
    return e.what();
  }
  return {};
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d))
      if (e->d_name[0] != '.') out.emplace_back(e->d_name);
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("records are replayed in order after a reopen, behind a header with the version") {
  TempDir dir;
  const std::string path = dir.file("a.wal");
  write_records(path, numbered(100));
  const std::string data = read_file(path);
  CHECK(data.substr(0, 8) == "PATROWAL");
  CHECK(data.substr(0, fmt::kFileHeaderSize) == fmt::file_header());
  CHECK(replay(path) == numbered(100));
  // Appends after a reopen continue the sequence: a third open reads both runs.
  write_records(path, numbered(5, "more"));
  std::vector<std::string> want = numbered(100);
  for (const auto& r : numbered(5, "more")) want.push_back(r);
  CHECK(replay(path) == want);
  const fmt::Scan scan = fmt::scan(read_file(path), [](std::string_view, size_t) {});
  CHECK(scan.problem == fmt::Problem::none);
  CHECK(scan.records == 105);
}

TEST_CASE("a new log is a header alone; an empty file gets one") {
  TempDir dir;
  const std::string path = dir.file("empty.wal");
  CHECK(replay(path).empty());
  CHECK(read_file(path) == fmt::file_header());
  write_file(path, "");
  CHECK(replay(path).empty());
  CHECK(read_file(path) == fmt::file_header());
}

TEST_CASE("a torn tail at every byte offset of the last record is cut, the rest replayed") {
  TempDir dir;
  const std::string path = dir.file("torn.wal");
  const auto records = numbered(3, "a record of some length");
  write_records(path, records);
  const std::string whole = read_file(path);
  const size_t last = whole.size() - static_cast<size_t>(Wal::framed_size(records[2]));
  for (size_t cut = last; cut < whole.size(); ++cut) {
    CAPTURE(cut);
    write_file(path, whole.substr(0, cut));
    CHECK(replay(path) == std::vector<std::string>{records[0], records[1]});
    CHECK(read_file(path) == whole.substr(0, last));  // cut back to the last whole record
    // The log goes on from there: the next record follows the second one.
    write_records(path, {"after"});
    CHECK(replay(path) == std::vector<std::string>{records[0], records[1], "after"});
  }
  // The same with the rest of the last record's bytes zeroed rather than missing (the file's
  // size reached the disk, its data did not).
  for (size_t from = last; from < whole.size(); from += 3) {
    CAPTURE(from);
    write_file(path, whole.substr(0, from) + std::string(whole.size() - from, '\0'));
    CHECK(replay(path) == std::vector<std::string>{records[0], records[1]});
  }
  // A file header cut short (a crash while it was created) is an empty log.
  for (size_t cut = 1; cut < fmt::kFileHeaderSize; ++cut) {
    write_file(path, whole.substr(0, cut));
    CHECK(replay(path).empty());
    CHECK(read_file(path) == fmt::file_header());
  }
}

TEST_CASE("a flipped byte anywhere before the last record stops the open, naming file and offset") {
  TempDir dir;
  const std::string path = dir.file("kv.wal");
  const auto records = numbered(3, "payload");
  write_records(path, records);
  const std::string whole = read_file(path);
  const size_t last = whole.size() - static_cast<size_t>(Wal::framed_size(records[2]));
  for (size_t at = 0; at < last; ++at) {
    CAPTURE(at);
    std::string bad = whole;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    write_file(path, bad);
    const std::string e = error_of(path);
    CHECK(e.find(path) != std::string::npos);
    CHECK(e.find("offset ") != std::string::npos);
    CHECK(read_file(path) == bad);  // nothing cut, renamed or compacted
  }
  // The offset named is where the damaged record starts.
  std::string bad = whole;
  const size_t second = fmt::kFileHeaderSize + static_cast<size_t>(Wal::framed_size(records[0]));
  bad[second + fmt::kRecordHeaderSize + 2] ^= 0x01;
  write_file(path, bad);
  CHECK(error_of(path).find("at offset " + std::to_string(second) + ":") != std::string::npos);
  // 8 bytes of garbage at the head.
  write_file(path, "garbage!" + whole);
  CHECK(error_of(path).find("offset 0") != std::string::npos);
  CHECK(read_file(path) == "garbage!" + whole);
}

TEST_CASE("a newer format version is refused, not read as damage to cut") {
  TempDir dir;
  const std::string path = dir.file("v2.wal");
  std::string header = "PATROWAL";
  header += std::string("\x02\0\0\0", 4);
  const uLong sum = crc32(0L, reinterpret_cast<const Bytef*>(header.data()), 12);
  for (int i = 0; i < 4; ++i) header.push_back(static_cast<char>((sum >> (8 * i)) & 0xff));
  write_file(path, header + "anything");
  CHECK(error_of(path).find("format version 2") != std::string::npos);
  CHECK(read_file(path) == header + "anything");
  WalOptions repair;
  repair.repair = true;
  CHECK(error_of(path, repair).find("format version 2") != std::string::npos);
  CHECK(read_file(path) == header + "anything");
}

TEST_CASE("--repair keeps the damaged file as FILE.corrupt-TIME, then cuts the log there") {
  TempDir dir;
  const std::string path = dir.file("r.wal");
  const auto records = numbered(10);
  write_records(path, records);
  std::string bad = read_file(path);
  const size_t fourth =
      fmt::kFileHeaderSize + 3 * static_cast<size_t>(Wal::framed_size(records[0]));
  bad[fourth + fmt::kRecordHeaderSize] ^= 0x40;
  write_file(path, bad);
  WalOptions repair;
  repair.repair = true;
  CHECK(replay(path, repair) == std::vector<std::string>(records.begin(), records.begin() + 3));
  const auto files = files_in(dir.path());
  REQUIRE(files.size() == 2);
  CHECK(files[0] == "r.wal");
  CHECK(files[1].rfind("r.wal.corrupt-", 0) == 0);
  CHECK(read_file(dir.file(files[1])) == bad);
  CHECK(read_file(path) == bad.substr(0, fourth));
  CHECK(replay(path) == std::vector<std::string>(records.begin(), records.begin() + 3));
}

TEST_CASE("a format-0 file is read, and written again in the current format") {
  TempDir dir;
  const std::string path = dir.file("old.wal");
  const auto records = numbered(20, "old");
  write_file(path, legacy_file(records));
  CHECK(replay(path) == records);
  CHECK(read_file(path).substr(0, 8) == "PATROWAL");
  CHECK(replay(path) == records);
  // Its torn tail is cut; its damage stops the open.
  std::string old = legacy_file(records);
  write_file(path, old.substr(0, old.size() - 3));
  CHECK(replay(path) == std::vector<std::string>(records.begin(), records.end() - 1));
  std::string bad = old;
  bad[8 + 2] ^= 0x01;  // in the first record's payload
  write_file(path, bad);
  CHECK(error_of(path).find("offset 0") != std::string::npos);
  CHECK(read_file(path) == bad);
  write_file(path, "garbage!" + old);  // the counter's case: 8 bytes at the head
  CHECK(error_of(path).find("offset 0") != std::string::npos);
  CHECK(read_file(path) == "garbage!" + old);
}

TEST_CASE("a symbolic link is not followed: an error, and its target untouched") {
  TempDir dir;
  const std::string target = dir.file("precious");
  write_file(target, "keep me");
  const std::string path = dir.file("link.wal");
  REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
  CHECK(error_of(path).find("symbolic link") != std::string::npos);
  CHECK(read_file(target) == "keep me");
  // Nor is one planted where compaction writes its new file.
  const std::string real = dir.file("real.wal");
  REQUIRE(::symlink(target.c_str(), (real + ".compact").c_str()) == 0);
  write_records(real, {"x"});
  {
    Wal wal(real, [](std::string_view) {});
    wal.rewrite({"y"});
  }
  CHECK(read_file(target) == "keep me");
  CHECK(replay(real) == std::vector<std::string>{"y"});
}

TEST_CASE("a record over the limit is refused with a clear error, and nothing is written") {
  TempDir dir;
  const std::string path = dir.file("big.wal");
  WalOptions options;
  options.max_record_bytes = 100;
  {
    Wal wal(
        path, [](std::string_view) {}, options);
    wal.append(std::string(100, 'x'));
    try {
      wal.append(std::string(101, 'y'));
      FAIL("accepted");
    } catch (const patro::Error& e) {
      CHECK(e.code() == patro::Errc::message_too_large);
      CHECK(std::string(e.what()).find("101 bytes") != std::string::npos);
    }
  }
  CHECK(replay(path) == std::vector<std::string>{std::string(100, 'x')});
}

TEST_CASE("group commit: appends from 8 threads are each acknowledged once, all on disk") {
  TempDir dir;
  const std::string path = dir.file("g.wal");
  std::atomic<int> acked{0};
  {
    Wal wal(path, [](std::string_view) {});
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < 500; ++i)
          wal.append("t" + std::to_string(t) + " " + std::to_string(i), [&] { ++acked; });
      });
    for (auto& th : threads) th.join();
  }
  CHECK(acked == 4000);
  const auto got = replay(path);
  CHECK(got.size() == 4000);
  std::map<int, int> next;  // each thread's records in its own order
  for (const auto& r : got) {
    const int t = r[1] - '0';
    CHECK(std::stoi(r.substr(3)) == next[t]++);
  }
}

TEST_CASE("online compaction: the snapshot, then the later records, in one valid sequence") {
  TempDir dir;
  const std::string path = dir.file("c.wal");
  {
    Wal wal(path, [](std::string_view) {});
    for (const auto& r : numbered(50)) wal.append(r);
    wal.compact({"state"});
    for (const auto& r : numbered(3, "later")) wal.append(r);
  }
  CHECK(replay(path) == std::vector<std::string>{"state", "later 0", "later 1", "later 2"});
  CHECK(files_in(dir.path()) == std::vector<std::string>{"c.wal"});
}

TEST_CASE("arbitrary bytes never crash the scan, and a clean verdict replays every byte") {
  std::mt19937 rng(12345);
  const std::string good = fmt::file_header() + fmt::frame(1, "one") + fmt::frame(2, "two");
  for (int round = 0; round < 3000; ++round) {
    std::string data = round % 2 ? good : std::string();
    const size_t n = rng() % 64;
    for (size_t i = 0; i < n; ++i) data.push_back(static_cast<char>(rng()));
    if (round % 3 == 0 && !data.empty())
      data[rng() % data.size()] ^= static_cast<char>(1 << (rng() % 8));
    size_t replayed_to = 0;
    const fmt::Scan s = fmt::scan(data, [&](std::string_view r, size_t) {
      replayed_to = static_cast<size_t>(r.data() + r.size() - data.data());
    });
    CHECK(s.good_end <= data.size());
    if (s.problem == fmt::Problem::none && s.records > 0) CHECK(replayed_to == data.size());
    if (s.problem != fmt::Problem::none) CHECK(s.problem_at >= replayed_to);
  }
}

TEST_CASE("a file crafted to make the search for good records quadratic is called corrupt") {
  // One good format-0 record, then a plausible length (512 KiB) at every offset: each candidate
  // would be checksummed over 512 KiB. The search's budget stops it (unbounded, a 1 MiB file of
  // this shape took 17 s, growing with the square of the size), and the damage is corruption:
  // the start stops, nothing is cut.
  std::string data = legacy_file({"one"});
  const uint32_t len = 512 * 1024;
  while (data.size() < (size_t{8} << 20))
    for (int i = 0; i < 4; ++i) data.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  const fmt::Scan s = fmt::scan(data, [](std::string_view, size_t) {});
  CHECK(s.records == 1);
  CHECK(s.problem == fmt::Problem::corrupt);
}
