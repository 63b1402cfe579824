#include <sys/stat.h>

#include "connection.hpp"
#include "log.hpp"
#include "patro/client.hpp"

namespace patro {

// Value's constructor from a proxy lives with the proxy (the client family), so that values, in a
// lower family, need not know about connections.
Value::Value(const Proxy& p)
    : Value(Reference{nullptr, p.connection(), p.id(), p.path(), {}, {}, p.hold_, false}) {}

using detail::Connection;
using wire::Op;

namespace {
ValueArray run(const Proxy& p, Op op, const ValueArray& args,
               wire::CallContext context = wire::CallContext::Scalar) {
  return p.connection()->call(p.id(), op, p.path(), args, {}, context,
                              detail::CallExtras{std::nullopt, p.fence()});
}

const Value& first(const ValueArray& results) {
  static const Value null;
  return results.empty() ? null : results.front();
}
}  // namespace

Proxy::Proxy(const Value& v) {
  const Reference* r = v.if_reference();
  if (r == nullptr || !r->conn)
    throw Error(Errc::type_mismatch, "a proxy needs a reference to a remote object, not " +
                                         std::string(type_name(v.type())) + " " +
                                         v.to_string().substr(0, 40));
  conn_ = r->conn;
  id_ = r->id;
  path_ = r->path;
  hold_ = r->hold;
}

Proxy::Proxy(std::shared_ptr<detail::Connection> conn, ObjectId id, Path path)
    : conn_(std::move(conn)), id_(id), path_(std::move(path)) {}

Proxy Proxy::child(PathElem e) const {
  Path p = path_;
  p.push_back(std::move(e));
  Proxy c(conn_, id_, std::move(p));
  c.fence_ = fence_;
  c.hold_ = hold_;
  return c;
}

Proxy Proxy::fenced(uint64_t token) const {
  Proxy c = *this;
  c.fence_ = token;
  return c;
}

void Proxy::operator=(const Proxy& other) && {
  set(Value(other));
}
void Proxy::operator=(Proxy&& other) && {
  set(Value(other));
}
Proxy& Proxy::operator=(const Value& v) & {
  set(v);
  return *this;
}
void Proxy::operator=(const Value& v) && {
  set(v);
}

Value Proxy::get() const {
  return first(run(*this, Op::Get, {}));
}
void Proxy::set(const Value& v) const {
  run(*this, Op::Set, {v});
}
Value Proxy::erase() const {
  return first(run(*this, Op::Erase, {}));
}
bool Proxy::exists() const {
  return first(run(*this, Op::Exists, {})).as<bool>();
}
size_t Proxy::size() const {
  return first(run(*this, Op::Size, {})).as<size_t>();
}
std::vector<Value> Proxy::keys() const {
  return run(*this, Op::Keys, {}, wire::CallContext::List);
}
std::vector<Value> Proxy::values() const {
  return run(*this, Op::Values, {}, wire::CallContext::List);
}
size_t Proxy::list_op_size(detail_op op, std::vector<Value> items) const {
  return first(run(*this, op == detail_op::push ? Op::Push : Op::Unshift, items)).as<size_t>();
}
Value Proxy::pop() const {
  return first(run(*this, Op::Pop, {}));
}
Value Proxy::shift() const {
  return first(run(*this, Op::Shift, {}));
}
std::vector<Value> Proxy::splice(int64_t offset) const {
  return run(*this, Op::Splice, {Value(offset)}, wire::CallContext::List);
}
std::vector<Value> Proxy::splice(int64_t offset, int64_t length,
                                 const std::vector<Value>& replacement) const {
  ValueArray args{Value(offset), Value(length)};
  args.insert(args.end(), replacement.begin(), replacement.end());
  return run(*this, Op::Splice, args, wire::CallContext::List);
}
void Proxy::clear() const {
  run(*this, Op::Clear, {});
}
void Proxy::resize(int64_t size) const {
  run(*this, Op::Resize, {Value(size)});
}
Value Proxy::add(const Value& delta) const {
  return first(run(*this, Op::Add, {delta}));
}

// --- Iteration, items, deep copies ---

struct Proxy::iterator::State {
  Proxy proxy;
  size_t page_size = kPageSize;
  std::vector<Element> page;
  size_t pos = 0;
  Value cursor;  // where the next page starts; null: no page left
  bool more = true;

