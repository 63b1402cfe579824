// Served file and directory handles through proxies: every operation, the refusal of open and
// close, and errors that carry the server's errno.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <functional>

#include <patro/patro.hpp>

#include "../support/expect.hpp"

#include "../support/process.hpp"

using patro::Errc;
using patro::Proxy;
using patro::Value;
using patro::test::read_file;
using patro::test::TempDir;

using patro::test::error_of;

namespace {

patro::ServerOptions fast_options(bool secure = true) {
  patro::ServerOptions o;
  o.heartbeat.interval = std::chrono::milliseconds(100);
  o.threads = 2;
  o.secure_filehandles = secure;
  return o;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

/// The errno a RemoteError carries, or -1 if f threw something else or nothing.
template <class F>
int errno_of(F&& f) {
  try {
    f();
  } catch (const patro::RemoteError& e) {
    return e.error_number();
  } catch (const patro::Error&) {
    return -1;
  }
  return -1;
}

}  // namespace

TEST_CASE("Patro's log file handle: print appends on the server") {
  TempDir dir;
  const std::string path = dir.file("host1.log");
  write_file(path, "first\n");
  auto log = patro::FileHandle::open(path, ">>");
  auto cfg = patro::patronize(fast_options(), log);
  Proxy ph = patro::get_proxies(cfg).at(0);
  CHECK(patro::ref(ph) == "GLOB");
  CHECK(ph.print("A log message for the server\n"));
  CHECK(ph.print("n=", 42, " x=", 1.5, "\n"));  // Perl's print of a list
  CHECK(ph.printf("%-5s|%05d|%.2f|%x|%s|%%|%c\n", "ab", 42, 3.14159, 255, Value(), 65));
  // Formats come from the network: odd flags and unknown conversions are harmless.
  CHECK(ph.printf("%#c|%0s|%.3c|%n|%-3d|%b|%5.1s|%*d|\n", 65, "x", 66, 5, 5, "yz", 3, 7));
  CHECK(ph.write(Value(patro::Bytes{std::string("raw\0bytes\n", 10)})));
  CHECK(ph.flush());
  CHECK(read_file(path) ==
        std::string("first\nA log message for the server\nn=42 x=1.5\nab   |00042|3.14|ff||%|A\n") +
            "A|x|B|%n|5  |101|    y|  7|\n" + std::string("raw\0bytes\n", 10));
}

TEST_CASE("reading: readline, readlines, read, getc, eof, seek, tell") {
  TempDir dir;
  const std::string path = dir.file("in.txt");
  write_file(path, "one\ntwo\nthree\nfour");
  auto fh = patro::FileHandle::open(path, "<");
  auto cfg = patro::patronize(fast_options(), fh);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK_FALSE(p.eof());
  CHECK(p.readline() == "one\n");
  CHECK(p.tell() == 4);
  CHECK(p.getc() == "t");
  CHECK(p.read(3) == "wo\n");
  CHECK(p.readlines() == std::vector<Value>{"three\n", "four"});
  CHECK(p.eof());
  CHECK(p.readline().is_null());  // Perl's undef at end of file
  CHECK(p.getc().is_null());
  CHECK(p.read(10).empty());
  CHECK(p.seek(4));
  CHECK(p.readline() == "two\n");
  CHECK(p.seek(-4, SEEK_END));
  CHECK(p.read(100) == "four");
  CHECK(p.seek(0));
  CHECK(p.seek(4, SEEK_CUR));  // relative to what the reader has read, not to the read-ahead
  CHECK(p.readline() == "two\n");
  CHECK(p.binmode(":raw"));
  CHECK(p.binmode(":encoding(UTF-8)"));
  CHECK(error_of([&] { p.binmode("; rm -rf /"); }).code() == Errc::invalid_argument);
  CHECK(error_of([&] { p.seek(0, 7); }).code() == Errc::invalid_argument);
  CHECK(error_of([&] { p.read(-1); }).code() == Errc::invalid_argument);
}

TEST_CASE("read-write handles: truncate, mixed reads and writes, file tests, stat, flock") {
  TempDir dir;
  const std::string path = dir.file("rw.txt");
  write_file(path, "abcdef\nghi\n");
  auto fh = patro::FileHandle::open(path, "+<");
  auto cfg = patro::patronize(fast_options(), fh);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(p.readline() == "abcdef\n");
  CHECK(p.print("XYZ"));  // writes where the reader is, not after the read-ahead
  CHECK(p.tell() == 10);
  CHECK(p.truncate(5));
  CHECK(read_file(path) == "abcde");
  CHECK(p.file_exists());
  CHECK(p.file_size() == 5);
  CHECK(p.file_test('s') == 5);
  CHECK(p.file_test('f') == true);
  CHECK(p.file_test('d') == false);
  CHECK(p.file_test('z') == false);
  CHECK(p.readable());
  CHECK(p.writable());
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
  CHECK(p.modified() <= now + 1);
  CHECK(p.modified() >= now - 3600);
  CHECK(p.file_test('M').as<double>() < 1.0);
  CHECK(p.stat()["size"] == 5);
  CHECK(p.flock(LOCK_EX));
  CHECK(p.flock(LOCK_UN));
  CHECK(p.flock(LOCK_SH | LOCK_NB));
  CHECK(p.flock(LOCK_UN));
  CHECK(error_of([&] { p.flock(99); }).code() == Errc::invalid_argument);
  CHECK(error_of([&] { p.file_test('q'); }).code() == Errc::invalid_argument);
  // IO::Handle's method spelling works too.
  CHECK(p.call("tell") == 10);
}

TEST_CASE("directory handles: readdir, telldir, seekdir, rewinddir") {
  TempDir dir;
  write_file(dir.file("a"), "1");
  write_file(dir.file("b"), "2");
  auto dh = patro::DirHandle::open(dir.path());
  auto cfg = patro::patronize(fast_options(), dh);
  Proxy d = patro::get_proxies(cfg).at(0);
  const int64_t start = d.telldir();
  Value first = d.readdir();
  CHECK(first.type() == patro::Type::string);
  const int64_t second_pos = d.telldir();
  auto rest = d.readdir_all();
  CHECK(rest.size() == 3);  // ".", "..", "a", "b" in all
  CHECK(d.readdir().is_null());
  CHECK(d.readdir_all().empty());
  CHECK(d.seekdir(second_pos));
  CHECK(d.readdir_all() == rest);
  CHECK(d.seekdir(start));
  CHECK(d.readdir() == first);
  CHECK(d.rewinddir());
  auto all = d.readdir_all();
  std::vector<std::string> names;
  for (auto& v : all) names.push_back(v.as<std::string>());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{".", "..", "a", "b"});
}

