// Using served objects: patro::get_proxies, patro::get_proxy and patro::Proxy.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "patro/config.hpp"
#include "patro/export.hpp"
#include "patro/future.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"

PATRO_PUBLIC_BEGIN
namespace patro {

namespace detail {
template <class T>
struct is_reference_wrapper : std::false_type {};
template <class T>
struct is_reference_wrapper<std::reference_wrapper<T>> : std::true_type {};

/// The arguments of a call, with the variables passed by std::ref to write changes back into.
struct CallArgs {
  ValueArray values;
  std::vector<std::pair<size_t, std::function<void(const Value&)>>> outs;

  template <class A>
  void add(A&& a) {
    using D = std::remove_cvref_t<A>;
    if constexpr (is_reference_wrapper<D>::value) {
      auto& target = a.get();
      using T = std::remove_reference_t<decltype(target)>;
      if constexpr (!std::is_const_v<T>) {
        outs.emplace_back(values.size(), [&target](const Value& v) {
          if constexpr (std::is_same_v<T, Value>)
            target = v;
          else
            target = v.as<T>();
        });
      }
      values.emplace_back(target);
    } else {
      values.emplace_back(std::forward<A>(a));
    }
  }
};

template <class... A>
CallArgs call_args(A&&... a) {
  CallArgs c;
  c.values.reserve(sizeof...(A));
  (c.add(std::forward<A>(a)), ...);
  return c;
}
}  // namespace detail

/// A proxy to a served object, or to an element below it. It looks and feels like the object:
/// p["def"][1]["ghi"] names an element (no round trip until it is used: the whole chain travels as
/// one request), p.get() reads it, p["k"] = v writes it.
///
/// Assignment: assigning a Value (or anything convertible) writes through the proxy. Assigning a
/// Proxy to a temporary element proxy (p["k"] = other) stores the object the other proxy names;
/// assigning a Proxy to a named Proxy variable rebinds the variable, as with any C++ handle.
///
/// All proxies obtained through one get_proxies() call share one connection (one lock monitor).
/// A connection may be used from several threads; calls on it are serialized.
class Proxy {
 public:
  /// A proxy for a reference that a call returned (a nested container, an object). Throws
  /// Error(type_mismatch) if v is not a reference to a remote object.
  Proxy(const Value& v);
  Proxy(std::shared_ptr<detail::Connection> conn, ObjectId id, Path path = {});

  Proxy(const Proxy&) = default;
  Proxy(Proxy&&) noexcept = default;
  Proxy& operator=(const Proxy&) & = default;
  Proxy& operator=(Proxy&&) & noexcept = default;
  ~Proxy() = default;

  /// Stores the object other names into the element this proxy names.
  void operator=(const Proxy& other) &&;
  void operator=(Proxy&& other) &&;
  /// Writes v into the element this proxy names.
  Proxy& operator=(const Value& v) &;
  void operator=(const Value& v) &&;

  /// The element at a key or an index (negative counts from the end). No round trip.
  template <std::integral I>
  Proxy operator[](I index) const {
    return child(PathElem(static_cast<int64_t>(index)));
  }
  Proxy operator[](std::string_view key) const { return child(PathElem(std::string(key))); }
  Proxy operator[](const char* key) const { return child(PathElem(std::string(key))); }
  Proxy operator[](const std::string& key) const { return child(PathElem(key)); }

  /// Reads the element. A nested container comes back as a reference, not its contents (Perl's
  /// $h->{k} gives an ARRAY ref too): convert it to a Proxy to work on it on the server, or call
  /// copy() for its values. A missing key gives null. With no path: a scalar's value, or a
  /// container's own reference.
  Value get() const;
  template <class T>
  T as() const {
    return get().as<T>();
  }
  void set(const Value& v) const;
  /// Deletes a hash key or an array element and returns what it held.
  Value erase() const;
  bool exists() const;
  /// Elements of the hash or array.
  size_t size() const;
  /// Hash keys (sorted), or array indices.
  std::vector<Value> keys() const;
  /// The elements (a hash's in key order). Shallow: nested containers come back as references.
  std::vector<Value> values() const;

  // --- Idiomatic C++: iteration, items and deep copies ---

