#include "context.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace patro::cli {

void Invocation::need(size_t min, size_t max, const char* what) const {
  if (words.size() < min || words.size() > max) throw UsageError("patro " + sub + " needs " + what);
}

namespace {
std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot read @" + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

namespace {
// A word given to --json-args that is not JSON is bad usage.
Value json_word(const std::string& text) {
  try {
    return parse_json(text);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
}
}  // namespace

Value Invocation::value(size_t i) const {
  const std::string& w = words.at(i);
  if (last_from_stdin && i + 1 == words.size()) return json_args ? json_word(w) : Value(w);
  if (w.size() > 1 && w[0] == '@') {
    if (w[1] == '@') {
      const std::string literal = w.substr(1);
      return json_args ? json_word(literal) : infer(literal);
    }
    const std::string data = read_whole_file(w.substr(1));
    return json_args ? json_word(data) : Value(data);
  }
  return json_args ? json_word(w) : infer(w);
}

void Output::print(const Value& v) const {
  line(json ? dump(to_json(v)) : text(v));
}

void Output::print_all(const std::vector<Value>& vs) const {
  if (json) {
    Json a = Json::array();
    for (const Value& v : vs) a.push_back(to_json(v));
    return print(a);
  }
  for (const Value& v : vs) line(text(v));
}

void Output::print(const Json& j) const {
  line(dump(j));
}

void Output::line(const std::string& text) const {
  // One write per line, so that a line is never torn by a signal's flush from another thread.
  std::string out;
  out.reserve(text.size() + 1);
  out += text;
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

std::string endpoint_of(const std::string& text, const std::string& from) {
  if (text.find("://") != std::string::npos) return text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos && colon > 0 && colon + 1 < text.size() &&
      text.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
      text.size() - colon - 1 <= 5)
    return "tcp://" + text;
  throw UsageError(from + " is not a broker endpoint: '" + text +
                   "' (give tcp://HOST:PORT or HOST:PORT)");
}

std::vector<std::string> endpoints_of(const std::string& text, const std::string& from) {
  std::vector<std::string> out;
  for (const std::string& item : split_endpoints(text)) out.push_back(endpoint_of(item, from));
  if (out.empty())
    throw UsageError(from + " names no broker: '" + text +
                     "' (give tcp://HOST:PORT or HOST:PORT, several comma-separated)");
  return out;
}

Cluster::Cluster(const std::optional<std::string>& broker, const std::optional<std::string>& config,
                 ClientOptions options)
    : options_(options) {
  if (broker && config) throw UsageError("give --broker or --config, not both");
  if (broker) {
    endpoints_ = endpoints_of(*broker, "--broker");
  } else if (config) {
    config_ = Config::from_file(*config);
    if (config_->brokers().empty()) throw Error(Errc::bad_config, "the config names no broker");
    endpoints_ = config_->brokers();
    // The keys the command line gives win over those the config carries.
    if (options_.curve.broker_key.empty()) options_.curve.broker_key = config_->broker_key();
    if (options_.curve.keys.empty()) options_.curve.keys = config_->client_key();
    if (options_.route == Route::automatic && !config_->route().empty())
      options_.route = parse_route(config_->route());
  } else if (const char* env = std::getenv("PATRO_BROKER"); env != nullptr && *env != '\0') {
    endpoints_ = endpoints_of(env, "PATRO_BROKER");
  } else {
    // Where patro-broker and patro-worker listen by default.
    endpoints_ = {BrokerOptions{}.frontend};
  }
}

Proxy Cluster::proxy(const std::string& name) {
  if (config_ && !name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
    const size_t i = static_cast<size_t>(parse_int(name, "object index", 0, 1 << 30));
    if (i >= config_->objects().size())
      throw Error(Errc::not_found, "the config has " + std::to_string(config_->objects().size()) +
                                       " objects; no object " + name);
    if (config_proxies_.empty()) config_proxies_ = get_proxies(*config_, options_);
    return config_proxies_.at(i);
  }
  return get_proxy(endpoints_, name, options_);
}

std::chrono::milliseconds parse_duration(const std::string& s, const char* what) {
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  const std::string unit = end ? end : "";
  double scale = 1000;  // seconds by default
  if (unit == "ms")
    scale = 1;
  else if (unit == "s" || unit.empty())
    scale = 1000;
  else if (unit == "m")
    scale = 60000;
  else
    throw UsageError(std::string("bad ") + what + ": " + s);
  if (errno != 0 || end == s.c_str() || !std::isfinite(v) || v < 0 || v * scale > 1e12)
    throw UsageError(std::string("bad ") + what + ": " + s);
  return std::chrono::milliseconds(static_cast<int64_t>(v * scale));
}

int64_t parse_int(const std::string& s, const char* what, int64_t min, int64_t max) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0' || v < min || v > max)
    throw UsageError(std::string("bad ") + what + ": " + s);
  return v;
}

sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1}) sigaddset(&set, s);
  return set;
}

}  // namespace patro::cli