TEST_CASE("open, close, sysopen, opendir and closedir through a proxy are refused by default") {
  TempDir dir;
  const std::string path = dir.file("log");
  auto fh = patro::FileHandle::open(path, ">");
  auto dh = patro::DirHandle::open(dir.path());
  auto cfg = patro::patronize(fast_options(), fh, dh);
  auto ps = patro::get_proxies(cfg);
  const std::vector<std::function<void()>> refused = {
      [&] { ps[0].open("<", "/etc/passwd"); },
      [&] { ps[0].close(); },
      [&] { ps[0].sysopen("/etc/passwd", O_RDONLY); },
      [&] { ps[1].opendir("/"); },
      [&] { ps[1].closedir(); },
  };
  for (const auto& f : refused) {
    auto e = error_of(f);
    CHECK(e.code() == Errc::unsupported);
    CHECK(std::string(e.what()).find("secure_filehandles") != std::string::npos);
  }
  // After a refusal each handle keeps working.
  CHECK(ps[0].print("still here\n"));
  CHECK(read_file(path) == "still here\n");
  CHECK(ps[1].readdir_all().size() == 3);
}

TEST_CASE("with secure_filehandles = false, open and close work, and pipes are still refused") {
  TempDir dir;
  const std::string a = dir.file("a"), b = dir.file("b");
  write_file(b, "bee\n");
  auto fh = patro::FileHandle::open(a, ">");
  auto dh = patro::DirHandle::open(dir.path());
  auto cfg = patro::patronize(fast_options(false), fh, dh);
  auto ps = patro::get_proxies(cfg);
  Proxy p = ps[0];
  CHECK(p.print("x\n"));
  CHECK(p.close());
  CHECK(errno_of([&] { p.print("y\n"); }) == EBADF);
  CHECK(errno_of([&] { p.close(); }) == EBADF);
  CHECK(p.file_exists() == false);  // -e on a closed handle
  CHECK(p.open("<", b));
  CHECK(p.readline() == "bee\n");
  CHECK(errno_of([&] { p.open("<", dir.file("missing")); }) == ENOENT);
  CHECK(p.readline().is_null());  // the failed open left the handle as it was
  for (const char* mode : {"-|", "|-", "| cat", ">&", "<&=0", "-"}) {
    auto e = error_of([&] { p.open(mode, "echo hacked"); });
    CHECK(e.code() == Errc::unsupported);
  }
  CHECK(error_of([&] { p.open("<<", b); }).code() == Errc::invalid_argument);
  CHECK(p.sysopen(a, O_WRONLY | O_APPEND));
  CHECK(p.print("z\n"));
  CHECK(read_file(a) == "x\nz\n");
  CHECK(error_of([&] { p.sysopen(a, O_RDONLY | O_DIRECTORY); }).code() == Errc::invalid_argument);
  CHECK(ps[1].closedir());
  CHECK(errno_of([&] { ps[1].readdir(); }) == EBADF);
  CHECK(ps[1].opendir(dir.path()));
  CHECK(ps[1].readdir_all().size() == 4);
}