  /// An element met while iterating: its key (an array's index, a hash's key) and its value. It
  /// converts to its value, so `for (patro::Value v : p)` visits the values and
  /// `for (const auto& [key, value] : p)` the pairs.
  struct Element {
    Value key;
    Value value;
    operator const Value&() const noexcept { return value; }
  };

  /// An input iterator over a remote array or hash: it fetches the elements a page at a time,
  /// one round trip per page (the first when begin() is called). Elements are copies as values()
  /// gives them (nested containers are references). Changes made to the container while
  /// iterating show in the pages not yet fetched. Copies of an iterator share its position.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Element;
    using difference_type = std::ptrdiff_t;
    using pointer = const Element*;
    using reference = const Element&;

    iterator() = default;  // the end
    reference operator*() const;
    pointer operator->() const { return &**this; }
    iterator& operator++();
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& a, const iterator& b) noexcept {
      return a.state_ == b.state_;
    }

   private:
    friend class Proxy;
    struct State;
    void settle();                  // onto an element, fetching pages as needed, or to the end
    std::shared_ptr<State> state_;  // null at the end
  };

  /// Elements one page (round trip) fetches by default.
  static constexpr size_t kPageSize = 1000;
  /// Iterates the array or hash this proxy names (range-for: `for (const auto& e : p)`), fetching
  /// page_size elements per round trip (0: all in one; Perl's `for (@$proxy)`). A missing
  /// element iterates as empty; anything else that is not an array or hash is
  /// Error(type_mismatch).
  iterator begin(size_t page_size = kPageSize) const;
  iterator end() const noexcept { return {}; }
  /// Every key and value of a hash (in key order; an array: indices and values) in one round
  /// trip (Perl's `%$proxy` in list context). Shallow, as values() is.
  std::vector<Element> items() const;
  /// A deep copy of what the proxy names, in one round trip: served arrays and hashes, nested
  /// too, come back as local copies (Value arrays and hashes); served scalars, objects, code and
  /// file handles below stay references. Bounded: nested deeper than 100 levels (or an array
  /// that contains itself) is Error(invalid_argument), and a copy over the server's limits
  /// (Limits::max_tables values, max_message_size bytes) Error(message_too_large).
  Value copy() const;

  template <class... Args>
  size_t push(Args&&... items) const {
    return list_op_size(detail_op::push, {Value(std::forward<Args>(items))...});
  }
  template <class... Args>
  size_t unshift(Args&&... items) const {
    return list_op_size(detail_op::unshift, {Value(std::forward<Args>(items))...});
  }
  Value pop() const;
  Value shift() const;
  /// Perl's splice: removes length elements from offset (negative offset counts from the end;
  /// no length: to the end; negative length leaves that many at the end), inserts replacement,
  /// returns the removed elements.
  std::vector<Value> splice(int64_t offset) const;
  std::vector<Value> splice(int64_t offset, int64_t length,
                            const std::vector<Value>& replacement = {}) const;
  void clear() const;
  /// Sets the array's size (Perl's $#a = n - 1).
  void resize(int64_t size) const;
  /// Adds delta to the number held, atomically on the server, and returns the new value.
  Value add(const Value& delta) const;

  /// A proxy that sends a fencing token (SyncResult::token) with every call: the server refuses a
  /// mutating call through it with Errc::fenced once a newer lock grant exists for the object.
  Proxy fenced(uint64_t token) const;
  uint64_t fence() const noexcept { return fence_; }
  // --- Served objects and callables (patro/object.hpp) ---
  // An argument passed as std::ref(x) is written back when the server changes it (Perl's
  // aliased @_); other arguments are copies. A proxy passed as an argument arrives at the server
  // as the server's own object. A result that is a served object or container comes back as a
  // reference (convert it to a Proxy).

  /// Calls a method in scalar context. Error(unknown_method) names the method and the class.
  template <class... A>
  Value call(std::string_view method, A&&... args) const {
    return served_call(method, detail::call_args(std::forward<A>(args)...), false).at(0);
  }
  /// Calls a method in list context.
  template <class... A>
  std::vector<Value> call_list(std::string_view method, A&&... args) const {
    return served_call(method, detail::call_args(std::forward<A>(args)...), true);
  }
  /// Runs a served callable (patro::Code) in scalar context.
  template <class... A>
  Value operator()(A&&... args) const {
    return served_call({}, detail::call_args(std::forward<A>(args)...), false).at(0);
  }
  /// Runs a served callable in list context.
  template <class... A>
  std::vector<Value> call_code_list(A&&... args) const {
    return served_call({}, detail::call_args(std::forward<A>(args)...), true);
  }

  /// Compound assignment: the served object's operator changes the object on the server. Where
  /// the class has only the plain operator (+ for +=) and it returns a new object, this proxy
  /// names the new object afterwards (for an element proxy, the element is set to it).
  Proxy& operator+=(const Value& v) { return assign_op("+=", v); }
  Proxy& operator-=(const Value& v) { return assign_op("-=", v); }
  Proxy& operator*=(const Value& v) { return assign_op("*=", v); }
  Proxy& operator/=(const Value& v) { return assign_op("/=", v); }
  Proxy& operator%=(const Value& v) { return assign_op("%=", v); }
  /// Unary minus (Perl's "neg") and logical not ("!").
  Value operator-() const;
  bool operator!() const;
  /// The served object's conversions (Perl's "", 0+ and bool).
  std::string to_string() const;
  double to_number() const;
  bool to_bool() const;
  explicit operator bool() const { return to_bool(); }

  // --- Served file handles (patro/filehandle.hpp). A failed operation throws RemoteError with
  // the errno the server's system call set (EBADF on a closed handle). ---
  template <class... A>
  bool print(A&&... items) const {
    return truthy(file_op("print", {Value(std::forward<A>(items))...}).at(0));
  }
  /// Perl's printf, formatted on the server (%s %d %i %u %c %f %e %g %x %X %o %b %%, with flags,
  /// width and precision).
  template <class... A>
  bool printf(std::string_view format, A&&... args) const {
    return truthy(file_op("printf", {Value(format), Value(std::forward<A>(args))...}).at(0));
  }
  /// Writes data (unformatted; bytes or a string).
  bool write(const Value& data) const;
  /// The next line (with its "\n"), or null at end of file.
  Value readline() const;
  /// All the remaining lines.
  std::vector<Value> readlines() const;
  /// Up to n bytes; an empty string at end of file.
  std::string read(int64_t n) const;
  /// One character, or null at end of file.
  Value getc() const;
  bool eof() const;
  /// whence: 0 (SEEK_SET), 1 (SEEK_CUR), 2 (SEEK_END).
  bool seek(int64_t position, int whence = 0) const;
  int64_t tell() const;
  bool truncate(int64_t length) const;
  bool flush() const;
  bool binmode(std::string_view layer = ":raw") const;
  /// operation: LOCK_SH, LOCK_EX or LOCK_UN, optionally | LOCK_NB (<sys/file.h>). A lock that
  /// cannot be had by the call's deadline is an error with errno EWOULDBLOCK.
  bool flock(int operation) const;
  /// Perl's file tests: 'e' exists, 's' size (null if empty), 'z' empty, 'f' plain file,
  /// 'd' directory, 'r' readable, 'w' writable, 'x' executable, 'M' age in days.
  Value file_test(char test) const;
  bool file_exists() const { return file_test('e').as<bool>(); }
  int64_t file_size() const;
  bool readable() const { return file_test('r').as<bool>(); }
  bool writable() const { return file_test('w').as<bool>(); }
  /// The modification time, in seconds since the epoch.
  int64_t modified() const;
  /// fstat of the handle: dev ino mode nlink uid gid size atime mtime ctime.
  Value stat() const;
  /// Refused unless the server runs with secure_filehandles = false (and pipe modes always).
  bool open(std::string_view mode, std::string_view path) const;
  bool close() const;
  bool sysopen(std::string_view path, int flags, int permissions = 0666) const;
  // Directory handles.
  /// The next entry, or null at the end.
  Value readdir() const;
  /// All the remaining entries.
  std::vector<Value> readdir_all() const;
  int64_t telldir() const;
  bool seekdir(int64_t position) const;
  bool rewinddir() const;
  bool opendir(std::string_view path) const;
  bool closedir() const;

  // --- Asynchronous calls (patro/future.hpp): each sends its request and returns at once. Many
  // may be in flight on one connection; they run on the server in the order they were sent.
  // Arguments are sent by value (no write-back of std::ref arguments). ---

  Future<Value> async_get() const { return Future<Value>(start_op(wire_op::get, {}, {}, false)); }
  Future<Value> async_set(const Value& v) const {
    return Future<Value>(start_op(wire_op::set, {v}, {}, false));
  }
  Future<Value> async_add(const Value& delta) const {
    return Future<Value>(start_op(wire_op::add, {delta}, {}, false));
  }
  Future<Value> async_erase() const {
    return Future<Value>(start_op(wire_op::erase, {}, {}, false));
  }
  template <class... Args>
  Future<Value> async_push(Args&&... items) const {
    return Future<Value>(start_op(wire_op::push, {Value(std::forward<Args>(items))...}, {}, false));
  }
  /// A method in scalar context.
  template <class... A>
  Future<Value> async_call(std::string_view method, A&&... args) const {
    return Future<Value>(start_op(wire_op::call, {Value(std::forward<A>(args))...}, method, false));
  }
  /// A method in list context.
  template <class... A>
  Future<std::vector<Value>> async_call_list(std::string_view method, A&&... args) const {
    return Future<std::vector<Value>>(
        start_op(wire_op::call, {Value(std::forward<A>(args))...}, method, true));
  }
  /// A served file handle's print, answered (compare print_async, which asks for no answer).
  template <class... A>
  Future<Value> async_print(A&&... items) const {
    return Future<Value>(
        start_op(wire_op::file, {Value(std::forward<A>(items))...}, "print", false));
  }

  // --- Oneway calls: no answer is asked for, and the client batches them (up to
  // ClientOptions::oneway_batch calls per message, sent when full, after oneway_delay, or before
  // any other request on the connection). They run on the server in the order they were made, and
  // before any later request on the same connection: a later synchronous call sees their effects.
  // Flow control: at most ClientOptions::oneway_window calls are unacknowledged; a sender past it
  // waits for the server, so memory stays bounded and nothing is dropped. A oneway call that fails
  // on the server is logged and counted (patro::await_oneway). ---

  /// Calls a method, asking for no answer.
  template <class... A>
  void send(std::string_view method, A&&... args) const {
    send_op(wire_op::call, {Value(std::forward<A>(args))...}, method);
  }
  void send_set(const Value& v) const { send_op(wire_op::set, {v}, {}); }
  void send_add(const Value& delta) const { send_op(wire_op::add, {delta}, {}); }
  template <class... Args>
  void send_push(Args&&... items) const {
    send_op(wire_op::push, {Value(std::forward<Args>(items))...}, {});
  }
  /// A served file handle's print, asking for no answer (lines from many clients stay whole).
  template <class... A>
  void print_async(A&&... items) const {
    send_op(wire_op::file, {Value(std::forward<A>(items))...}, "print");
  }

  const ObjectId& id() const noexcept { return id_; }
  const Path& path() const noexcept { return path_; }
  const std::shared_ptr<detail::Connection>& connection() const noexcept { return conn_; }

  // Internal: operation codes used by the templates above.
  enum class detail_op { push, unshift };
  // Internal: the wire's operation codes (schemas/request.fbs) the templates above use.
  enum class wire_op : uint8_t {
    get = 0,
    set = 1,
    erase = 2,
    push = 7,
    add = 14,
    call = 16,
    file = 20
  };

 private:
  Proxy child(PathElem e) const;
  size_t list_op_size(detail_op op, std::vector<Value> items) const;
  std::vector<Value> served_call(std::string_view method, detail::CallArgs args, bool list) const;
  Proxy& assign_op(std::string_view op, const Value& v);
  std::shared_ptr<const detail::FutureCore> start_op(wire_op op, std::vector<Value> args,
                                                     std::string_view name, bool list) const;
  void send_op(wire_op op, std::vector<Value> args, std::string_view name) const;
  std::vector<Value> file_op(std::string_view op, std::vector<Value> args, bool list = false) const;

  friend class Value;  // Value(const Proxy&) carries the hold on

  std::shared_ptr<detail::Connection> conn_;
  ObjectId id_;
  Path path_;
  uint64_t fence_ = 0;
  std::shared_ptr<const void> hold_;  // the reference's claim it was made from (Reference::hold)
};

