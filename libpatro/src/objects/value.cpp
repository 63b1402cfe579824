#include "patro/value.hpp"

#include <cmath>
#include <cstdio>

#include "patro/containers.hpp"

namespace patro {

namespace {
const Value& null_value() {
  static const Value null;
  return null;
}

void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
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
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append(std::string& out, const Value& v);

void append_path(std::string& out, const Path& path) {
  for (const auto& e : path) {
    if (const auto* k = std::get_if<std::string>(&e)) {
      out += '[';
      append_quoted(out, *k);
      out += ']';
    } else {
      out += '[' + std::to_string(std::get<int64_t>(e)) + ']';
    }
  }
}

void append(std::string& out, const Value& v) {
  switch (v.type()) {
    case Type::null:
      out += "null";
      break;
    case Type::boolean:
      out += *v.if_bool() ? "true" : "false";
      break;
    case Type::integer:
      out += std::to_string(*v.if_int());
      break;
    case Type::number: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", *v.if_double());
      out += buf;
      break;
    }
    case Type::string:
      append_quoted(out, *v.if_string());
      break;
    case Type::bytes: {
      static const char* hex = "0123456789abcdef";
      out += "b\"";
      for (unsigned char c : v.if_bytes()->data) {
        out += hex[c >> 4];
        out += hex[c & 15];
      }
      out += '"';
      break;
    }
    case Type::array: {
      out += '[';
      bool first = true;
      for (const auto& e : *v.if_array()) {
        if (!first) out += ',';
        first = false;
        append(out, e);
      }
      out += ']';
      break;
    }
    case Type::hash: {
      out += '{';
      bool first = true;
      for (const auto& [k, e] : *v.if_hash()) {
        if (!first) out += ',';
        first = false;
        append_quoted(out, k);
        out += ':';
        append(out, e);
      }
      out += '}';
      break;
    }
    case Type::reference: {
      const Reference& r = *v.if_reference();
      out += r.type_name.empty() ? "REF" : r.type_name;
      out += '(';
      if (r.node) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "local:%p", static_cast<const void*>(r.node.get()));
        out += buf;
      } else {
        out += r.id.to_hex();
      }
      out += ')';
      append_path(out, r.path);
      break;
    }
  }
}
}  // namespace

std::string ObjectId::to_hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(server),
                static_cast<unsigned long long>(object));
  return buf;
}

ObjectId ObjectId::from_hex(std::string_view hex) {
  if (hex.size() != 32)
    throw Error(Errc::bad_config, "an object id is 32 hex digits, got '" + std::string(hex) + "'");
  uint64_t parts[2] = {0, 0};
  for (size_t i = 0; i < 32; ++i) {
    const char c = hex[i];
    unsigned d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      throw Error(Errc::bad_config, "not a hex digit in object id '" + std::string(hex) + "'");
    parts[i / 16] = (parts[i / 16] << 4) | d;
  }
  return ObjectId{parts[0], parts[1]};
}

bool Reference::operator==(const Reference& o) const {
  if (node || o.node) return node == o.node;
  return id == o.id && path == o.path;
}

const char* type_name(Type t) noexcept {
  switch (t) {
    case Type::null:
      return "null";
    case Type::boolean:
      return "bool";
    case Type::integer:
      return "integer";
    case Type::number:
      return "number";
    case Type::string:
      return "string";
    case Type::bytes:
      return "bytes";
    case Type::array:
      return "array";
    case Type::hash:
      return "hash";
    case Type::reference:
      return "reference";
  }
  return "?";
}

Value::Value(const Hash& h) : Value(Reference{h.node(), {}, {}, {}, "HASH", "HASH", {}, false}) {}
Value::Value(const Array& a)
    : Value(Reference{a.node(), {}, {}, {}, "ARRAY", "ARRAY", {}, false}) {}
Value::Value(const Scalar& s)
    : Value(Reference{s.node(), {}, {}, {}, "SCALAR", "SCALAR", {}, false}) {}

const ValueArray* Value::if_array() const noexcept {
  const auto* p = std::get_if<std::shared_ptr<ValueArray>>(&v_);
  return p ? p->get() : nullptr;
}
const ValueHash* Value::if_hash() const noexcept {
  const auto* p = std::get_if<std::shared_ptr<ValueHash>>(&v_);
  return p ? p->get() : nullptr;
}
const Reference* Value::if_reference() const noexcept {
  const auto* p = std::get_if<std::shared_ptr<const Reference>>(&v_);
  return p ? p->get() : nullptr;
}

size_t Value::size() const noexcept {
  switch (type()) {
    case Type::null:
      return 0;
    case Type::string:
      return if_string()->size();
    case Type::bytes:
      return if_bytes()->data.size();
    case Type::array:
      return if_array()->size();
    case Type::hash:
      return if_hash()->size();
    default:
      return 1;
  }
}

const Value& Value::at_index(int64_t index) const {
  const ValueArray* a = if_array();
  if (a == nullptr) {
    if (is_null()) return null_value();
    throw Error(Errc::type_mismatch, std::string("cannot index into ") + patro::type_name(type()));
  }
  const int64_t n = static_cast<int64_t>(a->size());
  if (index < 0) index += n;
  if (index < 0 || index >= n) return null_value();
  return (*a)[static_cast<size_t>(index)];
}

