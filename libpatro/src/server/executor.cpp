#include "executor.hpp"

#include "assert.hpp"
#include "log.hpp"
#include "object_node.hpp"
#include "outbox.hpp"
#include "rights.hpp"

namespace patro::detail {

using Clock = std::chrono::steady_clock;

namespace {

// The downcasts here stay static_cast, each after a check of the node's kind: the thread-safety
// analysis follows a guarded member through a cast (static_cast<HashNode&>(*n).items is guarded
// by n->mu) but not through a function such as node_cast.

/// Tells the thread-safety analysis that mu is held. For a node seen through a reference to its
/// concrete type (a HashNode& bound from the Node whose lock the caller holds): the same mutex,
/// which clang cannot follow through the reference.
void held(const Mutex& mu) PATRO_TSA(assert_capability(mu)) {
  (void)mu;
}

std::string elem_text(const PathElem& e) {
  if (const auto* k = std::get_if<std::string>(&e)) return "key '" + *k + "'";
  return "index " + std::to_string(std::get<int64_t>(e));
}

std::string where(const Path& path, size_t n) {
  Path prefix(path.begin(), path.begin() + static_cast<std::ptrdiff_t>(n));
  return prefix.empty() ? std::string("the object") : "the element at " + path_to_string(prefix);
}

/// The element of a container (null when missing). Errc::type_mismatch where Perl would die with
/// "Not a HASH/ARRAY reference".
Value element(Node& n, const PathElem& e, const Path& path, size_t depth) {
  MutexLock lock(n.mu);
  if (n.kind == NodeKind::hash) {
    const auto* k = std::get_if<std::string>(&e);
    if (!k)
      throw Error(Errc::type_mismatch, "cannot use " + elem_text(e) + " on " + where(path, depth) +
                                           ", which is a HASH; use a string key");
    auto& h = static_cast<HashNode&>(n);
    held(h.mu);
    auto it = h.items.find(*k);
    return it == h.items.end() ? Value() : it->second;
  }
  if (n.kind == NodeKind::array) {
    const auto* i = std::get_if<int64_t>(&e);
    if (!i)
      throw Error(Errc::type_mismatch, "cannot use " + elem_text(e) + " on " + where(path, depth) +
                                           ", which is an ARRAY; use an index");
    return array_get(static_cast<ArrayNode&>(n), *i);
  }
  if (n.kind == NodeKind::object) return object_property(static_cast<ObjectNode&>(n), e);
  throw Error(Errc::type_mismatch, "cannot use " + elem_text(e) + " on " + where(path, depth) +
                                       ", which is a " + n.reftype());
}

[[noreturn]] void not_a_container(const Value& v, const Path& path, size_t depth) {
  throw Error(Errc::type_mismatch, "cannot index into " + where(path, depth) + ", which is " +
                                       type_name(v.type()) + " " + v.to_string().substr(0, 40));
}

/// The node at path[0, n), or null if something on the way is missing. No autovivification.
std::shared_ptr<Node> node_at(std::shared_ptr<Node> cur, const Path& path, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    Value v = element(*cur, path[i], path, i);
    if (v.is_null()) return nullptr;
    auto next = node_of(v);
    if (!next) not_a_container(v, path, i + 1);
    cur = std::move(next);
  }
  return cur;
}

/// What a path names, as Get reads it: a reference to the object itself for an empty path, else
/// the element there (null when something on the way is missing). No autovivification.
Value value_at(const std::shared_ptr<Node>& root, const Path& path) {
  if (path.empty()) return reference_to(root);
  auto parent = node_at(root, path, path.size() - 1);
  return parent ? element(*parent, path.back(), path, path.size() - 1) : Value();
}

std::shared_ptr<Node> new_container_for(const PathElem& next) {
  if (std::holds_alternative<int64_t>(next)) return std::make_shared<ArrayNode>();
  return std::make_shared<HashNode>();
}

/// The node at path[0, n), creating containers on the way as Perl's autovivification does: a
/// hash where the next step is a key, an array where it is an index. `last` says what to create
/// at the end when the path itself is missing.
std::shared_ptr<Node> vivify(std::shared_ptr<Node> cur, const Path& path, size_t n,
                             const PathElem* last, const Limits& limits) {
  for (size_t i = 0; i < n; ++i) {
    const PathElem& e = path[i];
    const PathElem* next = i + 1 < n ? &path[i + 1] : last;
    MutexLock lock(cur->mu);
    Value* slot = nullptr;
    Value tmp;
    if (cur->kind == NodeKind::hash) {
      const auto* k = std::get_if<std::string>(&e);
      if (!k)
        throw Error(Errc::type_mismatch, "cannot use " + elem_text(e) + " on " + where(path, i) +
                                             ", which is a HASH; use a string key");
      slot = &static_cast<HashNode&>(*cur).items[*k];
    } else if (cur->kind == NodeKind::array) {
      const auto* idx = std::get_if<int64_t>(&e);
      if (!idx)
        throw Error(Errc::type_mismatch, "cannot use " + elem_text(e) + " on " + where(path, i) +
                                             ", which is an ARRAY; use an index");
      auto& a = static_cast<ArrayNode&>(*cur);
      held(a.mu);
      tmp = array_get(a, *idx);
      if (tmp.is_null()) {
        if (next == nullptr) return nullptr;
        auto made = new_container_for(*next);
        array_set(a, *idx, reference_to(made), limits);
        cur = std::move(made);
        continue;
      }
      slot = &tmp;
    } else {
      throw Error(Errc::type_mismatch,
                  "cannot use " + elem_text(e) + " on " + where(path, i) + ", which is a SCALAR");
    }
    if (slot->is_null()) {
      if (next == nullptr) return nullptr;
      auto made = new_container_for(*next);
      *slot = reference_to(made);
      cur = std::move(made);
      continue;
    }
    auto child = node_of(*slot);
    if (!child) not_a_container(*slot, path, i + 1);
    cur = std::move(child);
  }
  return cur;
}

ArrayNode& want_array(Node& n, const Path& path, const char* op) {
  if (n.kind != NodeKind::array)
    throw Error(Errc::type_mismatch, std::string("cannot ") + op + " " + where(path, path.size()) +
                                         ", which is a " + n.reftype() + ", not an ARRAY");
  return static_cast<ArrayNode&>(n);
}

int64_t int_arg(const ValueArray& args, size_t i, const char* op, const char* what) {
  if (i >= args.size()) throw Error(Errc::invalid_argument, std::string(op) + " needs " + what);
  if (args[i].type() != Type::integer)
    throw Error(Errc::type_mismatch, std::string(op) + ": " + what + " must be an integer, not " +
                                         type_name(args[i].type()));
  return *args[i].if_int();
}

const Value& arg(const ValueArray& args, size_t i, const char* op) {
  if (i >= args.size())
    throw Error(Errc::invalid_argument,
                std::string(op) + " needs " + std::to_string(i + 1) + " argument(s)");
  return args[i];
}

std::optional<int64_t> timeout_arg(const ValueArray& args) {
  if (args.empty() || args[0].is_null()) return std::nullopt;
  return args[0].as<int64_t>();
}

// The bound on a wait with no timeout (ClientOptions::max_lock_wait), the last argument; a
// request without one is bounded by ServerOptions::max_lock_wait.
int64_t bound_arg(const ValueArray& args, size_t index, std::chrono::milliseconds fallback) {
  if (args.size() <= index || args[index].is_null()) return fallback.count();
  return std::max<int64_t>(args[index].as<int64_t>(), 0);
}

int64_t count_arg(const ValueArray& args) {
  return args.empty() ? 1 : args[0].as<int64_t>();
}

}  // namespace