  // One round trip: the page from cursor (page_size 0: everything); more says whether one is left.
  void fetch() {
    ValueArray r = run(proxy, Op::Slice,
                       {cursor, page_size == 0 ? Value() : Value(static_cast<int64_t>(page_size))},
                       wire::CallContext::List);
    page.clear();
    pos = 0;
    const bool hash = r.size() > 1 && truthy(r[1]);
    const Value next = r.empty() ? Value() : r[0];
    if (hash) {
      page.reserve((r.size() - 2) / 2);
      for (size_t i = 2; i + 1 < r.size(); i += 2)
        page.push_back(Element{std::move(r[i]), std::move(r[i + 1])});
    } else {
      int64_t index = cursor.is_null() ? 0 : cursor.as<int64_t>();
      page.reserve(r.size() > 2 ? r.size() - 2 : 0);
      for (size_t i = 2; i < r.size(); ++i)
        page.push_back(Element{Value(index++), std::move(r[i])});
    }
    cursor = next;
    more = !next.is_null();
  }
};

Proxy::iterator::reference Proxy::iterator::operator*() const {
  if (!state_) throw Error(Errc::index_out_of_range, "dereferencing the end of a proxy's elements");
  return state_->page[state_->pos];
}

void Proxy::iterator::settle() {
  // Past the page's end: the next page, skipping empty ones (a container that shrank meanwhile).
  for (int pages = 0; state_->pos >= state_->page.size(); ++pages) {
    if (!state_->more || pages >= 1000) {
      state_.reset();
      return;
    }
    state_->fetch();
  }
}

Proxy::iterator& Proxy::iterator::operator++() {
  if (!state_) return *this;
  ++state_->pos;
  settle();
  return *this;
}

Proxy::iterator Proxy::begin(size_t page_size) const {
  iterator it;
  it.state_ =
      std::make_shared<iterator::State>(iterator::State{*this, page_size, {}, 0, Value(), true});
  it.state_->fetch();
  it.settle();
  return it;
}

std::vector<Proxy::Element> Proxy::items() const {
  iterator::State all{*this, 0, {}, 0, Value(), true};
  all.fetch();
  return std::move(all.page);
}

Value Proxy::copy() const {
  return first(run(*this, Op::Copy, {}));
}

static_assert(static_cast<uint8_t>(Proxy::wire_op::get) == static_cast<uint8_t>(Op::Get) &&
              static_cast<uint8_t>(Proxy::wire_op::set) == static_cast<uint8_t>(Op::Set) &&
              static_cast<uint8_t>(Proxy::wire_op::erase) == static_cast<uint8_t>(Op::Erase) &&
              static_cast<uint8_t>(Proxy::wire_op::push) == static_cast<uint8_t>(Op::Push) &&
              static_cast<uint8_t>(Proxy::wire_op::add) == static_cast<uint8_t>(Op::Add) &&
              static_cast<uint8_t>(Proxy::wire_op::call) == static_cast<uint8_t>(Op::Call) &&
              static_cast<uint8_t>(Proxy::wire_op::file) == static_cast<uint8_t>(Op::File));

std::shared_ptr<const detail::FutureCore> Proxy::start_op(wire_op op, std::vector<Value> args,
                                                          std::string_view name, bool list) const {
  auto core = std::make_shared<detail::FutureCore>();
  core->conn = conn_;
  core->list = list;
  core->slot = conn_->start(id_, static_cast<Op>(op), path_, args, name,
                            list ? wire::CallContext::List : wire::CallContext::Scalar,
                            detail::CallExtras{std::nullopt, fence_});
  return core;
}

void Proxy::send_op(wire_op op, std::vector<Value> args, std::string_view name) const {
  conn_->send_oneway(id_, static_cast<Op>(op), path_, args, name, fence_);
}

uint64_t await_oneway(const Proxy& p, std::chrono::milliseconds timeout) {
  return p.connection()->await_oneway(timeout);
}

Bundle::Bundle(const Proxy& p) : conn_(p.connection()) {
  if (!conn_) throw Error(Errc::invalid_argument, "patro::Bundle: the proxy has no connection");
  conn_->cork();
}

Bundle::~Bundle() {
  try {
    conn_->uncork();
  } catch (const std::exception& e) {
    // Its calls stay queued; the next call or wait on the connection sends them.
    PATRO_LOG(warn, "client") << "patro::Bundle could not send its calls: " << e.what();
  }
}

void Bundle::send() {
  conn_->send_queued();
}

namespace detail {
bool future_ready(const FutureCore& c) {
  return c.conn->ready(c.slot);
}
bool future_wait(const FutureCore& c, std::chrono::milliseconds timeout) {
  if (timeout.count() < 0) {
    c.conn->await(c.slot);
    return true;
  }
  return c.conn->await(c.slot, Connection::Clock::now() + timeout);
}
ValueArray future_results(const FutureCore& c) {
  ValueArray r = c.conn->results(c.slot);
  if (!c.list && r.empty()) r.emplace_back();
  return r;
}
void future_then(const FutureCore& c, std::function<void()> f) {
  c.conn->on_done(c.slot, std::move(f));
}
bool future_cancel(const FutureCore& c) {
  return c.conn->cancel(c.slot);
}
bool future_expire_after(const FutureCore& c, std::chrono::milliseconds after) {
  return c.conn->expire_after(c.slot, after);
}

static_assert(static_cast<uint8_t>(Op::Get) == 0 && static_cast<uint8_t>(Op::Set) == 1 &&
                  static_cast<uint8_t>(Op::Call) == 16,
              "Future's pipelined calls name these operations by number (future.hpp)");

namespace {
/// A slot answered at once with an error, sent nowhere (its request could not be made).
SlotPtr failed_slot(Errc code, std::string text) {
  auto slot = std::make_shared<Slot>();
  slot->done = true;
  slot->error = code;
  slot->error_text = std::move(text);
  return slot;
}
}  // namespace

std::shared_ptr<const FutureCore> future_pipeline(const FutureCore& on, uint8_t op,
                                                  std::vector<Value> args, std::string_view name,
                                                  bool list) {
  auto core = std::make_shared<FutureCore>();
  core->conn = on.conn;
  core->list = list;
  const auto context = list ? wire::CallContext::List : wire::CallContext::Scalar;
  const uint64_t on_id = on.slot->request_id;
  if (!on.conn->ready(on.slot)) {
    // Not answered yet: sent now, to the server of the call it is made on; the server runs it on
    // that call's result (object 0: a server too old to pipeline answers unknown_object).
    if (on.slot->server == 0 || on_id == 0)
      throw Error(Errc::invalid_argument, "a call on the result of a call that went to no server");
    core->slot = on.conn->start(ObjectId{on.slot->server, 0}, static_cast<Op>(op), {}, args, name,
                                context, CallExtras{std::nullopt, 0, nullptr, on_id});
    return core;
  }
  // Answered: a plain call on its result, or the error the server would give.
  const std::string made_on =
      "request #" + std::to_string(on_id) + ", which this call was made on the result of, ";
  ValueArray r;
  try {
    r = on.conn->results(on.slot);
  } catch (const Error& e) {
    std::string text = e.what();
    const std::string prefix = std::string(errc_name(e.code())) + ": ";
    if (text.rfind(prefix, 0) == 0) text.erase(0, prefix.size());
    if (text.find(", which this call was made on the result of, ") == std::string::npos)
      text = made_on + "failed: " + text;
    core->slot = failed_slot(e.code(), std::move(text));
    return core;
  }
  const Reference* ref = r.empty() ? nullptr : r.front().if_reference();
  if (ref == nullptr || ref->conn == nullptr) {
    core->slot = failed_slot(Errc::type_mismatch,
                             made_on + "returned " +
                                 (r.empty() ? std::string("nothing") : r.front().to_string()) +
                                 ", not a reference to an object: a call cannot run on its result");
    return core;
  }
  core->slot = on.conn->start(ref->id, static_cast<Op>(op), ref->path, args, name, context);
  return core;
}
}  // namespace detail

std::string ref(const Proxy& p) {
  auto r = run(p, Op::Describe, {});
  return r.empty() ? std::string() : r[0].as<std::string>();
}

std::string reftype(const Proxy& p) {
  auto r = run(p, Op::Describe, {});
  return r.size() < 2 ? std::string() : r[1].as<std::string>();
}

Value callback(Value local) {
  const Reference* r = local.if_reference();
  if (r == nullptr || !r->node)
    throw Error(Errc::invalid_argument,
                "patro::callback needs a local object or container (a patro::Array, Hash, Scalar, "
                "Code or an object of a registered class), not " +
                    (r != nullptr ? "a proxy" : std::string(type_name(local.type()))));
  Reference marked = *r;
  marked.callback = true;
  return Value(std::move(marked));
}

int event_fd(const Proxy& p) {
  return p.connection()->event_fd();
}

size_t run_ready(const Proxy& p) {
  return p.connection()->run_ready();
}

void stop_callbacks(const Proxy& p) {
  p.connection()->stop_callbacks();
}

Client::Client(std::shared_ptr<detail::Connection> conn) : conn_(std::move(conn)) {
  if (!conn_) throw Error(Errc::invalid_argument, "a patro::Client needs a connection");
}

std::string Client::broker() const {
  return conn_->endpoint();
}

uint64_t Client::id() const noexcept {
  return conn_->client_id();
}

ClientStats Client::stats() const {
  const auto counts = conn_->request_counts();
  ClientStats s;
  s.requests = counts.requests;
  s.replies = counts.replies;
  s.direct_replies = counts.direct_replies;
  s.resends = conn_->retries();
  s.moves = conn_->failovers();
  s.releases = conn_->released();
  s.in_flight = counts.in_flight;
  s.callbacks_served = conn_->callbacks_served();
  s.log_lines = conn_->log_lines();
  s.bundles_sent = conn_->bundles_sent();
  s.bundles_received = conn_->bundles_received();
  return s;
}

void Client::forward_logs(LogLevel level, std::string_view selections) {
  conn_->forward_logs(level, std::string(selections));
}

void Client::stop_forwarding_logs() {
  conn_->forward_logs(std::nullopt, {});
}

void Client::close() {
  conn_->close();
}

bool Client::closed() const noexcept {
  return conn_->closed();
}

Client client(const Proxy& p) {
  if (!p.connection())
    throw Error(Errc::invalid_argument, "patro::client: the proxy has no connection");
  return Client(p.connection());
}

std::vector<Proxy> get_proxies(const Config& config, const ClientOptions& options) {
  // The keys the options give win over those the config carries.
  ClientOptions o = options;
  if (o.curve.broker_key.empty()) o.curve.broker_key = config.broker_key();
  if (o.curve.keys.empty()) o.curve.keys = config.client_key();
  if (o.route == Route::automatic && !config.route().empty()) o.route = parse_route(config.route());
  auto conn = std::make_shared<Connection>(config.brokers(), o);
  conn->connect();
  std::vector<Proxy> out;
  out.reserve(config.objects().size());
  for (const auto& o : config.objects()) out.emplace_back(conn, o.id);
  return out;
}

std::vector<Proxy> get_proxies(std::string_view text_or_file, const ClientOptions& options) {
  std::string_view t = text_or_file;
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t' || t.front() == '\n'))
    t.remove_prefix(1);
  if (!t.empty() && t.front() == '{') return get_proxies(Config::parse(t), options);
  const std::string path(text_or_file);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error(Errc::bad_config,
                "'" + path.substr(0, 80) + "' is neither config text nor a readable file");
  return get_proxies(Config::from_file(path), options);
}

std::vector<Proxy> get_proxies(const char* text_or_file, const ClientOptions& options) {
  return get_proxies(std::string_view(text_or_file), options);
}

std::vector<std::string> split_endpoints(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    size_t a = start, b = end;
    while (a < b && (list[a] == ' ' || list[a] == '\t')) ++a;
    while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t')) --b;
    if (b > a) out.push_back(list.substr(a, b - a));
    start = end + 1;
  }
  return out;
}

