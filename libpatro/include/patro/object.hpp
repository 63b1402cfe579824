// Served objects, callables and calling contexts: patro::Class registers a C++ class once (its
// methods, properties, operators and conversions), so that patronize(std::make_shared<T>(...))
// serves an instance; patro::Code is a served callable; patro::Registry holds factories and
// functions by name (Object::Remote's new::on and can::on).
//
// Arguments and results convert to and from patro::Value. A parameter may be:
//   patro::Context          the calling context (Perl's wantarray); takes no argument
//   patro::Args&            all the arguments, changeable (Perl's @_); changes go back to the
//   caller patro::Value&           one argument, changeable; a change goes back to the caller
//   patro::Value, const Value&, or any type Value::as<T>() converts to (int64_t, double,
//                           std::string, bool...): one argument, converted (a mismatch is an
//                           error naming the callee, the argument and both types)
//   std::shared_ptr<U>, U&  one argument that must be a served object of the registered class U
//                           (a proxy a client passes arrives as the server's own object)
// A result may be void, a Value or anything it is built from, a patro::List (its items in list
// context, its last item in scalar context), a std::shared_ptr<U> of a registered class (the
// client gets a proxy to it), a U by value (served as a new object), or a reference to the object
// the method was called on (the client's proxy keeps naming it).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "patro/export.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

/// The context a method or callable was called in, as Perl's wantarray: p.call() is scalar,
/// p.call_list() is list.
class Context {
 public:
  enum class Kind { scalar, list, none };
  constexpr Context() = default;
  constexpr explicit Context(Kind kind, bool swapped = false) : kind_(kind), swapped_(swapped) {}
  constexpr bool list() const noexcept { return kind_ == Kind::list; }
  constexpr bool scalar() const noexcept { return kind_ == Kind::scalar; }
  /// Void context: the caller ignores the result (wantarray is undef).
  constexpr bool is_void() const noexcept { return kind_ == Kind::none; }
  constexpr Kind kind() const noexcept { return kind_; }
  /// For operators: the proxy was the right-hand operand (Perl's third argument), as in 4 - p.
  constexpr bool swapped() const noexcept { return swapped_; }

 private:
  Kind kind_ = Kind::scalar;
  bool swapped_ = false;
};

/// A list result: in list context the caller gets the items, in scalar context the last one.
class List {
 public:
  List() = default;
  List(std::initializer_list<Value> items) : items(items) {}
  explicit List(ValueArray items) : items(std::move(items)) {}
  operator Value() const { return Value::list(items); }
  ValueArray items;
};

/// The arguments of a call (Perl's @_). Changing an element changes the caller's variable when the
/// caller passed it with std::ref.
class Args {
 public:
  Args(ValueArray& values, Context context, std::string_view callee)
      : values_(&values), context_(context), callee_(callee) {}
  size_t size() const noexcept { return values_->size(); }
  bool empty() const noexcept { return values_->empty(); }
  /// The argument at i; Error(invalid_argument) naming the callee if there are not that many.
  Value& operator[](size_t i) { return at(i); }
  const Value& operator[](size_t i) const { return const_cast<Args*>(this)->at(i); }
  ValueArray::iterator begin() noexcept { return values_->begin(); }
  ValueArray::iterator end() noexcept { return values_->end(); }
  Context context() const noexcept { return context_; }
  const std::string& callee() const noexcept { return callee_; }

 private:
  Value& at(size_t i);
  ValueArray* values_;
  Context context_;
  std::string callee_;
};

namespace detail {
struct DeferredState;
struct ReplyRoute;
}  // namespace detail