/// Connects to the broker named in the config and returns proxies to its objects in the order
/// they were served. config may be a Config, config text, or the name of a config file.
std::vector<Proxy> get_proxies(const Config& config, const ClientOptions& options = {});
std::vector<Proxy> get_proxies(std::string_view config_text_or_file,
                               const ClientOptions& options = {});
std::vector<Proxy> get_proxies(const char* config_text_or_file, const ClientOptions& options = {});

/// A proxy to the object registered under name at the broker whose client endpoint is given
/// ("tcp://host:port"; several, comma-separated, in fail-over order: "tcp://a:7170,tcp://b:7170").
/// Throws Error(not_found) if no broker knows the name.
Proxy get_proxy(const std::string& broker_endpoint, const std::string& name,
                const ClientOptions& options = {});
/// The same with several brokers' client endpoints, in fail-over order: the client talks to the
/// first that answers and moves to the next when it goes silent or its connection drops, resending
/// what was in flight (README "Several brokers"). A name unknown at the broker it talks to is
/// looked up at the others.
Proxy get_proxy(const std::vector<std::string>& brokers, const std::string& name,
                const ClientOptions& options = {});
/// "a,b,c" → {"a","b","c"} (spaces around commas trimmed, empty items dropped).
std::vector<std::string> split_endpoints(const std::string& list);