zmq::message_t exception_reply(uint64_t request_id) {
  try {
    throw;
  } catch (const RemoteError& e) {
    return error_reply(request_id, e.code(), e.what(), e.type(), e.error_number());
  } catch (const Error& e) {
    return error_reply(request_id, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    return error_reply(request_id, Errc::overloaded, "out of memory running the request");
  } catch (const std::exception& e) {
    // Our own code failed (zmq::error_t, boost::interprocess, a library): a bug, not the caller's.
    PATRO_LOG(error, "server") << "internal error: " << e.what();
    return error_reply(request_id, Errc::internal, e.what());
  } catch (...) {
    PATRO_LOG(error, "server") << "internal error: something not a std::exception was thrown";
    return error_reply(request_id, Errc::internal, "something not a std::exception was thrown");
  }
}

std::string exception_text() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return "overloaded: out of memory running the request";
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "internal: something not a std::exception was thrown";
  }
}

Value Executor::resolve_ref(const wire::Ref& ref) {
  const ObjectId id{ref.server(), ref.object()};
  if (id.server != objects_.server_id()) {
    // An object of another server (a client's callback object): a reference that clients can
    // follow and that served code can call.
    std::string type_name = ref.type_name() ? ref.type_name()->str() : std::string();
    std::string reftype = ref.reftype() ? ref.reftype()->str() : std::string();
    if (remote_refs_ != nullptr) return remote_refs_->make(id, type_name, reftype, ref.pass());
    return Value(
        Reference{nullptr, nullptr, id, {}, std::move(type_name), std::move(reftype), {}, false});
  }
  // A key limited to some names passes no reference to an object it could not use itself (it
  // would get it back as one it holds).
  if (rights_ != nullptr && rights_table_ != nullptr &&
      !rights_table_->reaches(*rights_, rights_client_, id.object))
    throw Error(Errc::not_authorized, "an argument names " + rights_table_->name_of(id.object) +
                                          ", which this client's key (" +
                                          key_fingerprint(rights_->key) + ") may not reach");
  auto node = objects_.find(id);
  if (!node)
    throw Error(Errc::unknown_object,
                "an argument names object " + id.to_hex() + ", which this server does not have");
  const Path path = decode_path(ref.path());
  // A proxy to an element stands for what is stored there, as $h->{x} does in Perl.
  return value_at(node, path);
}

