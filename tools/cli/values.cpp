#include "values.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>

namespace patro::cli {

bool is_utf8(std::string_view s) noexcept {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}  // namespace

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8 |
                       static_cast<unsigned char>(data[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < data.size()) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(data[i])) << 16;
    if (i + 1 < data.size())
      v |= static_cast<uint32_t>(static_cast<unsigned char>(data[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < data.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view text) {
  auto digit = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0)
    throw Error(Errc::invalid_argument, "base64 text whose length is not a multiple of 4");
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int d[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + static_cast<size_t>(k)];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        d[k] = 0;
        ++pad;
      } else if (pad > 0 || (d[k] = digit(c)) < 0) {
        throw Error(Errc::invalid_argument, "not base64: " + std::string(text.substr(i, 4)));
      }
    }
    const uint32_t v = static_cast<uint32_t>(d[0] << 18 | d[1] << 12 | d[2] << 6 | d[3]);
    out += static_cast<char>(v >> 16);
    if (pad < 2) out += static_cast<char>((v >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(v & 0xFF);
  }
  return out;
}

namespace {
Json bytes_json(std::string_view data) {
  Json j = Json::object();
  j[std::string(kBase64Key)] = base64_encode(data);
  return j;
}
}  // namespace

Json to_json(const Value& v) {
  switch (v.type()) {
    case Type::null:
      return nullptr;
    case Type::boolean:
      return *v.if_bool();
    case Type::integer:
      return *v.if_int();
    case Type::number:
      if (!std::isfinite(*v.if_double())) return nullptr;
      return *v.if_double();
    case Type::string:
      if (!is_utf8(*v.if_string())) return bytes_json(*v.if_string());
      return *v.if_string();
    case Type::bytes:
      return bytes_json(v.if_bytes()->data);
    case Type::array: {
      Json a = Json::array();
      for (const Value& e : *v.if_array()) a.push_back(to_json(e));
      return a;
    }
    case Type::hash: {
      // A key that is not UTF-8 cannot be a JSON key: it is written as its base64 form with the
      // prefix "$base64:" (documented in the README).
      Json h = Json::object();
      for (const auto& [k, e] : *v.if_hash())
        h[is_utf8(k) ? k : std::string(kBase64Key) + ":" + base64_encode(k)] = to_json(e);
      return h;
    }
    case Type::reference:
      return v.to_string();
  }
  return nullptr;
}

Value from_json(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
    case Json::value_t::discarded:
      return Value();
    case Json::value_t::boolean:
      return Value(j.get<bool>());
    case Json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case Json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case Json::value_t::number_float:
      return Value(j.get<double>());
    case Json::value_t::string:
      return Value(j.get<std::string>());
    case Json::value_t::binary:
      return Value(Bytes{std::string(j.get_binary().begin(), j.get_binary().end())});
    case Json::value_t::array: {
      ValueArray a;
      a.reserve(j.size());
      for (const Json& e : j) a.push_back(from_json(e));
      return Value(std::move(a));
    }
    case Json::value_t::object: {
      if (j.size() == 1 && j.begin().key() == kBase64Key && j.begin()->is_string())
        return Value(Bytes{base64_decode(j.begin()->get<std::string>())});
      ValueHash h;
      for (auto it = j.begin(); it != j.end(); ++it) h[it.key()] = from_json(it.value());
      return Value(std::move(h));
    }
  }
  return Value();
}

Value infer(const std::string& s) {
  if (s == "null") return Value();
  if (s == "true") return Value(true);
  if (s == "false") return Value(false);
  if (!s.empty() && !std::isspace(static_cast<unsigned char>(s[0]))) {
    errno = 0;
    char* end = nullptr;
    const long long i = std::strtoll(s.c_str(), &end, 10);
    if (*end == '\0' && errno == 0) return Value(static_cast<int64_t>(i));
    const bool has_digit = s.find_first_of("0123456789") != std::string::npos;
    const bool word = s.find_first_of("iInN") != std::string::npos;  // inf, nan: strings
    errno = 0;
    const double d = std::strtod(s.c_str(), &end);
    if (*end == '\0' && errno == 0 && has_digit && !word && std::isfinite(d)) return Value(d);
  }
  return Value(s);
}

Value parse_json(const std::string& text) {
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    std::string shown = text.size() > 60 ? text.substr(0, 60) + "..." : text;
    throw Error(Errc::invalid_argument, "--json-args: not JSON: " + shown);
  }
  return from_json(j);
}

std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string text(const Value& v) {
  if (const std::string* s = v.if_string()) return *s;
  if (const Bytes* b = v.if_bytes()) return b->data;
  return dump(to_json(v));
}

std::string escape_field(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace patro::cli