/// Callbacks (RMI's): a local object of a registered patro::Class or a patro::Code passed to a
/// server (an argument, or stored) is served by the client on the connection it went through, and
/// the server gets a reference it can call (Proxy(value).call(...)); its calls run on a thread of
/// the client's own. A local Array, Hash or Scalar is copied instead, unless marked by callback():
/// then it too is served, and the server reads and writes the client's container. Throws
/// Error(invalid_argument) for anything that is not a local object or container.
Value callback(Value local);

/// Stops serving the callbacks passed through p's connection (its callback host; the connection
/// stops it anyway when it closes): servers that call them then get Errc::server_unavailable. A
/// callback that holds a proxy of its own connection keeps that connection alive (the connection
/// serves the callback, which holds the connection): this breaks the cycle. Call it from outside
/// any callback; one called back on the host's thread is refused with Errc::invalid_argument.
void stop_callbacks(const Proxy& p);

/// What a connection counted since it opened (patro::Client::stats).
struct ClientStats {
  /// Requests made: calls, asynchronous calls, and batches of oneway calls (one each, however many
  /// calls it carries); requests to the broker itself (lookups) aside.
  uint64_t requests = 0;
  /// Their answers that came; direct_replies of them straight from their server (the direct path),
  /// the rest through the broker. A request that failed on the client (its deadline, a closed
  /// connection) has none.
  uint64_t replies = 0;
  uint64_t direct_replies = 0;
  /// Requests sent again (README "Retries": the broker restarted or went silent, no route yet, a
  /// direct connection died).
  uint64_t resends = 0;
  /// Moves to another broker (README "Several brokers").
  uint64_t moves = 0;
  /// Release calls sent for references the program dropped (one per object and batch).
  uint64_t releases = 0;
  /// Requests waiting for their answer now.
  size_t in_flight = 0;
  /// Objects the connection's callback host serves now (0: none runs): each callback object
  /// passed and not yet let go of by the servers it was passed to (README "Callbacks").
  size_t callbacks_served = 0;
  /// Log lines its servers forwarded to it (Client::forward_logs, README "Logging").
  uint64_t log_lines = 0;
  /// Messages that carried several requests straight to their server (a bundle: patro::Bundle,
  /// or requests queued together), and those that brought several replies back (docs/WIRE.md
  /// "Bundles"). Each of its requests and replies is counted in requests and replies too.
  uint64_t bundles_sent = 0;
  uint64_t bundles_received = 0;
};

