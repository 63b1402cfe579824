// Proxy members for served objects, callables and file handles (the container operations are in
// proxy.cpp).
#include "connection.hpp"
#include "patro/client.hpp"

namespace patro {

using detail::Connection;
using wire::Op;

namespace {
Value first_of(const ValueArray& results) {
  return results.empty() ? Value() : results.front();
}
}  // namespace

std::vector<Value> Proxy::served_call(std::string_view method, detail::CallArgs args,
                                      bool list) const {
  std::vector<std::pair<uint32_t, Value>> changed;
  auto results = conn_->call(id_, Op::Call, path_, args.values, method,
                             list ? wire::CallContext::List : wire::CallContext::Scalar,
                             detail::CallExtras{std::nullopt, fence_, &changed});
  for (const auto& [index, value] : changed)
    for (const auto& [slot, write_back] : args.outs)
      if (slot == index) write_back(value);
  if (!list && results.empty()) results.emplace_back();
  return results;
}

Proxy& Proxy::assign_op(std::string_view op, const Value& v) {
  // The server answers null when the object changed in place, or a reference to the new object
  // its plain operator made.
  const Value r =
      first_of(conn_->call(id_, Op::Operator, path_, {v, Value(false)}, op,
                           wire::CallContext::Scalar, detail::CallExtras{std::nullopt, fence_}));
  if (const Reference* ref = r.if_reference(); ref && ref->conn) {
    if (path_.empty())
      id_ = ref->id;
    else
      set(r);
  }
  return *this;
}

Value detail_binary_op(const Proxy& p, std::string_view op, const Value& other, bool swapped) {
  return first_of(
      p.connection()->call(p.id(), Op::Operator, p.path(), {other, Value(swapped)}, op));
}

Value Proxy::operator-() const {
  return first_of(conn_->call(id_, Op::Operator, path_, {}, "neg"));
}
bool Proxy::operator!() const {
  return truthy(first_of(conn_->call(id_, Op::Operator, path_, {}, "!")));
}
std::string Proxy::to_string() const {
  return first_of(conn_->call(id_, Op::Convert, path_, {}, "\"\"")).as<std::string>();
}
double Proxy::to_number() const {
  return first_of(conn_->call(id_, Op::Convert, path_, {}, "0+")).as<double>();
}
bool Proxy::to_bool() const {
  return truthy(first_of(conn_->call(id_, Op::Convert, path_, {}, "bool")));
}

bool can(const Proxy& p, std::string_view method) {
  return truthy(first_of(p.connection()->call(p.id(), Op::Can, p.path(), {}, method)));
}

bool isa(const Proxy& p, std::string_view class_name) {
  try {
    return truthy(first_of(p.connection()->call(p.id(), Op::Isa, p.path(), {}, class_name)));
  } catch (const Error& e) {
    // A server older than the Isa operation answers "unknown operation 21".
    if (e.code() != Errc::unsupported) throw;
    throw Error(Errc::unsupported, std::string("isa: the server does not support it (") + e.what() +
                                       "); ref(p) gives the class name");
  }
}

Proxy function(const Proxy& registry, std::string_view name) {
  return Proxy(registry.call("remote_sub", Value(name)));
}

// --- File and directory handles ---

std::vector<Value> Proxy::file_op(std::string_view op, std::vector<Value> args, bool list) const {
  auto r = conn_->call(id_, Op::File, path_, args, op,
                       list ? wire::CallContext::List : wire::CallContext::Scalar);
  if (!list && r.empty()) r.emplace_back();
  return r;
}

bool Proxy::write(const Value& data) const {
  return truthy(file_op("write", {data}).at(0));
}
Value Proxy::readline() const {
  return file_op("readline", {}).at(0);
}
std::vector<Value> Proxy::readlines() const {
  return file_op("readline", {}, true);
}
std::string Proxy::read(int64_t n) const {
  return file_op("read", {Value(n)}).at(0).as<std::string>();
}
Value Proxy::getc() const {
  return file_op("getc", {}).at(0);
}
bool Proxy::eof() const {
  return truthy(file_op("eof", {}).at(0));
}
bool Proxy::seek(int64_t position, int whence) const {
  return truthy(file_op("seek", {Value(position), Value(whence)}).at(0));
}
int64_t Proxy::tell() const {
  return file_op("tell", {}).at(0).as<int64_t>();
}
bool Proxy::truncate(int64_t length) const {
  return truthy(file_op("truncate", {Value(length)}).at(0));
}
bool Proxy::flush() const {
  return truthy(file_op("flush", {}).at(0));
}
bool Proxy::binmode(std::string_view layer) const {
  return truthy(file_op("binmode", {Value(layer)}).at(0));
}
bool Proxy::flock(int operation) const {
  return truthy(file_op("flock", {Value(operation)}).at(0));
}
Value Proxy::file_test(char test) const {
  return file_op("test", {Value(std::string(1, test))}).at(0);
}
int64_t Proxy::file_size() const {
  return stat()["size"].as<int64_t>();
}
int64_t Proxy::modified() const {
  return stat()["mtime"].as<int64_t>();
}
Value Proxy::stat() const {
  return file_op("stat", {}).at(0);
}
bool Proxy::open(std::string_view mode, std::string_view path) const {
  return truthy(file_op("open", {Value(mode), Value(path)}).at(0));
}
bool Proxy::close() const {
  return truthy(file_op("close", {}).at(0));
}
bool Proxy::sysopen(std::string_view path, int flags, int permissions) const {
  return truthy(file_op("sysopen", {Value(path), Value(flags), Value(permissions)}).at(0));
}
Value Proxy::readdir() const {
  return file_op("readdir", {}).at(0);
}
std::vector<Value> Proxy::readdir_all() const {
  return file_op("readdir", {}, true);
}
int64_t Proxy::telldir() const {
  return file_op("telldir", {}).at(0).as<int64_t>();
}
bool Proxy::seekdir(int64_t position) const {
  return truthy(file_op("seekdir", {Value(position)}).at(0));
}
bool Proxy::rewinddir() const {
  return truthy(file_op("rewinddir", {}).at(0));
}
bool Proxy::opendir(std::string_view path) const {
  return truthy(file_op("opendir", {Value(path)}).at(0));
}
bool Proxy::closedir() const {
  return truthy(file_op("closedir", {}).at(0));
}

}  // namespace patro
