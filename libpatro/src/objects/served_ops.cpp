#include "served_ops.hpp"

#include <cxxabi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <system_error>

#include "class_registry.hpp"
#include "code_node.hpp"
#include "filehandle_node.hpp"
#include "object_node.hpp"

namespace patro {

Value& Args::at(size_t i) {
  if (i >= values_->size())
    throw Error(Errc::invalid_argument,
                callee_ + " was called with " + std::to_string(values_->size()) +
                    " argument(s) and wants argument " + std::to_string(i + 1));
  return (*values_)[i];
}

namespace detail {

void throw_arg_count(const Invocation& inv, size_t wanted, bool at_least) {
  throw Error(Errc::invalid_argument, inv.callee + " takes " + (at_least ? "at least " : "") +
                                          std::to_string(wanted) + " argument" +
                                          (wanted == 1 ? "" : "s") + ", not " +
                                          std::to_string(inv.args.size()));
}

void throw_arg_type(const Invocation& inv, size_t index, const char* wanted, const Error& cause) {
  const Value& v = inv.args[index];
  std::string text = inv.callee + ": argument " + std::to_string(index + 1) + " must be " + wanted +
                     ", not " + type_name(v.type()) + " " + v.to_string().substr(0, 40);
  if (cause.code() != Errc::type_mismatch) text += std::string(" (") + cause.what() + ")";
  throw Error(Errc::type_mismatch, text);
}

void throw_not_object(const Invocation& inv, size_t index, const std::type_info& type) {
  auto c = ClassRegistry::instance().find(type);
  const Value& v = inv.args[index];
  std::string got = type_name(v.type());
  if (auto node = node_of(v)) got = "a " + node->type_name() + " object";
  throw Error(Errc::type_mismatch, inv.callee + ": argument " + std::to_string(index + 1) +
                                       " must be a " + (c ? c->name : std::string(type.name())) +
                                       " object, not " + got);
}

std::string perl_string(const Value& v) {
  switch (v.type()) {
    case Type::null:
      return "";
    case Type::boolean:
      return *v.if_bool() ? "1" : "";
    case Type::integer:
      return std::to_string(*v.if_int());
    case Type::number: {
      const double d = *v.if_double();
      if (std::isnan(d)) return "NaN";
      if (std::isinf(d)) return d > 0 ? "Inf" : "-Inf";
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.15g", d);
      return buf;
    }
    case Type::string:
      return *v.if_string();
    case Type::bytes:
      return v.if_bytes()->data;
    default:
      return v.to_string();
  }
}

namespace {

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(abi::__cxa_demangle(name, nullptr, nullptr, &status),
                                           std::free);
  return status == 0 && d ? std::string(d.get()) : std::string(name);
}

/// Runs served code; what it throws becomes a RemoteError with the exception's type (a
/// patro::Error keeps its code: an argument the code could not use, say).
template <class F>
Value guarded(const std::string& callee, F&& f) {
  try {
    return f();
  } catch (...) {
    throw_served_exception(callee);
  }
}

Context context_of(wire::CallContext c, bool swapped = false) {
  switch (c) {
    case wire::CallContext::List:
      return Context(Context::Kind::list, swapped);
    case wire::CallContext::Void:
      return Context(Context::Kind::none, swapped);
    default:
      return Context(Context::Kind::scalar, swapped);
  }
}

/// A result as the caller's context wants it: a List gives its items, or its last one.
ValueArray shaped(const Value& result, wire::CallContext context) {
  if (!result.is_list()) return {result};
  const ValueArray& items = *result.if_array();
  if (context == wire::CallContext::List) return items;
  return {items.empty() ? Value() : items.back()};
}

/// Runs an invoker with the node's lock held and records the arguments it changed.
Value run_invoker(Node& node, const Invoker& fn, void* self, Value self_ref, std::string callee,
                  ValueArray& args, Context ctx, ChangedArgs* changed, ServedCall* call = nullptr) {
  const ValueArray before = changed ? args : ValueArray();
  Invocation inv{
      args,   ctx, std::move(callee), self, std::move(self_ref), call ? call->route : nullptr,
      nullptr};
  Value result;
  {
    MutexLock lock(node.mu);
    result = guarded(inv.callee, [&] { return fn(self, inv); });
  }
  if (inv.deferred) {
    // The method took a Deferred: its answer is what it resolved (now), or comes later.
    DeferredState& d = *inv.deferred;
    MutexLock lock(d.mu);
    if (d.error) std::rethrow_exception(d.error);
    if (d.result) return *d.result;
    d.in_call = false;
    if (call) call->deferred = true;
    return Value();
  }
  if (changed) {
    for (size_t i = 0; i < args.size() && i < before.size(); ++i)
      if (!(args[i] == before[i])) changed->emplace_back(static_cast<uint32_t>(i), args[i]);
  }
  return result;
}

ValueArray call(const std::shared_ptr<Node>& target, ServedCall& c) {
  const std::string name(c.name);
  switch (target->kind) {
    case NodeKind::code: {
      if (!name.empty())
        throw Error(Errc::unknown_method,
                    "cannot call method \"" + name + "\" on a CODE reference, which has none");
      if (c.read_only) throw Error(Errc::not_authorized, "a CODE reference is never read-only");
      auto& code = node_cast<CodeNode>(*target);
      return shaped(run_invoker(code, code.fn, nullptr, Value(), "CODE", c.args,
                                context_of(c.context), &c.changed, &c),
                    c.context);
    }
    case NodeKind::object: {
      auto& obj = node_cast<ObjectNode>(*target);
      auto info = obj.info();
      if (name.empty())
        throw Error(Errc::not_callable,
                    "a " + info->name + " object is not callable (Not a CODE reference)");
      auto it = info->methods.find(name);
      if (it == info->methods.end()) {
        // Perl's words first (clients match them), then what the object serves instead.
        std::string methods;
        size_t listed = 0;
        for (const auto& m : info->methods) {
          if (listed++ == 24) {
            methods += ", ...";
            break;
          }
          methods += (methods.empty() ? "" : ", ") + m.first;
        }
        throw Error(Errc::unknown_method, "Can't locate object method \"" + name +
                                              "\" via package \"" + info->name +
                                              "\" (the object is a " + info->name + ", which " +
                                              (methods.empty() ? std::string("has no methods")
                                                               : "serves the methods " + methods) +
                                              ")");
      }
      if (c.read_only && info->read_only_methods.count(name) == 0)
        throw Error(Errc::not_authorized, "the class " + info->name + " did not mark " + name +
                                              " read-only (Class::read_only_method)");
      return shaped(
          run_invoker(obj, it->second, obj.object.get(), reference_to(target),
                      info->name + "::" + name, c.args, context_of(c.context), &c.changed, &c),
          c.context);
    }
    case NodeKind::file:
    case NodeKind::dir:
      if (!name.empty()) {  // $fh->print(...), as IO::Handle's methods
        if (c.read_only)
          throw Error(Errc::not_authorized, "a file handle's methods are never read-only");
        ServedCall f{wire::Op::File, c.name, c.args, c.context, c.options, c.deadline, c.changed};
        return file_operation(target, f);
      }
      break;
    default:
      break;
  }
  if (name.empty())
    throw Error(Errc::not_callable,
                std::string("the object is a ") + target->reftype() + ", which is not callable");
  throw Error(Errc::not_callable, "cannot call method \"" + name + "\" on a " + target->reftype() +
                                      ", which has no methods");
}

// --- Numbers, as Perl's operators see them ---

/// The number a value stands for; a string must look like a number.
Value number_of(const Value& v, const std::string& what) {
  switch (v.type()) {
    case Type::null:
      return Value(int64_t{0});
    case Type::boolean:
      return Value(int64_t{*v.if_bool() ? 1 : 0});
    case Type::integer:
    case Type::number:
      return v;
    case Type::string: {
      const std::string& s = *v.if_string();
      const char* b = s.c_str();
      char* end = nullptr;
      errno = 0;
      const long long i = std::strtoll(b, &end, 10);
      auto rest_blank = [&](const char* p) {
        while (*p == ' ' || *p == '\t' || *p == '\n') ++p;
        return *p == '\0';
      };
      if (end != b && errno == 0 && rest_blank(end)) return Value(static_cast<int64_t>(i));
      const double d = std::strtod(b, &end);
      if (end != b && rest_blank(end)) return Value(d);
      break;
    }
    default:
      break;
  }
  throw Error(Errc::type_mismatch, what + ": " + std::string(type_name(v.type())) + " " +
                                       v.to_string().substr(0, 40) + " is not a number");
}

double as_double(const Value& v) {
  return v.type() == Type::integer ? static_cast<double>(*v.if_int()) : *v.if_double();
}

Value compare(const std::string& op, double a, double b) {
  if (op == "<=>") {
    if (std::isnan(a) || std::isnan(b)) return Value();
    return Value(int64_t{a < b ? -1 : (a > b ? 1 : 0)});
  }
  if (op == "==") return Value(a == b);
  if (op == "!=") return Value(a != b);
  if (op == "<") return Value(a < b);
  if (op == "<=") return Value(a <= b);
  if (op == ">") return Value(a > b);
  if (op == ">=") return Value(a >= b);
  throw Error(Errc::unsupported, "no numeric operator '" + op + "'");
}

/// a op b with Perl's numeric semantics (integers stay integers where the result is exact).
Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  const bool ints = a.type() == Type::integer && b.type() == Type::integer;
  if (op == "+" || op == "-" || op == "*") {
    if (ints) {
      int64_t r;
      const int64_t x = *a.if_int(), y = *b.if_int();
      const bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                            : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                        : __builtin_mul_overflow(x, y, &r);
      if (!overflow) return Value(r);
    }
    const double x = as_double(a), y = as_double(b);
    return Value(op == "+" ? x + y : op == "-" ? x - y : x * y);
  }
  if (op == "/") {
    if (as_double(b) == 0) throw Error(Errc::invalid_argument, "Illegal division by zero");
    if (ints && *b.if_int() != -1 && *a.if_int() % *b.if_int() == 0)
      return Value(*a.if_int() / *b.if_int());
    return Value(as_double(a) / as_double(b));
  }
  if (op == "%") {
    const double xd = as_double(a), yd = as_double(b);
    if (!std::isfinite(xd) || !std::isfinite(yd) || std::fabs(xd) >= 9.2e18 ||
        std::fabs(yd) >= 9.2e18)
      throw Error(Errc::invalid_argument, "operands of % out of range");
    const int64_t x = static_cast<int64_t>(xd), y = static_cast<int64_t>(yd);
    if (y == 0) throw Error(Errc::invalid_argument, "Illegal modulus zero");
    if (y == -1) return Value(int64_t{0});
    int64_t r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) r += y;  // Perl: the sign of the right operand
    return Value(r);
  }
  if (op == "**") return Value(std::pow(as_double(a), as_double(b)));
  return compare(op, as_double(a), as_double(b));
}