Proxy get_proxy(const std::vector<std::string>& brokers, const std::string& name,
                const ClientOptions& options) {
  auto conn = std::make_shared<Connection>(brokers, options);
  conn->connect();
  auto info = conn->lookup(name);
  if (!info) {
    std::string where;
    for (const auto& b : brokers) where += (where.empty() ? "" : ", ") + b;
    throw Error(Errc::not_found, "no object is registered as '" + name + "' at the broker" +
                                     (brokers.size() > 1 ? "s " : " ") + where);
  }
  return Proxy(conn, info->id);
}

Proxy get_proxy(const std::string& broker_endpoint, const std::string& name,
                const ClientOptions& options) {
  return get_proxy(split_endpoints(broker_endpoint), name, options);
}

}  // namespace patro

namespace patro {

Route parse_route(const std::string& text) {
  if (text == "auto") return Route::automatic;
  if (text == "direct") return Route::direct;
  if (text == "broker") return Route::broker;
  throw Error(Errc::invalid_argument, "unknown route '" + text + "': want auto, direct or broker");
}

const char* route_name(Route r) noexcept {
  switch (r) {
    case Route::automatic:
      return "auto";
    case Route::direct:
      return "direct";
    case Route::broker:
      return "broker";
  }
  return "?";
}

}  // namespace patro
