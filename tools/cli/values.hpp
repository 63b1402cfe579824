// Values on the patro command line: typed input (inference, JSON, stdin, @FILE) and output (text
// or JSON). Every JSON the CLI reads or writes goes through nlohmann::json here.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <patro/patro.hpp>

namespace patro::cli {

/// JSON objects keep their keys in the order they were added (take's fields, ls, stats).
using Json = nlohmann::ordered_json;

/// The key of the JSON object that stands for bytes that are not UTF-8 text: {"$base64": "..."}.
inline constexpr std::string_view kBase64Key = "$base64";

bool is_utf8(std::string_view s) noexcept;
std::string base64_encode(std::string_view data);
/// Throws patro::Error(invalid_argument) on a malformed input.
std::string base64_decode(std::string_view text);

/// A Value as JSON: text that is not valid UTF-8, and bytes, become {"$base64": "..."}; a double
/// that is not finite becomes null; a reference becomes its text form ("HASH(…)").
Json to_json(const Value& v);
/// JSON as a Value: {"$base64": "..."} (that one key alone) becomes bytes.
Value from_json(const Json& j);

/// A command-line word without --json-args: integers, floats, true, false and null are typed,
/// anything else is a string.
Value infer(const std::string& word);
/// A command-line word parsed as JSON (--json-args); throws patro::Error(invalid_argument).
Value parse_json(const std::string& text);

/// Compact JSON text (never throws on odd strings: they were made base64 already).
std::string dump(const Json& j);
/// A result as text: a string or bytes as they are, anything else as compact JSON.
std::string text(const Value& v);
/// Text for a one-line field (take's JOB): text(v) with backslash, newline, carriage return and
/// tab escaped as \\ \n \r \t.
std::string escape_field(const std::string& s);

}  // namespace patro::cli
