#include <doctest/doctest.h>

#include <patro/patro.hpp>

#include "../support/process.hpp"

using patro::Config;
using patro::Errc;

namespace {
Errc parse_error(const std::string& text) {
  try {
    (void)Config::parse(text);
  } catch (const patro::Error& e) {
    return e.code();
  }
  return Errc::ok;
}
}  // namespace

TEST_CASE("a config travels as one line and reads back") {
  Config c({"tcp://127.0.0.1:7170", "tcp://10.0.0.2:7170"},
           {{patro::ObjectId{1, 2}, "HASH", "HASH"}, {patro::ObjectId{3, 4}, "Foo", "HASH"}});
  const std::string text = c.to_string();
  CHECK(text.find('\n') == std::string::npos);
  Config back = Config::parse(text);
  CHECK(back.brokers() == c.brokers());
  REQUIRE(back.objects().size() == 2);
  CHECK(back.objects()[1].id == patro::ObjectId{3, 4});
  CHECK(back.objects()[1].type_name == "Foo");

  patro::test::TempDir dir;
  c.to_file(dir.file("c.conf"));
  CHECK(Config::from_file(dir.file("c.conf")).objects().size() == 2);
}

TEST_CASE("bad configs are clear errors") {
  CHECK(parse_error(R"({"objects": []})") == Errc::bad_config);  // no broker address
  CHECK(parse_error(R"({"brokers": [], "objects": []})") == Errc::bad_config);
  CHECK(parse_error("not a config") == Errc::bad_config);
  CHECK(parse_error(R"({"brokers": ["tcp://x:1"], "objects": [{"id": "zz"}]})") ==
        Errc::bad_config);
  CHECK(parse_error(R"({"brokers": ["tcp://x:1"], "version": 9})") == Errc::bad_config);
  CHECK(parse_error(R"({"brokers": ["tcp://x:1"],)") == Errc::bad_config);
  try {
    (void)Config::from_file("/nonexistent/patro.conf");
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::bad_config);
  }
}

TEST_CASE("get_proxies with a config naming no broker, or a missing file") {
  try {
    (void)patro::get_proxies(R"({"objects": []})");
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::bad_config);
    CHECK(std::string(e.what()).find("no broker") != std::string::npos);
  }
  try {
    (void)patro::get_proxies("/nonexistent/file.conf");
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::bad_config);
  }
}

TEST_CASE("get_proxies where nothing listens fails within the connect timeout") {
  patro::ClientOptions opts;
  opts.connect_timeout = std::chrono::milliseconds(300);
  Config c({"tcp://127.0.0.1:9"}, {});
  try {
    (void)patro::get_proxies(c, opts);
    FAIL("no error");
  } catch (const patro::Error& e) {
    CHECK(e.code() == Errc::broker_unreachable);
    CHECK(std::string(e.what()).find("tcp://127.0.0.1:9") != std::string::npos);
  }
}