/// A reply that a method sends later (ZeroC Ice's asynchronous dispatch). A method or callable that
/// takes a patro::Deferred parameter answers through it — during the call, or afterwards from any
/// thread — and its own return value is ignored. No worker thread waits meanwhile, so a method can
/// block a caller (a queue's take, a commit to disk) without occupying the server. Copies share
/// the reply; the first resolve or reject wins. Takes no argument of the call.
class Deferred {
 public:
  explicit Deferred(std::shared_ptr<detail::DeferredState> state) : state_(std::move(state)) {}
  /// The call's result (a patro::List gives its items in list context, its last in scalar).
  void resolve(const Value& result) const;
  /// An error reply.
  void reject(const Error& error) const;
  /// An error reply for any exception (std::current_exception() in a catch block): a patro::Error
  /// keeps its code, anything else is remote_exception with its C++ type name.
  void reject(std::exception_ptr error) const;
  /// Whether resolve or reject was called.
  bool done() const;
  /// The calling connection (one per get_proxies), as the server's on_client_gone reports it.
  uint64_t client_id() const;
  /// When the caller stops waiting (its deadline, on this host's steady clock): an answer after it
  /// reaches nobody, so a call that waits for something (a blocking take) should give up by then.
  std::chrono::steady_clock::time_point deadline() const;
  Context context() const;

 private:
  std::shared_ptr<detail::DeferredState> state_;
};

namespace detail {

class Node;  // hidden: declared PATRO_PRIVATE first in value.hpp

/// One call being run on the server: its arguments (changes are written back to the caller), its
/// context, the callee's name for messages ("Foofie::blerp"), and the object it runs on.
struct Invocation {
  ValueArray& args;
  Context context;
  std::string callee;
  const void* self = nullptr;               // the C++ object a method runs on
  Value self_ref;                           // a reference to its served node
  const ReplyRoute* route = nullptr;        // how a late reply reaches the caller
  std::shared_ptr<DeferredState> deferred;  // made when a parameter takes a Deferred
};
/// The Deferred of a call (made once per call); Error(unsupported) where late replies are not
/// possible.
Deferred deferred_of(Invocation& inv);
using Invoker = std::function<Value(void* self, Invocation&)>;

/// What patro::Class registered for a class.
struct ClassInfo {
  struct Property {
    std::function<Value(const void*)> get;
    std::function<void(void*, const Value&)> set;  // empty: read-only
  };
  std::string name;
  std::map<std::string, Invoker, std::less<>> methods;
  /// The methods a client whose key is read-only may call (Class::read_only_method).
  std::set<std::string, std::less<>> read_only_methods;
  /// Operators by Perl's overload names ("+", "+=", "==", "neg", "!") and the conversions
  /// ("\"\"" to a string, "0+" to a number, "bool").
  std::map<std::string, Invoker, std::less<>> ops;
  std::map<std::string, Property, std::less<>> properties;
  /// The registered names of its bases (Perl's @ISA), for isa.
  std::vector<std::string> bases;
};

// The process-wide class registry (libpatro/src/objects/class_registry.cpp).
void register_class(const std::type_info& type, std::string name);
void change_class(const std::type_info& type, const std::function<void(ClassInfo&)>& change);
/// Whether symbol is an operator or conversion name that Class::op accepts.
bool known_operator(std::string_view symbol) noexcept;
/// The served object a Value refers to if it is a local object of the given class, else null.
std::shared_ptr<void> object_pointer(const Value& v, const std::type_info& type);
/// A served callable node and a reference to a node.
std::shared_ptr<Node> make_code_node(Invoker fn);
Value node_value(const std::shared_ptr<Node>& node);
[[noreturn]] void throw_arg_count(const Invocation& inv, size_t wanted, bool at_least);
[[noreturn]] void throw_arg_type(const Invocation& inv, size_t index, const char* wanted,
                                 const Error& cause);
[[noreturn]] void throw_not_object(const Invocation& inv, size_t index, const std::type_info& type);

template <class T>
struct is_shared_ptr : std::false_type {};
template <class T>
struct is_shared_ptr<std::shared_ptr<T>> : std::true_type {};

template <class T>
concept value_convertible = requires(const Value& v) {
  ValueAs<T>::get(v);
};

template <class T>
constexpr const char* wanted_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "a bool";
  else if constexpr (std::is_integral_v<T>)
    return "an integer";
  else if constexpr (std::is_floating_point_v<T>)
    return "a number";
  else if constexpr (std::is_same_v<T, std::string>)
    return "a string";
  else if constexpr (std::is_same_v<T, Bytes>)
    return "bytes";
  else if constexpr (std::is_same_v<T, ValueArray>)
    return "an array";
  else if constexpr (std::is_same_v<T, ValueHash>)
    return "a hash";
  else
    return "a reference";
}