bool is_compound(const std::string& op) {
  return op.size() >= 2 && op.back() == '=' && op != "==" && op != "!=" && op != "<=" && op != ">=";
}

/// Runs one of the class's operators or conversions on obj.
Value run_op(const std::shared_ptr<Node>& target, const ClassInfo& info, const std::string& sym,
             ValueArray args, bool swapped) {
  auto& obj = node_cast<ObjectNode>(*target);
  return run_invoker(obj, info.ops.at(sym), obj.object.get(), reference_to(target),
                     info.name + " operator " + sym, args, Context(Context::Kind::scalar, swapped),
                     nullptr);
}

Value string_of(const std::shared_ptr<Node>& target) {
  if (target->kind != NodeKind::object) return Value(std::string(target->reftype()));
  auto info = node_cast<ObjectNode>(*target).info();
  if (info->ops.count("\"\"")) return Value(perl_string(run_op(target, *info, "\"\"", {}, false)));
  return Value(info->name + "=OBJECT");
}

Value numeric_of(const std::shared_ptr<Node>& target) {
  if (target->kind == NodeKind::object) {
    auto info = node_cast<ObjectNode>(*target).info();
    if (info->ops.count("0+"))
      return number_of(run_op(target, *info, "0+", {}, false), info->name + "'s number");
    if (info->ops.count("\"\"")) return number_of(string_of(target), info->name + "'s string");
    throw Error(Errc::unsupported, "class " + info->name +
                                       " has no number conversion (register one with "
                                       ".to_number or .op(\"0+\", ...))");
  }
  throw Error(Errc::unsupported,
              std::string("a ") + target->reftype() + " reference has no number conversion");
}

