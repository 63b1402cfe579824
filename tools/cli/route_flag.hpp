// The --route flag the Patro client programs share (the direct path): auto, direct or broker,
// default $PATRO_ROUTE, else auto (direct to a server when it can be reached, else through the
// broker).
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <patro/options.hpp>

namespace patro::cli {

struct RouteFlag {
  std::string route;

  void add(CLI::App& app) {
    app.add_option("--route", route,
                   "how requests go: auto (straight to their server when it can be reached, "
                   "else through the broker), direct (straight only), broker (through the broker "
                   "only); default $PATRO_ROUTE, else auto")
        ->type_name("auto|direct|broker")
        ->envname("PATRO_ROUTE")
        ->check(CLI::IsMember({"auto", "direct", "broker"}));
  }

  /// Sets options.route from the flag (or $PATRO_ROUTE); leaves it as it is without either.
  void apply(ClientOptions& options) const {
    if (!route.empty()) options.route = parse_route(route);
  }
};

}  // namespace patro::cli
