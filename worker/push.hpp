// What server push shares in patro-worker (the queue's consume, the log's subscribe): the callback
// a client passes, checked, and the guard through which a push's answer — it arrives on a
// connection's thread, perhaps after the object that pushed is gone — reaches that object.
#pragma once

#include <mutex>
#include <string>

#include <patro/patro.hpp>

namespace patro::worker {

/// A proxy to callback, which must be a client's patro::Code; throws Error(type_mismatch) naming
/// the method and how the callback is called (what: "it is called with ...") otherwise.
inline Proxy push_target(const Value& callback, const std::string& method,
                         const std::string& what) {
  const Reference* r = callback.if_reference();
  if (r == nullptr || r->reftype != "CODE")
    throw Error(Errc::type_mismatch,
                method + ": the callback must be a client's patro::Code (" + what + "), not " +
                    (r != nullptr ? r->type_name : std::string(type_name(callback.type()))));
  return Proxy(callback);  // type_mismatch if this server cannot call it
}

/// Held by an object that pushes and by each push in flight; the object clears it first thing in
/// its destructor, after which answers reach nothing.
template <class T>
class PushGuard {
 public:
  explicit PushGuard(T* object) : object_(object) {}
  /// Runs f(object) under the guard's lock, unless the object is gone.
  template <class F>
  void with(F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    if (object_ != nullptr) f(*object_);
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    object_ = nullptr;
  }

 private:
  std::mutex mu_;
  T* object_;
};

}  // namespace patro::worker