const Value& Value::at_key(std::string_view key) const {
  const ValueHash* h = if_hash();
  if (h == nullptr) {
    if (is_null()) return null_value();
    throw Error(Errc::type_mismatch, std::string("cannot look up key '") + std::string(key) +
                                         "' in " + patro::type_name(type()));
  }
  auto it = h->find(key);
  return it == h->end() ? null_value() : it->second;
}

void Value::push_back(Value v) {
  if (is_null()) v_ = std::make_shared<ValueArray>();
  auto* p = std::get_if<std::shared_ptr<ValueArray>>(&v_);
  if (p == nullptr) throw_mismatch("array");
  if (p->use_count() > 1) *p = std::make_shared<ValueArray>(**p);
  (*p)->push_back(std::move(v));
}

void Value::set(std::string key, Value v) {
  if (is_null()) v_ = std::make_shared<ValueHash>();
  auto* p = std::get_if<std::shared_ptr<ValueHash>>(&v_);
  if (p == nullptr) throw_mismatch("hash");
  if (p->use_count() > 1) *p = std::make_shared<ValueHash>(**p);
  (**p)[std::move(key)] = std::move(v);
}

std::string Value::to_string() const {
  std::string out;
  append(out, *this);
  return out;
}

void Value::throw_mismatch(const char* wanted) const {
  throw Error(Errc::type_mismatch, std::string("cannot convert ") + patro::type_name(type()) + " " +
                                       to_string().substr(0, 64) + " to " + wanted);
}

bool operator==(const Value& a, const Value& b) noexcept {
  // Numbers compare by value across integer and double, as Perl's == does.
  if (a.type() == Type::integer && b.type() == Type::number)
    return static_cast<double>(*a.if_int()) == *b.if_double();
  if (a.type() == Type::number && b.type() == Type::integer)
    return *a.if_double() == static_cast<double>(*b.if_int());
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Type::null:
      return true;
    case Type::boolean:
      return *a.if_bool() == *b.if_bool();
    case Type::integer:
      return *a.if_int() == *b.if_int();
    case Type::number:
      return *a.if_double() == *b.if_double();
    case Type::string:
      return *a.if_string() == *b.if_string();
    case Type::bytes:
      return *a.if_bytes() == *b.if_bytes();
    case Type::array:
      return *a.if_array() == *b.if_array();
    case Type::hash:
      return *a.if_hash() == *b.if_hash();
    case Type::reference:
      return *a.if_reference() == *b.if_reference();
  }
  return false;
}

namespace detail {

int64_t value_as_int64(const Value& v) {
  if (const int64_t* i = v.if_int()) return *i;
  if (const double* d = v.if_double()) {
    if (std::isfinite(*d) && std::trunc(*d) == *d && *d >= -9.2233720368547758e18 &&
        *d < 9.2233720368547758e18)
      return static_cast<int64_t>(*d);
    v.throw_mismatch("integer (it has a fraction or is out of range)");
  }
  if (const bool* b = v.if_bool()) return *b ? 1 : 0;
  v.throw_mismatch("integer");
}

void throw_out_of_range(const Value& v, const char* wanted) {
  throw Error(Errc::type_mismatch,
              "value " + v.to_string() + " is out of range for " + std::string(wanted));
}

bool ValueAs<bool>::get(const Value& v) {
  if (const bool* b = v.if_bool()) return *b;
  if (const int64_t* i = v.if_int()) return *i != 0;
  v.throw_mismatch("bool");
}

double ValueAs<double>::get(const Value& v) {
  if (const double* d = v.if_double()) return *d;
  if (const int64_t* i = v.if_int()) return static_cast<double>(*i);
  v.throw_mismatch("number");
}

std::string ValueAs<std::string>::get(const Value& v) {
  if (const std::string* s = v.if_string()) return *s;
  if (const Bytes* b = v.if_bytes()) return b->data;
  v.throw_mismatch("string");
}

Bytes ValueAs<Bytes>::get(const Value& v) {
  if (const Bytes* b = v.if_bytes()) return *b;
  if (const std::string* s = v.if_string()) return Bytes{*s};
  v.throw_mismatch("bytes");
}

ValueArray ValueAs<ValueArray>::get(const Value& v) {
  if (const ValueArray* a = v.if_array()) return *a;
  v.throw_mismatch("array");
}

ValueHash ValueAs<ValueHash>::get(const Value& v) {
  if (const ValueHash* h = v.if_hash()) return *h;
  v.throw_mismatch("hash");
}

Reference ValueAs<Reference>::get(const Value& v) {
  if (const Reference* r = v.if_reference()) return *r;
  v.throw_mismatch("reference");
}

}  // namespace detail
bool truthy(const Value& v) noexcept {
  switch (v.type()) {
    case Type::null:
      return false;
    case Type::boolean:
      return *v.if_bool();
    case Type::integer:
      return *v.if_int() != 0;
    case Type::number:
      return *v.if_double() != 0.0;
    case Type::string:
      return !v.if_string()->empty() && *v.if_string() != "0";
    case Type::bytes:
      return !v.if_bytes()->data.empty() && v.if_bytes()->data != "0";
    default:
      return true;
  }
}

}  // namespace patro