flatbuffers::Offset<wire::Ref> Executor::write_ref(flatbuffers::FlatBufferBuilder& fb,
                                                   const Reference& r, uint64_t client) {
  ObjectId id =
      r.node ? objects_.export_to(r.node, client, rights_ != nullptr && !rights_->names.empty())
             : r.id;
  const std::string type_name = r.node ? r.node->type_name() : r.type_name;
  const std::string reftype = r.node ? r.node->reftype() : r.reftype;
  return wire::CreateRefDirect(fb, id.server, id.object, type_name.c_str(), reftype.c_str());
}

Dispatched Executor::execute(const wire::Request& req, std::string_view routing,
                             std::chrono::steady_clock::time_point deadline, zmq::message_t& reply,
                             std::vector<DeferredReply>& owed) {
  ValueArray results;
  changed_.clear();
  deferred_ = parked_ = false;
  owed_ = &owed;
  route_ = ReplyRoute{sink_, routing, req.request_id(), req.client_id(), req.context(), deadline};
  try {
    results = run(req);
  } catch (...) {
    // The barrier: served code (a property getter on a lock's path, too) or ours. A grant a lock
    // operation owed before it failed still goes out, in owed.
    reply = exception_reply(req.request_id());
    return Dispatched::reply;
  }
  if (deferred_) return Dispatched::deferred;
  // Parked: its reply comes with a grant or at its deadline.
  if (parked_) return Dispatched::parked;
  reply = results_reply(req.client_id(), req.request_id(), results, &changed_);
  return Dispatched::reply;
}

zmq::message_t Executor::results_reply(uint64_t client, uint64_t request_id,
                                       const ValueArray& results, const ChangedArgs* changed_args) {
  fb_.Clear();
  const RefWriter refs = [this, client](flatbuffers::FlatBufferBuilder& fb, const Reference& r) {
    return write_ref(fb, r, client);
  };
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::Value>>> rs;
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<wire::ChangedArg>>> changed;
  try {
    rs = encode_values(fb_, results, refs);
    if (changed_args != nullptr && !changed_args->empty()) {
      std::vector<flatbuffers::Offset<wire::ChangedArg>> cs;
      for (const auto& [index, value] : *changed_args)
        cs.push_back(wire::CreateChangedArg(fb_, index, encode_value(fb_, value, refs)));
      changed = fb_.CreateVector(cs);
    }
  } catch (const std::exception& e) {
    return error_reply(request_id, Errc::internal, e.what());
  }
  wire::ReplyBuilder b(fb_);
  b.add_request_id(request_id);
  b.add_status(wire::Status::Ok);
  b.add_results(rs);
  if (!changed.IsNull()) b.add_changed_args(changed);
  fb_.Finish(b.Finish(), wire::ReplyIdentifier());
  if (fb_.GetSize() > limits_.max_message_size)
    return error_reply(request_id, Errc::message_too_large,
                       "the reply of " + std::to_string(fb_.GetSize()) +
                           " bytes is over the limit of " +
                           std::to_string(limits_.max_message_size));
  return body_frame(fb_);
}

std::optional<std::string> Executor::execute_oneway(
    const wire::Request& req, std::chrono::steady_clock::time_point deadline) {
  changed_.clear();
  deferred_ = parked_ = false;
  // A oneway call has nobody to answer: a method that takes a Deferred may resolve it, and the
  // answer goes nowhere (no sink).
  route_ = ReplyRoute{{}, {}, req.request_id(), req.client_id(), wire::CallContext::Void, deadline};
  owed_ = nullptr;  // no lock operation travels oneway
  try {
    run(req);
    return std::nullopt;
  } catch (...) {
    return exception_text();
  }
}

uint64_t Executor::lock_object(const wire::Request& req) {
  const ObjectId id = target_of(req);
  std::shared_ptr<Node> root = objects_.find(id);
  if (!root) throw Error(Errc::unknown_object, "no object " + id.to_hex() + " on this server");
  const Path path = decode_path(req.path());
  if (path.empty()) return id.object;
  const Value v = value_at(root, path);
  auto node = node_of(v);
  if (!node)
    throw Error(Errc::type_mismatch, "cannot lock " + where(path, path.size()) + ", which is " +
                                         type_name(v.type()) + ", not an object");
  return objects_.pin(node).object;  // a lock's object keeps its id: never collected
}