/// How many arguments a parameter of type P takes: 0 for Context and Args&, else 1.
template <class P>
constexpr size_t takes() {
  using D = std::remove_cvref_t<P>;
  return std::is_same_v<D, Context> || std::is_same_v<D, Args> || std::is_same_v<D, Deferred> ? 0
                                                                                              : 1;
}

/// The value passed for a parameter of type P, from argument number index.
template <class P>
decltype(auto) param(Invocation& inv, Args& all, size_t index) {
  using D = std::remove_cvref_t<P>;
  if constexpr (std::is_same_v<D, Context>) {
    return inv.context;
  } else if constexpr (std::is_same_v<D, Deferred>) {
    return deferred_of(inv);
  } else if constexpr (std::is_same_v<D, Args>) {
    static_assert(std::is_lvalue_reference_v<P>, "take patro::Args by reference: patro::Args&");
    return (all);
  } else if constexpr (std::is_same_v<D, Value>) {
    return (inv.args[index]);
  } else if constexpr (is_shared_ptr<D>::value) {
    using U = typename D::element_type;
    auto p = object_pointer(inv.args[index], typeid(std::remove_const_t<U>));
    if (!p) throw_not_object(inv, index, typeid(std::remove_const_t<U>));
    return std::static_pointer_cast<U>(p);
  } else if constexpr (std::is_lvalue_reference_v<P> && std::is_class_v<D> &&
                       !value_convertible<D>) {
    auto p = object_pointer(inv.args[index], typeid(D));
    if (!p) throw_not_object(inv, index, typeid(D));
    return (*static_cast<D*>(p.get()));  // the node (held by the argument) keeps it alive
  } else {
    static_assert(value_convertible<D>,
                  "a parameter type must be Context, Args&, Value, a type Value::as<T>() converts "
                  "to, or a registered class (by reference or std::shared_ptr)");
    try {
      return inv.args[index].as<D>();
    } catch (const Error& e) {
      throw_arg_type(inv, index, wanted_name<D>(), e);
    }
  }
}

/// The Value a result becomes.
template <class R>
Value result_value(Invocation& inv, R&& r) {
  using D = std::remove_cvref_t<R>;
  if constexpr (std::is_same_v<D, List>) {
    return Value::list(r.items);
  } else if constexpr (std::is_constructible_v<Value, R>) {
    return Value(std::forward<R>(r));
  } else {
    static_assert(std::is_class_v<D>, "a result must convert to a Value or be a registered class");
    if constexpr (std::is_lvalue_reference_v<R>)
      if (static_cast<const void*>(&r) == inv.self) return inv.self_ref;
    return Value(std::make_shared<D>(std::forward<R>(r)));  // served as a new object
  }
}

template <class... P>
struct TypeList {};

template <class... P>
constexpr std::array<size_t, sizeof...(P) + 1> arg_indices() {
  std::array<size_t, sizeof...(P) + 1> at{};
  size_t next = 0;
  size_t i = 0;
  ((at[i++] = next, next += takes<P>()), ...);
  at[sizeof...(P)] = next;
  return at;
}

