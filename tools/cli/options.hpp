// The command-line framework every Patro binary shares (CLI11): --opt value and --opt=value,
// --help on every (sub)command, --version, and one set of exit statuses for bad usage.
#pragma once

#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#ifndef PATRO_VERSION
#error "PATRO_VERSION is defined by the build (meson's project version)"
#endif

namespace patro::cli {

/// Exit statuses shared by every binary: 0 ok, 1 a runtime error, 2 bad usage.
enum Status : int { status_ok = 0, status_error = 1, status_usage = 2 };

inline const char* version() noexcept {
  return PATRO_VERSION;
}

/// An App named program, with --version ("program 0.1.0") and help on every subcommand.
inline void setup(CLI::App& app) {
  app.set_version_flag("--version", app.get_name() + " " + version(), "print the version and exit");
  app.set_help_flag("-h,--help", "print this help and exit");
}

/// Parses args (without the program name). Returns the exit status when the program should stop
/// now: 0 after --help or --version (printed on stdout), 2 after a usage error (on stderr).
inline std::optional<int> parse(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp& e) {
    std::ostringstream out, err;
    app.exit(e, out, err);
    std::fputs(out.str().c_str(), stdout);
    return status_ok;
  } catch (const CLI::CallForAllHelp& e) {
    std::ostringstream out, err;
    app.exit(e, out, err);
    std::fputs(out.str().c_str(), stdout);
    return status_ok;
  } catch (const CLI::CallForVersion& e) {
    std::fputs((std::string(e.what()) + "\n").c_str(), stdout);
    return status_ok;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    // CLI11 checks for a missing subcommand before it checks for unknown words, so `patro bogus`
    // and `patro --bogus` would both say "A subcommand is required": name the word instead.
    const std::vector<std::string> extra = app.remaining();
    if (dynamic_cast<const CLI::RequiredError*>(&e) && !app.get_subcommands({}).empty() &&
        app.get_subcommands().empty() && !extra.empty())
      what = (extra.front().starts_with("-") ? "unknown option '" : "unknown subcommand '") +
             extra.front() + "'";
    std::fprintf(stderr, "%s: %s\n(see %s --help)\n", app.get_name().c_str(), what.c_str(),
                 app.get_name().c_str());
    return status_usage;
  }
  return std::nullopt;
}

/// Accepts numbers from lo to hi. Unlike CLI::Range and CLI::NonNegativeNumber, whose message
/// prints the bounds in full ("Value abc not in range 0.000000 to 179769313486231...", about 300
/// digits for a double), it says briefly what is wrong with the value.
template <typename T>
CLI::Validator range(T lo, T hi) {
  const auto text = [](T v) {
    std::ostringstream out;
    out << v;
    return out.str();
  };
  const std::string bounds = text(lo) + " to " + text(hi);
  return CLI::Validator(
      [lo, hi, bounds](std::string& in) -> std::string {
        T v{};
        if (!CLI::detail::lexical_cast(in, v)) return "'" + in + "' is not a number";
        if (v < lo || v > hi) return "'" + in + "' is out of range (" + bounds + ")";
        return {};
      },
      "in " + bounds);
}

/// Accepts numbers 0 and above, with a brief message otherwise (see range()).
inline CLI::Validator non_negative() {
  return CLI::Validator(
      [](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v)) return "'" + in + "' is not a number";
        if (v < 0) return "'" + in + "' is negative (give 0 or more)";
        return {};
      },
      "0 or more");
}

inline std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  return parse(app, std::vector<std::string>(argv + 1, argv + argc));
}

}  // namespace patro::cli