ValueArray Executor::run(const wire::Request& req) {
  const ObjectId id = target_of(req);
  const wire::Op op = req.op();
  const Handler handler = kHandlerByOp[static_cast<uint8_t>(op)];
  // The op table's group says what the operands are; the handler table, which handler runs.
  switch (op_info(op).handler) {
    case OpHandler::life: {
      // Before the lookup: a release may come after its object was freed.
      const Path none;
      ValueArray no_args;
      OpCall c{req, op, nullptr, none, no_args};
      return (this->*handler)(c);
    }
    case OpHandler::lock: {
      const RefReader no_refs = [](const wire::Ref&) -> Value {
        throw Error(Errc::type_mismatch, "a lock operation takes no references");
      };
      ValueArray args = decode_values(req.args(), no_refs);
      const Path none;
      OpCall c{req, op, nullptr, none, args, lock_object(req)};
      return (this->*handler)(c);
    }
    case OpHandler::element:
    case OpHandler::container:
    case OpHandler::served:
    case OpHandler::unknown:
      break;
  }
  // The arguments first: a callback reference among them is released (its pass) when they go,
  // also when the call is refused below.
  const RefReader refs = [this](const wire::Ref& r) { return resolve_ref(r); };
  ValueArray args = decode_values(req.args(), refs);
  std::shared_ptr<Node> root = objects_.find(id);
  if (!root) throw Error(Errc::unknown_object, "no object " + id.to_hex() + " on this server");
  if (req.fence_token() != 0 && locks_ != nullptr && op_info(op).mutating) {
    // Kleppmann's fencing: a holder whose grant is older than the newest is refused.
    const uint64_t newest = locks_->token(id.object);
    if (newest > req.fence_token())
      throw Error(Errc::fenced, "the call's fencing token " + std::to_string(req.fence_token()) +
                                    " is older than the newest lock grant " +
                                    std::to_string(newest));
  }
  const Path path = decode_path(req.path());
  if (handler == nullptr)
    throw Error(Errc::unsupported, "unknown operation " + std::to_string(static_cast<int>(op)));
  OpCall c{req, op, root, path, args};
  return (this->*handler)(c);
}

ValueArray Executor::get(OpCall& c) {
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  const size_t n = path.size();
  if (n == 0 && root->kind == NodeKind::scalar) {
    MutexLock lock(root->mu);
    return {static_cast<ScalarNode&>(*root).value};
  }
  return {value_at(root, path)};
}

ValueArray Executor::set(OpCall& c) {
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  ValueArray& args = c.args;
  const size_t n = path.size();
  const Value& v = arg(args, 0, "set");
  if (n == 0) {
    MutexLock lock(root->mu);
    switch (root->kind) {
      case NodeKind::scalar:
        static_cast<ScalarNode&>(*root).value = stored_form(v);
        break;
      case NodeKind::hash: {
        if (!v.if_hash()) v.throw_mismatch("hash (to replace a HASH's contents)");
        ValueHash fresh;
        for (const auto& [k, e] : *v.if_hash()) fresh.emplace(k, stored_form(e));
        static_cast<HashNode&>(*root).items = std::move(fresh);
        break;
      }
      case NodeKind::array: {
        if (!v.if_array()) v.throw_mismatch("array (to replace an ARRAY's contents)");
        std::deque<Value> fresh;
        for (const auto& e : *v.if_array()) fresh.push_back(stored_form(e));
        static_cast<ArrayNode&>(*root).items = std::move(fresh);
        break;
      }
      default:
        throw Error(Errc::type_mismatch,
                    std::string("cannot replace a served ") + root->type_name() +
                        " (set one of its properties, or an element of a container)");
    }
    return {};
  }
  auto parent = vivify(root, path, n - 1, &path.back(), limits_);
  Value stored = stored_form(v);
  MutexLock lock(parent->mu);
  if (parent->kind == NodeKind::hash) {
    const auto* k = std::get_if<std::string>(&path.back());
    if (!k)
      throw Error(Errc::type_mismatch, "cannot use " + elem_text(path.back()) + " on " +
                                           where(path, n - 1) +
                                           ", which is a HASH; use a string key");
    static_cast<HashNode&>(*parent).items.insert_or_assign(*k, std::move(stored));
  } else if (parent->kind == NodeKind::array) {
    const auto* i = std::get_if<int64_t>(&path.back());
    if (!i)
      throw Error(Errc::type_mismatch, "cannot use " + elem_text(path.back()) + " on " +
                                           where(path, n - 1) +
                                           ", which is an ARRAY; use an index");
    array_set(static_cast<ArrayNode&>(*parent), *i, std::move(stored), limits_);
  } else if (parent->kind == NodeKind::object) {
    set_object_property(static_cast<ObjectNode&>(*parent), path.back(), v);
  } else {
    throw Error(Errc::type_mismatch,
                "cannot index into " + where(path, n - 1) + ", which is a SCALAR");
  }
  return {};
}