/// A proxy's connection as a handle (Perl Patro's Patro::client($proxy)): what every proxy that
/// one get_proxies or get_proxy call made, nested ones included, shares. Copies share the
/// connection and keep it open, as proxies do. Any thread may use it.
class Client {
 public:
  /// Throws Error(invalid_argument) for a null connection.
  explicit Client(std::shared_ptr<detail::Connection> conn);

  /// The client endpoint of the broker the connection talks to now ("tcp://host:port"); after a
  /// move to another broker, that one.
  std::string broker() const;
  /// The connection's client id: the monitor that locks know, in every request it sends.
  uint64_t id() const noexcept;
  /// What the connection counted so far.
  ClientStats stats() const;
  /// Closes the connection now rather than when its last proxy goes: its callback host stops,
  /// calls in flight (futures included) complete with Errc::disconnected, the broker is told (so
  /// servers drop the client's locks and references), and every later call on any proxy of the
  /// connection fails with Errc::disconnected at once. Oneway calls not yet sent are dropped
  /// (patro::await_oneway first sends them and waits). Closing again does nothing. Refused with
  /// Errc::invalid_argument inside one of the connection's own callbacks (stopping its callback
  /// host would wait for itself).
  void close();
  bool closed() const noexcept;
  /// Log forwarding (Object::Remote's Log::Remote; as ClientOptions::forward_logs): from now on
  /// every server the connection talks to sends it its log lines at level or above, of the
  /// components that selections selects (PATRO_LOG_SELECTIONS's syntax; "" every one), over the
  /// connection, and they go to this process's log tagged with their origin, or to the
  /// connection's ClientOptions::on_log. Calling it again changes the level and selections.
  /// Throws Error(invalid_argument) for bad selections.
  void forward_logs(LogLevel level, std::string_view selections = {});
  /// Ends log forwarding: the servers stop sending lines.
  void stop_forwarding_logs();