bool bool_of(const std::shared_ptr<Node>& target) {
  if (target->kind != NodeKind::object) return true;  // a reference is true
  auto info = node_cast<ObjectNode>(*target).info();
  if (info->ops.count("bool")) return truthy(run_op(target, *info, "bool", {}, false));
  if (info->ops.count("\"\"")) return truthy(string_of(target));
  if (info->ops.count("0+")) return truthy(numeric_of(target));
  return true;
}

ValueArray convert(const std::shared_ptr<Node>& target, ServedCall& c) {
  if (c.name == "\"\"") return {string_of(target)};
  if (c.name == "0+") return {numeric_of(target)};
  if (c.name == "bool") return {Value(bool_of(target))};
  throw Error(Errc::unsupported,
              "unknown conversion '" + std::string(c.name) + "' (want \"\", 0+ or bool)");
}

ValueArray operate(const std::shared_ptr<Node>& target, ServedCall& c) {
  const std::string op(c.name);
  if (!known_operator(op) || op == "\"\"" || op == "0+" || op == "bool")
    throw Error(Errc::unsupported, "'" + op + "' is not an operator");
  const bool unary = op == "neg" || op == "!";
  if (!unary && c.args.empty())
    throw Error(Errc::invalid_argument, "operator '" + op + "' needs an operand");
  const bool swapped = c.args.size() >= 2 && truthy(c.args[1]);
  const Value other = unary ? Value() : c.args[0];
  const ValueArray operand = unary ? ValueArray{} : ValueArray{other};
  auto same_object = [&] { return node_of(other) == target; };

  if (target->kind == NodeKind::object) {
    auto info = node_cast<ObjectNode>(*target).info();
    if (info->ops.count(op)) {
      Value r = run_op(target, *info, op, operand, swapped);
      // A compound assignment answers null when the object changed in place (the proxy keeps
      // naming it), or the new object it became.
      if (is_compound(op) && (!r.is_reference() || node_of(r) == target)) return {Value()};
      return {r};
    }
    if (is_compound(op)) {
      const std::string base = op.substr(0, op.size() - 1);
      if (!info->ops.count(base))
        throw Error(Errc::unsupported,
                    "class " + info->name + " has no operator '" + op + "' (nor '" + base + "')");
      Value r = run_op(target, *info, base, operand, swapped);
      if (!r.is_reference())
        throw Error(Errc::unsupported, "class " + info->name + " has no operator '" + op +
                                           "', and its '" + base + "' gives " +
                                           type_name(r.type()) + ", which a proxy cannot become");
      return {r};
    }
    // Perl's fallback: through the conversions.
    if (op == "!") return {Value(!bool_of(target))};
    if (op == "eq" || op == "ne" || op == "cmp") {
      std::string a = perl_string(string_of(target));
      std::string b = node_of(other) ? perl_string(string_of(node_of(other))) : perl_string(other);
      if (swapped) std::swap(a, b);
      if (op == "eq") return {Value(a == b)};
      if (op == "ne") return {Value(a != b)};
      return {Value(int64_t{a < b ? -1 : (a > b ? 1 : 0)})};
    }
    const bool numeric = info->ops.count("0+") || info->ops.count("\"\"");
    if (!numeric && (op == "==" || op == "!=")) return {Value(same_object() == (op == "=="))};
    if (!numeric)
      throw Error(Errc::unsupported, "class " + info->name + " has no operator '" + op +
                                         "' and no number conversion to fall back on");
    Value a = numeric_of(target);
    if (op == "neg") return {arithmetic("-", Value(int64_t{0}), a)};
    Value b = node_of(other) ? numeric_of(node_of(other)) : number_of(other, "operand of " + op);
    if (swapped) std::swap(a, b);
    return {arithmetic(op, a, b)};
  }
  if (op == "==" || op == "!=") return {Value(same_object() == (op == "=="))};
  if (op == "!") return {Value(false)};
  throw Error(Errc::unsupported,
              std::string("a ") + target->reftype() + " has no operator '" + op + "'");
}

}  // namespace