ValueArray Executor::add(OpCall& c) {
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  ValueArray& args = c.args;
  const size_t n = path.size();
  const Value& delta = arg(args, 0, "add");
  if (n == 0) {
    if (root->kind != NodeKind::scalar)
      throw Error(Errc::type_mismatch,
                  std::string("cannot add to the object, which is a ") + root->reftype());
    MutexLock lock(root->mu);
    auto& s = static_cast<ScalarNode&>(*root);
    held(s.mu);
    s.value = numeric_add(s.value, delta);
    return {s.value};
  }
  auto parent = vivify(root, path, n - 1, &path.back(), limits_);
  MutexLock lock(parent->mu);
  if (parent->kind == NodeKind::hash) {
    const auto* k = std::get_if<std::string>(&path.back());
    if (!k) throw Error(Errc::type_mismatch, "a HASH needs a string key");
    Value& slot = static_cast<HashNode&>(*parent).items[*k];
    slot = numeric_add(slot, delta);
    return {slot};
  }
  if (parent->kind == NodeKind::array) {
    const auto* i = std::get_if<int64_t>(&path.back());
    if (!i) throw Error(Errc::type_mismatch, "an ARRAY needs an index");
    auto& a = static_cast<ArrayNode&>(*parent);
    held(a.mu);
    Value sum = numeric_add(array_get(a, *i), delta);
    array_set(a, *i, sum, limits_);
    return {sum};
  }
  throw Error(Errc::type_mismatch, "cannot index into a SCALAR");
}

ValueArray Executor::erase_or_exists(OpCall& c) {
  const wire::Op op = c.op;
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  const size_t n = path.size();
  const bool erase = op == wire::Op::Erase;
  if (n == 0)
    throw Error(Errc::invalid_argument,
                std::string(erase ? "erase" : "exists") + " needs an element: a key or an index");
  auto parent = node_at(root, path, n - 1);
  if (!parent) return {erase ? Value() : Value(false)};
  MutexLock lock(parent->mu);
  if (parent->kind == NodeKind::hash) {
    const auto* k = std::get_if<std::string>(&path.back());
    if (!k) throw Error(Errc::type_mismatch, "a HASH needs a string key");
    auto& h = static_cast<HashNode&>(*parent);
    held(h.mu);
    auto it = h.items.find(*k);
    if (!erase) return {Value(it != h.items.end())};
    if (it == h.items.end()) return {Value()};
    Value old = std::move(it->second);
    h.items.erase(it);
    return {old};
  }
  if (parent->kind == NodeKind::array) {
    const auto* i = std::get_if<int64_t>(&path.back());
    if (!i) throw Error(Errc::type_mismatch, "an ARRAY needs an index");
    auto& a = static_cast<ArrayNode&>(*parent);
    held(a.mu);
    if (erase) return {array_erase(a, *i)};
    auto idx = array_index(*i, a.items.size());
    return {Value(idx && *idx < a.items.size())};
  }
  throw Error(Errc::type_mismatch, "cannot index into a SCALAR");
}

ValueArray Executor::copy(OpCall& c) {
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  const size_t n = path.size();
  // What Get reads, copied deep: served arrays and hashes below come as copies (scalars,
  // objects, code and file handles stay references). One node's mutex at a time.
  Value v;
  if (n == 0 && root->kind == NodeKind::scalar) {
    MutexLock lock(root->mu);
    v = static_cast<ScalarNode&>(*root).value;
  } else {
    v = value_at(root, path);
  }
  return {deep_copy(v, false, false, limits_.max_tables)};
}

ValueArray Executor::describe(OpCall& c) {
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  const Value v = value_at(root, path);
  const Reference* r = v.if_reference();
  if (!r) return {Value(""), Value("")};
  if (r->node) return {Value(r->node->type_name()), Value(r->node->reftype())};
  return {Value(r->type_name), Value(r->reftype)};
}