  const std::shared_ptr<detail::Connection>& connection() const noexcept { return conn_; }

 private:
  std::shared_ptr<detail::Connection> conn_;
};

/// p's connection (Perl Patro's Patro::client). Throws Error(invalid_argument) for a proxy with
/// none.
Client client(const Proxy& p);

/// Sends the connection's open batch of oneway calls and waits until the server acknowledged every
/// oneway call made on it. Returns how many of them failed on the server since the last
/// await_oneway (each failure was logged). Throws Error(timeout) if they are not all acknowledged
/// within timeout.
uint64_t await_oneway(const Proxy& p, std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Calls sent together. While a Bundle lives, the calls made on its proxy's connection (by any
/// thread) wait instead of leaving at once; they leave together when the last Bundle on the
/// connection ends, when send() is called, or when a caller waits for an answer on the connection
/// (Future::get, a synchronous call), whichever comes first. Those that go straight to one server
/// (the direct path, to a server that reads wire version 3) leave as one message, a bundle
/// (docs/WIRE.md "Bundles"): one CURVE box and one wake-up of each thread on the way, however
/// many calls it holds (at most 64 calls, 64 KiB). A chain of calls on results not yet returned
/// (Future::async_call) made in one Bundle costs one message each way:
///
///     patro::Future<patro::Value> f;
///     {
///       patro::Bundle together(obj);
///       f = obj.async_call("make").async_call("next").async_call("ping");
///     }  // the three calls leave here, in one message
///     f.get();
///
/// Nothing else changes: each call is answered, retried and deduplicated on its own, in the order
/// made. Without a Bundle every call leaves as soon as it is made (several may still share a
/// bundle when they queue behind a busy socket).
class Bundle {
 public:
  /// Throws Error(invalid_argument) for a proxy with no connection.
  explicit Bundle(const Proxy& p);
  ~Bundle();
  Bundle(const Bundle&) = delete;
  Bundle& operator=(const Bundle&) = delete;
  /// Sends the calls waiting now; those made after it wait again, until the Bundle ends.
  void send();

 private:
  std::shared_ptr<detail::Connection> conn_;
};

/// The event source of p's connection, made with ClientOptions::continuations = event_loop: a
/// file descriptor that is readable while Future::then continuations wait to run. Add it to the
/// program's loop (poll, epoll, Boost.Asio's posix::stream_descriptor, libuv, GLib) and call
/// run_ready when it is readable; the continuations then run in that thread and in no other.
/// Answers are received meanwhile by the connection's heartbeat thread (or by any caller waiting on
/// the connection), which only queues the continuations. Waiting continuations hold their futures,
/// and so the connection: a program that stops running them keeps it open. Throws
/// Error(invalid_argument) for a connection made without event_loop.
int event_fd(const Proxy& p);
/// Runs the continuations ready on p's connection in the calling thread (those they queue wait for
/// the next call); returns how many ran. Throws as event_fd.
size_t run_ready(const Proxy& p);

/// Perl's ref(): the class name or basic type (HASH, ARRAY, SCALAR…) of what the proxy names;
/// empty if it names a plain value.
std::string ref(const Proxy& p);
/// Perl's reftype(): the basic type of what the proxy names; empty if it names a plain value.
std::string reftype(const Proxy& p);

/// Perl's can: whether the served object has the method (false for a container).
bool can(const Proxy& p, std::string_view method);
/// Perl's isa: whether what the proxy names is a served object of the patro::Class registered as
/// class_name, or of a class that names it as a base (Class::base), through any number of
/// levels. False for a container, code, a file handle or a plain value. A server older than this
/// operation: Error(unsupported).
bool isa(const Proxy& p, std::string_view class_name);

/// Object::Remote's new::on: a new object made on the server by the factory registered as name in
/// the served patro::Registry that p names (or the registry's new_object method).
template <class... A>
Proxy make(const Proxy& registry, std::string_view name, A&&... args) {
  return Proxy(registry.call("new_object", Value(name), std::forward<A>(args)...));
}
/// Object::Remote's can::on: a proxy to the function registered as name in the served Registry.
Proxy function(const Proxy& registry, std::string_view name);

/// A binary operator of the served object p names (Perl's overload); swapped: p was the right
/// operand. Used by the operators below.
Value detail_binary_op(const Proxy& p, std::string_view op, const Value& other, bool swapped);

namespace detail {
template <class P>
concept proxy_type = std::same_as<std::remove_cvref_t<P>, Proxy>;
template <class V>
concept operand = !proxy_type<V> && std::constructible_from<Value, V>;
}  // namespace detail

// Operators on proxies: the served class's operators run on the server. Arithmetic gives a Value
// (a reference where the class returns a new object: convert it to a Proxy); comparisons a bool.
#define PATRO_PROXY_OPERATOR(OP, RESULT, CONVERT)                               \
  template <detail::proxy_type P, detail::operand V>                            \
  RESULT operator OP(P&& p, V&& v) {                                            \
    return CONVERT(detail_binary_op(p, #OP, Value(std::forward<V>(v)), false)); \
  }                                                                             \
  template <detail::operand V, detail::proxy_type P>                            \
  RESULT operator OP(V&& v, P&& p) {                                            \
    return CONVERT(detail_binary_op(p, #OP, Value(std::forward<V>(v)), true));  \
  }                                                                             \
  template <detail::proxy_type P, detail::proxy_type Q>                         \
  RESULT operator OP(P&& p, Q&& q) {                                            \
    return CONVERT(detail_binary_op(p, #OP, Value(q), false));                  \
  }
#define PATRO_PROXY_AS_VALUE(x) (x)
PATRO_PROXY_OPERATOR(+, Value, PATRO_PROXY_AS_VALUE)
PATRO_PROXY_OPERATOR(-, Value, PATRO_PROXY_AS_VALUE)
PATRO_PROXY_OPERATOR(*, Value, PATRO_PROXY_AS_VALUE)
PATRO_PROXY_OPERATOR(/, Value, PATRO_PROXY_AS_VALUE)
PATRO_PROXY_OPERATOR(%, Value, PATRO_PROXY_AS_VALUE)
PATRO_PROXY_OPERATOR(==, bool, truthy)
PATRO_PROXY_OPERATOR(!=, bool, truthy)
PATRO_PROXY_OPERATOR(<, bool, truthy)
PATRO_PROXY_OPERATOR(<=, bool, truthy)
PATRO_PROXY_OPERATOR(>, bool, truthy)
PATRO_PROXY_OPERATOR(>=, bool, truthy)
#undef PATRO_PROXY_AS_VALUE
#undef PATRO_PROXY_OPERATOR

}  // namespace patro
PATRO_PUBLIC_END
