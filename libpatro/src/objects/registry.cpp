// patro::Registry: factories and functions by name, served as an object of the built-in class
// "Patro::Registry" whose methods are Object::Remote's ways in.
#include <map>
#include <mutex>

#include "code_node.hpp"
#include "mutex.hpp"
#include "patro/object.hpp"

namespace patro {

struct Registry::State {
  detail::Mutex mu;
  std::map<std::string, Code, std::less<>> factories PATRO_GUARDED_BY(mu);
  std::map<std::string, Code, std::less<>> functions PATRO_GUARDED_BY(mu);

  std::optional<Code> find(bool factory, std::string_view name) PATRO_EXCLUDES(mu) {
    detail::MutexLock lock(mu);
    auto& table = factory ? factories : functions;
    auto it = table.find(name);
    if (it == table.end()) return std::nullopt;
    return it->second;
  }
};

namespace {

Value new_object(Registry::State& s, Args& a) {
  if (a.empty() || a[0].type() != Type::string)
    throw Error(Errc::invalid_argument,
                "new_object wants a class name (a string) and the constructor's arguments");
  const std::string name = *a[0].if_string();
  auto factory = s.find(true, name);
  if (!factory) throw Error(Errc::not_found, "no factory is registered as '" + name + "'");
  ValueArray rest(a.begin() + 1, a.end());
  auto& node = detail::node_cast<detail::CodeNode>(*factory->node());
  detail::Invocation inv{rest, a.context(), "factory " + name, nullptr, Value(), nullptr, {}};
  Value made;
  {
    detail::MutexLock lock(node.mu);
    made = node.fn(nullptr, inv);
  }
  if (!made.is_reference())
    throw Error(Errc::type_mismatch,
                "the factory '" + name + "' made " + type_name(made.type()) + ", not an object");
  return made;
}

void register_registry_class() {
  static std::once_flag once;
  std::call_once(once, [] {
    Class<Registry::State>("Patro::Registry")
        .method("new_object", &new_object)
        .method("remote_object", &new_object)
        .method("remote_sub",
                [](Registry::State& s, const std::string& name) -> Value {
                  auto fn = s.find(false, name);
                  if (!fn)
                    throw Error(Errc::not_found, "no function is registered as '" + name + "'");
                  return Value(*fn);
                })
        .method("has_factory",
                [](Registry::State& s, const std::string& name) {
                  return s.find(true, name).has_value();
                })
        .method("has_function", [](Registry::State& s, const std::string& name) {
          return s.find(false, name).has_value();
        });
  });
}

}  // namespace

Registry::Registry() : state_(std::make_shared<State>()) {
  register_registry_class();
}

void Registry::add(bool factory, std::string name, Code fn) {
  detail::MutexLock lock(state_->mu);
  (factory ? state_->factories : state_->functions)
      .insert_or_assign(std::move(name), std::move(fn));
}

Registry::operator Value() const {
  return Value(state_);
}

}  // namespace patro
