// Serving objects: patro::patronize.
#pragma once

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "patro/config.hpp"
#include "patro/containers.hpp"
#include "patro/export.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// An object served under a well-known name in the broker's registry, so that clients can find it
/// with get_proxy(endpoint, name). Pass it to patronize() like any other object.
struct Named {
  std::string name;
  Value object;
};
inline Named named(std::string name, Value object) {
  return {std::move(name), std::move(object)};
}

namespace detail {
Config patronize_values(const ServerOptions& options, std::vector<Named> objects);
template <class T>
Named as_named(T&& object) {
  if constexpr (std::is_same_v<std::remove_cvref_t<T>, Named>)
    return std::forward<T>(object);
  else
    return Named{std::string(), Value(std::forward<T>(object))};
}
}  // namespace detail

/// Serves the objects (Hash, Array, Scalar, plain Values, Named) and returns the Config that
/// clients use to reach them, in the order given. The server runs while a copy of the returned
/// Config lives (or until Config::stop). With no broker in the options, a broker is started
/// inside this process on 127.0.0.1.
template <class... Objects>
Config patronize(const ServerOptions& options, Objects&&... objects) {
  std::vector<Named> list;
  list.reserve(sizeof...(objects));
  (list.push_back(detail::as_named(std::forward<Objects>(objects))), ...);
  return detail::patronize_values(options, std::move(list));
}

/// Serves a list of objects built at run time (as patro-worker does).
inline Config patronize(const ServerOptions& options, std::vector<Named> objects) {
  return detail::patronize_values(options, std::move(objects));
}

/// Removes lock segments in /dev/shm left by servers (with default names) whose process is gone,
/// and returns how many. patronize() does this on every start.
size_t remove_stale_lock_segments();

template <class... Objects>
requires(sizeof...(Objects) == 0 ||
         !std::is_same_v<std::remove_cvref_t<std::tuple_element_t<0, std::tuple<Objects...>>>,
                         ServerOptions>) Config patronize(Objects&&... objects) {
  return patronize(ServerOptions{}, std::forward<Objects>(objects)...);
}

}  // namespace patro
PATRO_PUBLIC_END