ValueArray Executor::contents(OpCall& c) {
  const wire::Op op = c.op;
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  const size_t n = path.size();
  auto node = node_at(root, path, n);
  if (!node) {
    if (op == wire::Op::Size) return {Value(0)};
    return {};
  }
  MutexLock lock(node->mu);
  if (node->kind == NodeKind::hash) {
    auto& h = static_cast<HashNode&>(*node);
    held(h.mu);
    switch (op) {
      case wire::Op::Size:
        return {Value(static_cast<int64_t>(h.items.size()))};
      case wire::Op::Clear:
        h.items.clear();
        return {};
      default: {
        ValueArray out;
        out.reserve(h.items.size());
        for (const auto& [k, v] : h.items) out.push_back(op == wire::Op::Keys ? Value(k) : v);
        return out;
      }
    }
  }
  if (node->kind == NodeKind::array) {
    auto& a = static_cast<ArrayNode&>(*node);
    held(a.mu);
    switch (op) {
      case wire::Op::Size:
        return {Value(static_cast<int64_t>(a.items.size()))};
      case wire::Op::Clear:
        a.items.clear();
        return {};
      case wire::Op::Keys: {
        ValueArray out;
        out.reserve(a.items.size());
        for (size_t i = 0; i < a.items.size(); ++i) out.emplace_back(static_cast<int64_t>(i));
        return out;
      }
      default:
        return ValueArray(a.items.begin(), a.items.end());
    }
  }
  throw Error(Errc::type_mismatch, "a SCALAR has no elements");
}

ValueArray Executor::slice(OpCall& c) {
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  ValueArray& args = c.args;
  const size_t n = path.size();
  // One page of a container: [next cursor or null, is a hash, items...]. An array's cursor is
  // an index; a hash's is the last key of the page before (keys in order): each page is a
  // lookup.
  const Value cursor = args.empty() ? Value() : args[0];
  const Value count_arg = args.size() < 2 ? Value() : args[1];
  size_t count = std::numeric_limits<size_t>::max();
  if (!count_arg.is_null()) {
    const int64_t c = count_arg.as<int64_t>();
    if (c <= 0)
      throw Error(Errc::invalid_argument,
                  "a slice of " + std::to_string(c) + " elements (the count must be > 0)");
    count = static_cast<size_t>(c);
  }
  auto node = node_at(root, path, n);
  if (!node) return {Value(), Value(false)};  // nothing there: empty, as Perl's undef
  MutexLock lock(node->mu);
  ValueArray out{Value(), Value(node->kind == NodeKind::hash)};
  if (node->kind == NodeKind::array) {
    auto& a = static_cast<ArrayNode&>(*node);
    held(a.mu);
    const int64_t start = cursor.is_null() ? 0 : cursor.as<int64_t>();
    if (start < 0)
      throw Error(Errc::index_out_of_range,
                  "a slice from index " + std::to_string(start) + " (it must be >= 0)");
    const size_t from = std::min(static_cast<size_t>(start), a.items.size());
    const size_t to = from + std::min(count, a.items.size() - from);
    out.reserve(2 + to - from);
    out.insert(out.end(), a.items.begin() + static_cast<ptrdiff_t>(from),
               a.items.begin() + static_cast<ptrdiff_t>(to));
    if (to < a.items.size()) out[0] = Value(static_cast<int64_t>(to));
    return out;
  }
  if (node->kind == NodeKind::hash) {
    auto& h = static_cast<HashNode&>(*node);
    held(h.mu);
    auto it = cursor.is_null() ? h.items.begin() : h.items.upper_bound(cursor.as<std::string>());
    for (size_t taken = 0; it != h.items.end() && taken < count; ++it, ++taken) {
      out.emplace_back(it->first);
      out.push_back(it->second);
    }
    if (it != h.items.end()) out[0] = out[out.size() - 2];
    return out;
  }
  throw Error(Errc::type_mismatch, std::string("cannot page through ") + where(path, n) +
                                       ", which is a " + node->reftype() +
                                       ", not an array or a hash");
}

ValueArray Executor::grow_array(OpCall& c) {
  const wire::Op op = c.op;
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  ValueArray& args = c.args;
  const size_t n = path.size();
  static const PathElem kIndex = int64_t{0};
  auto node = n == 0 ? root : vivify(root, path, n, &kIndex, limits_);
  for (auto& a : args) a = stored_form(std::move(a));
  MutexLock lock(node->mu);
  switch (op) {
    case wire::Op::Push: {
      auto& a = want_array(*node, path, "push onto");
      held(a.mu);
      for (auto& v : args) a.items.push_back(std::move(v));
      return {Value(static_cast<int64_t>(a.items.size()))};
    }
    case wire::Op::Unshift: {
      auto& a = want_array(*node, path, "unshift onto");
      held(a.mu);
      a.items.insert(a.items.begin(), std::make_move_iterator(args.begin()),
                     std::make_move_iterator(args.end()));
      return {Value(static_cast<int64_t>(a.items.size()))};
    }
    case wire::Op::Resize: {
      auto& a = want_array(*node, path, "resize");
      held(a.mu);
      array_resize(a, int_arg(args, 0, "resize", "a size"), limits_);
      return {};
    }
    default: {
      auto& a = want_array(*node, path, "splice");
      held(a.mu);
      const int64_t offset = int_arg(args, 0, "splice", "an offset");
      std::optional<int64_t> length;
      size_t first = 1;
      if (args.size() >= 2) {
        if (!args[1].is_null()) length = int_arg(args, 1, "splice", "a length");
        first = 2;
      }
      ValueArray repl(std::make_move_iterator(args.begin() + static_cast<std::ptrdiff_t>(first)),
                      std::make_move_iterator(args.end()));
      return array_splice(a, offset, length, std::move(repl));
    }
  }
}