/// Checks the argument count, converts the arguments and calls f with them.
template <class R, class... P, class F, size_t... I>
Value invoke_with(F&& f, Invocation& inv, TypeList<P...>, std::index_sequence<I...>) {
  constexpr auto at = arg_indices<P...>();
  constexpr bool takes_all = (std::is_same_v<std::remove_cvref_t<P>, Args> || ...);
  constexpr size_t wanted = at[sizeof...(P)];
  if (takes_all ? inv.args.size() < wanted : inv.args.size() != wanted)
    throw_arg_count(inv, wanted, takes_all);
  Args all(inv.args, inv.context, inv.callee);
  if constexpr (std::is_void_v<R>) {
    f(param<P>(inv, all, at[I])...);
    return Value();
  } else {
    return result_value<R>(inv, f(param<P>(inv, all, at[I])...));
  }
}

// The signature of a callable.
template <class F>
struct signature : signature<decltype(&F::operator())> {};
template <class R, class... P>
struct signature<R (*)(P...)> {
  using result = R;
  using params = TypeList<P...>;
};
template <class R, class... P>
struct signature<R (*)(P...) noexcept> : signature<R (*)(P...)> {};
template <class C, class R, class... P>
struct signature<R (C::*)(P...)> : signature<R (*)(P...)> {};
template <class C, class R, class... P>
struct signature<R (C::*)(P...) const> : signature<R (*)(P...)> {};
template <class C, class R, class... P>
struct signature<R (C::*)(P...) noexcept> : signature<R (*)(P...)> {};
template <class C, class R, class... P>
struct signature<R (C::*)(P...) const noexcept> : signature<R (*)(P...)> {};

template <class L>
struct drop_first;
template <class First, class... Rest>
struct drop_first<TypeList<First, Rest...>> {
  using first = First;
  using rest = TypeList<Rest...>;
};

template <class... P>
constexpr auto index_sequence_for_list(TypeList<P...>) {
  return std::index_sequence_for<P...>{};
}

/// An invoker for a callable over Values (no object).
template <class F>
Invoker function_invoker(F fn) {
  using S = signature<std::decay_t<F>>;
  return [fn = std::move(fn)](void*, Invocation& inv) mutable -> Value {
    return invoke_with<typename S::result>(fn, inv, typename S::params{},
                                           index_sequence_for_list(typename S::params{}));
  };
}

/// An invoker for a method of T: a member function, or a callable whose first parameter is T&.
template <class T, class F>
Invoker method_invoker(F fn) {
  if constexpr (std::is_member_function_pointer_v<F>) {
    using S = signature<F>;
    return [fn](void* self, Invocation& inv) -> Value {
      T* obj = static_cast<T*>(self);
      auto call = [&](auto&&... a) -> decltype(auto) {
        return (obj->*fn)(std::forward<decltype(a)>(a)...);
      };
      return invoke_with<typename S::result>(call, inv, typename S::params{},
                                             index_sequence_for_list(typename S::params{}));
    };
  } else {
    using S = signature<std::decay_t<F>>;
    using Self = typename drop_first<typename S::params>::first;
    static_assert(std::is_same_v<std::remove_cvref_t<Self>, T> && std::is_lvalue_reference_v<Self>,
                  "a method's first parameter is the object: T& or const T&");
    using Rest = typename drop_first<typename S::params>::rest;
    // Not mutable: one class's invoker runs for many objects at once (each under its own lock).
    return [fn = std::move(fn)](void* self, Invocation& inv) -> Value {
      T& obj = *static_cast<T*>(self);
      auto call = [&](auto&&... a) -> decltype(auto) {
        return fn(obj, std::forward<decltype(a)>(a)...);
      };
      return invoke_with<typename S::result>(call, inv, Rest{}, index_sequence_for_list(Rest{}));
    };
  }
}

}  // namespace detail