RemoteError served_error(std::exception_ptr e, const std::string& callee) {
  try {
    std::rethrow_exception(std::move(e));
  } catch (const RemoteError& re) {
    return re;
  } catch (const Error& err) {
    // No type: a plain Error. Its text without the code's name, which the constructor adds again.
    std::string text = err.what();
    const std::string prefix = std::string(errc_name(err.code())) + ": ";
    if (text.rfind(prefix, 0) == 0) text.erase(0, prefix.size());
    return RemoteError(err.code(), text, std::string());
  } catch (const std::system_error& se) {
    const auto& cat = se.code().category();
    const bool is_errno = cat == std::generic_category() || cat == std::system_category();
    return RemoteError(Errc::remote_exception,
                       std::string(se.what()) + " (thrown by " + callee + ")",
                       demangle(typeid(se).name()), is_errno ? se.code().value() : 0);
  } catch (const std::exception& ex) {
    return RemoteError(Errc::remote_exception,
                       std::string(ex.what()) + " (thrown by " + callee + ")",
                       demangle(typeid(ex).name()));
  } catch (...) {
    // Not a std::exception (a thrown int, say): the ABI still knows its type.
    const std::type_info* t = abi::__cxa_current_exception_type();
    const std::string type = t ? demangle(t->name()) : std::string("unknown");
    return RemoteError(Errc::remote_exception,
                       callee + " threw " + type + ", which is not a std::exception", type);
  }
}

void throw_served_exception(const std::string& callee) {
  try {
    throw;
  } catch (const Error&) {
    throw;  // keeps its code (and a RemoteError its type)
  } catch (...) {
    throw served_error(std::current_exception(), callee);
  }
}

ValueArray run_served(const std::shared_ptr<Node>& target, ServedCall& c) {
  switch (c.op) {
    case wire::Op::Call:
      return call(target, c);
    case wire::Op::Can: {
      if (target->kind != NodeKind::object) return {Value(false)};
      auto info = node_cast<ObjectNode>(*target).info();
      return {Value(info->methods.count(c.name) > 0)};
    }
    case wire::Op::Isa: {
      // Its own class, or one of the bases that its registration named (Class::base), deep.
      if (target->kind != NodeKind::object) return {Value(false)};
      return {
          Value(ClassRegistry::instance().derives(*node_cast<ObjectNode>(*target).info(), c.name))};
    }
    case wire::Op::Operator:
      return operate(target, c);
    case wire::Op::Convert:
      return convert(target, c);
    case wire::Op::File:
      return file_operation(target, c);
    default:
      throw Error(Errc::unsupported, "not an operation on served objects");
  }
}

}  // namespace detail
}  // namespace patro