ValueArray Executor::take_end(OpCall& c) {
  const wire::Op op = c.op;
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  const size_t n = path.size();
  auto node = node_at(root, path, n);
  if (!node) return {Value()};
  MutexLock lock(node->mu);
  auto& a = want_array(*node, path, op == wire::Op::Pop ? "pop from" : "shift from");
  held(a.mu);
  if (a.items.empty()) return {Value()};
  Value v;
  if (op == wire::Op::Pop) {
    v = std::move(a.items.back());
    a.items.pop_back();
  } else {
    v = std::move(a.items.front());
    a.items.pop_front();
  }
  return {v};
}

ValueArray Executor::served(OpCall& c) {
  const wire::Request& req = c.req;
  const wire::Op op = c.op;
  const std::shared_ptr<Node>& root = c.root;
  const Path& path = c.path;
  ValueArray& args = c.args;
  const size_t n = path.size();
  // Served objects, callables and handles (served_ops.cpp), at the object or at an element.
  std::shared_ptr<Node> target = root;
  if (n > 0) {
    const Value v = value_at(root, path);
    target = node_of(v);
    if (!target) {
      if (op == wire::Op::Can || op == wire::Op::Isa) return {Value(false)};
      throw Error(op == wire::Op::Call ? Errc::not_callable : Errc::type_mismatch,
                  where(path, n) + " is " + type_name(v.type()) + " " +
                      v.to_string().substr(0, 40) + ", not a served object" +
                      (op == wire::Op::Call ? " (Not a CODE reference)" : ""));
    }
  }
  const auto deadline = route_.deadline;
  const std::string name = req.name() ? req.name()->str() : std::string();
  ServedCall call{op, name, args, req.context(), options_, deadline, changed_, &route_};
  call.read_only = rights_ != nullptr && rights_->read_only;
  if (call.read_only && op_info(op).mutating && op != wire::Op::Call)
    throw Error(Errc::not_authorized, std::string(op_info(op).name) + " on " +
                                          (rights_table_ ? rights_table_->name_of(req.object())
                                                         : std::string("the object")) +
                                          " refused: this client's key is read-only");
  ValueArray out;
  try {
    out = run_served(target, call);
  } catch (const Error& e) {
    // A read-only key's call of a method not marked read-only: the refusal names the object.
    if (e.code() != Errc::not_authorized || !call.read_only || rights_table_ == nullptr) throw;
    rights_table_->count_refusal();
    throw Error(Errc::not_authorized,
                "call of " + name + " on " + rights_table_->name_of(req.object()) +
                    " refused: this client's key (" + key_fingerprint(rights_->key) +
                    ") is read-only, and " + std::string(error_message(e)));
  }
  deferred_ = call.deferred;
  return out;
}

ValueArray Executor::lock(OpCall& c) {
  PATRO_ASSERT(owed_ != nullptr && locks_ != nullptr, "a lock operation run without a lock table");
  const Caller caller{c.req.client_id(), c.req.request_id(), std::string(route_.routing)};
  // A parked request waits no longer than what is left of its deadline.
  const int64_t left_ms = std::max<int64_t>(
      std::chrono::ceil<std::chrono::milliseconds>(route_.deadline - Clock::now()).count(), 1);
  return outcome_or_park(locks_->lock(
      c.lock_object, caller, timeout_arg(c.args), c.args.size() > 1 && c.args[1].as<bool>(),
      std::min(bound_arg(c.args, 2, options_.max_lock_wait), left_ms), *owed_));
}

ValueArray Executor::unlock(OpCall& c) {
  PATRO_ASSERT(owed_ != nullptr && locks_ != nullptr, "a lock operation run without a lock table");
  return outcome_or_park(
      locks_->unlock(c.lock_object, c.req.client_id(), count_arg(c.args), *owed_));
}

ValueArray Executor::wait(OpCall& c) {
  PATRO_ASSERT(owed_ != nullptr && locks_ != nullptr, "a lock operation run without a lock table");
  const Caller caller{c.req.client_id(), c.req.request_id(), std::string(route_.routing)};
  const int64_t left_ms = std::max<int64_t>(
      std::chrono::ceil<std::chrono::milliseconds>(route_.deadline - Clock::now()).count(), 1);
  return outcome_or_park(
      locks_->wait(c.lock_object, caller, timeout_arg(c.args),
                   std::min(bound_arg(c.args, 1, options_.max_lock_wait), left_ms), *owed_));
}