/// Registers a C++ class for serving, once per process (typically at the start of main, before
/// patronize). Served as std::shared_ptr<T>: patronize(std::make_shared<T>(...)). Methods run with
/// the object's lock held, so a served object needs no locking of its own.
///
///   patro::Class<Barfie>("Barfie")
///       .method("prod", &Barfie::prod)
///       .op("+=", [](Barfie& b, int64_t n) { for (auto& v : b.vals) v += n; })
///       .property("vals", &Barfie::vals)
///       .to_string([](const Barfie& b) { return "Barfie(" + ... + ")"; });
///
/// Registering the same T again adds to what it has. Thread-safe.
template <class T>
class Class {
 public:
  explicit Class(std::string name) { detail::register_class(typeid(T), std::move(name)); }

  /// A method: a member function pointer, or a callable whose first parameter is T&.
  template <class F>
  Class& method(std::string name, F fn) {
    auto inv = detail::method_invoker<T>(std::move(fn));
    detail::change_class(
        typeid(T), [&](detail::ClassInfo& c) { c.methods[std::move(name)] = std::move(inv); });
    return *this;
  }

  /// A method that changes nothing a client can observe, so that a client whose key is
  /// read-only (an allow-list line with `read-only`, README "Security") may call it: registered
  /// as method() registers it, and marked read-only. A read-only key may call no other method.
  template <class F>
  Class& read_only_method(std::string name, F fn) {
    method(name, std::move(fn));
    detail::change_class(
        typeid(T), [&](detail::ClassInfo& c) { c.read_only_methods.insert(std::move(name)); });
    return *this;
  }

  /// An operator, by Perl's overload name: + - * / % ** and their compound forms (+= ...),
  /// == != < <= > >= <=>, "neg" (unary minus), "!", and the conversions "\"\"" (string),
  /// "0+" (number) and "bool". A binary operator's callable takes the object and the other
  /// operand (and may take a Context: ctx.swapped() says the object was the right operand).
  /// Throws Error(invalid_argument) for an unknown symbol.
  template <class F>
  Class& op(std::string symbol, F fn) {
    if (!detail::known_operator(symbol))
      throw Error(Errc::invalid_argument, "'" + symbol + "' is not an operator Patro serves");
    auto inv = detail::method_invoker<T>(std::move(fn));
    detail::change_class(typeid(T),
                         [&](detail::ClassInfo& c) { c.ops[std::move(symbol)] = std::move(inv); });
    return *this;
  }
  /// How the object converts to a string, a number and a bool (Perl's "", 0+ and bool).
  template <class F>
  Class& to_string(F fn) {
    return op("\"\"", std::move(fn));
  }
  template <class F>
  Class& to_number(F fn) {
    return op("0+", std::move(fn));
  }
  template <class F>
  Class& to_bool(F fn) {
    return op("bool", std::move(fn));
  }

  /// Names a base class by its registered name (Perl's push @ISA): patro::isa(p, name) is true
  /// for an object of this class, and through the base's own bases, however deep (a name not
  /// registered is a base with no bases of its own). Methods are not inherited: register them
  /// here.
  Class& base(std::string name) {
    if (name.empty()) throw Error(Errc::invalid_argument, "a base class needs a name");
    detail::change_class(typeid(T), [&](detail::ClassInfo& c) {
      if (std::find(c.bases.begin(), c.bases.end(), name) == c.bases.end())
        c.bases.push_back(std::move(name));
    });
    return *this;
  }

  /// A data member, read with p["name"].get() and written with p["name"] = v.
  template <class M>
  Class& property(std::string name, M T::*member) {
    detail::ClassInfo::Property prop;
    prop.get = [member](const void* self) { return Value(static_cast<const T*>(self)->*member); };
    if constexpr (!std::is_const_v<M>) {
      prop.set = [member](void* self, const Value& v) {
        static_cast<T*>(self)->*member = v.as<std::remove_cv_t<M>>();
      };
    }
    return add_property(std::move(name), std::move(prop));
  }
  /// A property with a getter (const T&) -> Value and an optional setter (T&, const Value&).
  template <class G>
  Class& property(std::string name, G get) {
    detail::ClassInfo::Property prop;
    prop.get = [get = std::move(get)](const void* self) {
      return Value(get(*static_cast<const T*>(self)));
    };
    return add_property(std::move(name), std::move(prop));
  }
  template <class G, class S>
  Class& property(std::string name, G get, S set) {
    detail::ClassInfo::Property prop;
    prop.get = [get = std::move(get)](const void* self) {
      return Value(get(*static_cast<const T*>(self)));
    };
    prop.set = [set = std::move(set)](void* self, const Value& v) {
      set(*static_cast<T*>(self), v);
    };
    return add_property(std::move(name), std::move(prop));
  }