TEST_CASE("a failed system call carries its errno back (Perl's $!)") {
  TempDir dir;
  const std::string path = dir.file("w");
  auto fh = patro::FileHandle::open(path, ">");
  auto cfg = patro::patronize(fast_options(), fh);
  Proxy p = patro::get_proxies(cfg).at(0);
  try {
    p.read(10);  // a write-only handle
    FAIL("read on a write-only handle succeeded");
  } catch (const patro::RemoteError& e) {
    CHECK(e.error_number() == EBADF);
    CHECK(e.type() == "std::system_error");
    CHECK(e.code() == Errc::remote_exception);
    CHECK(std::string(e.what()).find(path) != std::string::npos);
  }
  CHECK(p.eof());            // Perl: eof on a handle not open for reading is true
  CHECK(p.print("fine\n"));  // and the handle keeps working
  fh.close();                // the server closes it
  try {
    p.print("late\n");
    FAIL("print on a closed handle succeeded");
  } catch (const patro::RemoteError& e) {
    CHECK(e.error_number() == EBADF);
    CHECK(std::string(e.what()).find("closed filehandle") != std::string::npos);
  }
  CHECK(read_file(path) == "fine\n");
}

TEST_CASE("file operations on something that is not a file handle are errors") {
  auto h = patro::Hash{{"abc", 1}};
  auto cfg = patro::patronize(fast_options(), h);
  Proxy p = patro::get_proxies(cfg).at(0);
  CHECK(error_of([&] { p.print("x"); }).code() == Errc::type_mismatch);
  CHECK(error_of([&] { p["abc"].readline(); }).code() == Errc::type_mismatch);
  CHECK(error_of([] { patro::FileHandle::open("/nonexistent/x", "<"); }).code() ==
        Errc::invalid_argument);
  CHECK(error_of([] { patro::FileHandle::open("/tmp/x", "|"); }).code() == Errc::invalid_argument);
}