ValueArray Executor::notify(OpCall& c) {
  PATRO_ASSERT(locks_ != nullptr, "a lock operation run without a lock table");
  return outcome_or_park(locks_->notify(c.lock_object, c.req.client_id(), count_arg(c.args)));
}

ValueArray Executor::lock_info(OpCall& c) {
  PATRO_ASSERT(locks_ != nullptr, "a lock operation run without a lock table");
  const LockInfo i = locks_->info(c.lock_object);
  return {Value(static_cast<int64_t>(i.holder)), Value(int64_t{i.depth}),
          Value(static_cast<int64_t>(i.lock_waiters)), Value(static_cast<int64_t>(i.wait_waiters)),
          Value(static_cast<int64_t>(i.token))};
}

ValueArray Executor::lock_state(OpCall& c) {
  PATRO_ASSERT(locks_ != nullptr, "a lock operation run without a lock table");
  return {Value(locks_->state(c.lock_object, c.req.client_id()))};
}

ValueArray Executor::outcome_or_park(const std::optional<SyncOutcome>& o) {
  // No outcome: the caller is parked; its reply comes with a grant or at its deadline.
  if (!o) {
    parked_ = true;
    return {};
  }
  return outcome_values(*o);
}

ValueArray Executor::release(OpCall& c) {
  const wire::Request& req = c.req;
  const ObjectId id = target_of(req);
  // [count]: references a reply sent this client; [count, pass]: passes of a callback object
  // (the key its Ref carried).
  const size_t n = req.args() != nullptr ? req.args()->size() : 0;
  const wire::Value* count = n == 1 || n == 2 ? req.args()->Get(0) : nullptr;
  const wire::Value* pass = n == 2 ? req.args()->Get(1) : nullptr;
  if (count == nullptr || count->kind() != wire::Kind::Int || count->i() < 1 ||
      (pass != nullptr && pass->kind() != wire::Kind::Int))
    throw Error(Errc::invalid_argument,
                "a release takes a count of at least 1, and optionally a pass key");
  if (id.server != objects_.server_id()) return {};
  if (pass != nullptr)
    objects_.release_pass(id.object, static_cast<uint64_t>(pass->i()),
                          static_cast<uint64_t>(count->i()));
  else
    objects_.release(id.object, req.client_id(), static_cast<uint64_t>(count->i()));
  return {};
}

// The handler table: one row per operation of the op table (wire/op_table.hpp), checked below.
struct HandlerTable {
  using E = Executor;
  using enum wire::Op;
  // clang-format off
  static constexpr E::HandlerRow kRows[] = {
    {Get,       &E::get},
    {Set,       &E::set},
    {Erase,     &E::erase_or_exists},
    {Exists,    &E::erase_or_exists},
    {Size,      &E::contents},
    {Keys,      &E::contents},
    {Values,    &E::contents},
    {Push,      &E::grow_array},
    {Pop,       &E::take_end},
    {Shift,     &E::take_end},
    {Unshift,   &E::grow_array},
    {Splice,    &E::grow_array},
    {Clear,     &E::contents},
    {Resize,    &E::grow_array},
    {Add,       &E::add},
    {Describe,  &E::describe},
    {Call,      &E::served},
    {Can,       &E::served},
    {Operator,  &E::served},
    {Convert,   &E::served},
    {File,      &E::served},
    {Isa,       &E::served},
    {Lock,      &E::lock},
    {Unlock,    &E::unlock},
    {Wait,      &E::wait},
    {Notify,    &E::notify},
    {LockState, &E::lock_state},
    {LockInfo,  &E::lock_info},
    {Slice,     &E::slice},
    {Copy,      &E::copy},
    {Release,   &E::release},
  };
  // clang-format on

  static constexpr size_t count(wire::Op op) {
    size_t n = 0;
    for (const E::HandlerRow& row : kRows) n += row.op == op ? 1 : 0;
    return n;
  }
  /// Every operation the op table knows has exactly one row here, and no other has one.
  static constexpr bool complete() {
    for (int op = 0; op < 256; ++op)
      if (count(static_cast<wire::Op>(op)) != (op_info(static_cast<wire::Op>(op)).known() ? 1 : 0))
        return false;
    return true;
  }
  /// The table by operation number, as the op table is (constant time, no branch on the op).
  static constexpr std::array<E::Handler, 256> by_op() {
    std::array<E::Handler, 256> t{};
    for (const E::HandlerRow& row : kRows) t[static_cast<uint8_t>(row.op)] = row.run;
    return t;
  }
};
static_assert(HandlerTable::complete(),
              "each operation of op_table.hpp needs exactly one row in the handler table");

const std::array<Executor::Handler, 256> Executor::kHandlerByOp = HandlerTable::by_op();

size_t Executor::handlers_of(wire::Op op) noexcept {
  return HandlerTable::count(op);
}

}  // namespace patro::detail