 private:
  Class& add_property(std::string name, detail::ClassInfo::Property prop) {
    detail::change_class(
        typeid(T), [&](detail::ClassInfo& c) { c.properties[std::move(name)] = std::move(prop); });
    return *this;
  }
};

/// A served callable over Values (Perl's code reference): serve it alone or store it in a
/// container (a dispatch table); a client's p(args...) runs it on the server. It takes the
/// parameters listed at the top of this header, for example
///   patro::Code sq = [](patro::Args& a) -> patro::Value { ...; return 19; };
///   patro::Code add = [](int64_t a, int64_t b) { return a + b; };
/// Calls of one Code are serialized.
class Code {
 public:
  template <class F>
  requires(!std::is_same_v<std::decay_t<F>, Code> && (requires {
    &std::decay_t<F>::operator();
  } || std::is_function_v<std::remove_pointer_t<std::decay_t<F>>>)) Code(F fn)
      : node_(detail::make_code_node(detail::function_invoker(std::move(fn)))) {}
  /// A reference to the served callable.
  operator Value() const { return detail::node_value(node_); }
  const std::shared_ptr<detail::Node>& node() const noexcept { return node_; }

 private:
  std::shared_ptr<detail::Node> node_;
};

/// Factories and functions served by name, as Object::Remote's new::on and can::on: serve a
/// Registry, and a client makes objects with patro::make(p, "Counter", args...) (or
/// p.call("new_object", "Counter", args...)) and gets functions with patro::function(p, "name")
/// (or p.call("remote_sub", "name")), each as a proxy.
class Registry {
 public:
  Registry();
  /// A factory: a callable over Values (as for Code) that returns a std::shared_ptr of a
  /// registered class.
  template <class F>
  Registry& factory(std::string name, F make) {
    add(true, std::move(name), Code(std::move(make)));
    return *this;
  }
  Registry& function(std::string name, Code fn) {
    add(false, std::move(name), std::move(fn));
    return *this;
  }
  /// A reference to the served registry.
  operator Value() const;

  struct State;

 private:
  void add(bool factory, std::string name, Code fn);
  std::shared_ptr<State> state_;
};

namespace detail {
/// Runs f with the lock of the node serving object held (or just runs it if it is not served).
void run_locked(const void* object, const std::function<void()>& f);
}  // namespace detail

/// Runs f(object) with the served object's lock held, the lock its methods run under: the serving
/// program reads and changes its own served objects this way while clients may be calling them.
template <class T, class F>
decltype(auto) with_lock(const std::shared_ptr<T>& object, F&& f) {
  using R = std::invoke_result_t<F&, T&>;
  if constexpr (std::is_void_v<R>) {
    detail::run_locked(object.get(), [&] { f(*object); });
  } else {
    std::optional<R> result;
    detail::run_locked(object.get(), [&] { result.emplace(f(*object)); });
    return R(std::move(*result));
  }
}

/// The served object of class T that v refers to, or null (for code on the server: a Value
/// argument that a client passed a proxy for).
template <class T>
std::shared_ptr<T> object_cast(const Value& v) {
  return std::static_pointer_cast<T>(detail::object_pointer(v, typeid(T)));
}

}  // namespace patro
PATRO_PUBLIC_END
