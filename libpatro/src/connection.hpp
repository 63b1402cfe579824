// A client connection to a broker: one DEALER socket, many requests in flight, replies matched by
// request id. There is no I/O thread: the thread that waits for a reply does the socket I/O itself
// (leader/follower), so a call costs what a raw ZeroMQ round trip costs. A small heartbeat thread
// keeps the connection alive while nobody is calling. Any thread may use a Connection.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

#include "mutex.hpp"
#include "patro/options.hpp"
#include "patro/value.hpp"
#include "wire.hpp"

namespace patro::detail {

struct NameInfo {
  ObjectId id;
  std::string type_name;
  std::string reftype;
};

/// Per-call settings beyond the operation itself.
struct CallExtras {
  /// The call's deadline; none: ClientOptions::call_timeout.
  std::optional<std::chrono::milliseconds> timeout;
  /// A fencing token to send (0: none).
  uint64_t fence = 0;
  /// Where to put the arguments the call changed (index, new value), if wanted.
  std::vector<std::pair<uint32_t, Value>>* changed = nullptr;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::vector<std::string> brokers, const ClientOptions& options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Says hello to the first broker that answers; throws Error(broker_unreachable).
  void connect();

  /// Runs one operation and returns its results; throws Error (RemoteError for what served code
  /// threw or a failed server-side system call). The arguments the call changed go to changed.
  ValueArray call(const ObjectId& id, wire::Op op, const Path& path, const ValueArray& args,
                  std::string_view name = {}, wire::CallContext context = wire::CallContext::Scalar,
                  const CallExtras& extras = {});

  /// Resolves a name in the broker's registry.
  std::optional<NameInfo> lookup(const std::string& name);

  /// Sends a control request (fb: a finished Control) to the broker and returns the body of its
  /// answer; throws Error(timeout) after call_timeout.
  zmq::message_t control(Command command, const flatbuffers::FlatBufferBuilder& fb);

  uint64_t client_id() const noexcept { return client_id_; }
  const ClientOptions& options() const noexcept { return options_; }
  const std::string& endpoint() const noexcept { return endpoint_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Slot {
    uint64_t server = 0;
    wire::Op op = wire::Op::Get;
    bool done = false;
    Errc error = Errc::ok;
    std::string error_text;
    zmq::message_t body;
  };

  /// Sends frames, waits for the body of the answer to request_id; throws Error.
  zmq::message_t exchange(uint64_t request_id, Multipart frames, Clock::time_point deadline,
                          uint64_t server, wire::Op op);
  void submit(Multipart frames) PATRO_EXCLUDES(io_mu_, out_mu_);
  void release_io() PATRO_RELEASE(io_mu_);
  /// Socket work by whoever holds io_mu_: flush the outbox, heartbeat, poll until the slot
  /// request_id is answered, someone wants the socket, or until.
  void pump(uint64_t request_id, Clock::time_point until) PATRO_REQUIRES(io_mu_);
  void flush() PATRO_REQUIRES(io_mu_);
  void dispatch(Multipart& msg) PATRO_REQUIRES(io_mu_);
  void fail_pending(Errc code, const std::string& text, std::optional<uint64_t> server);
  void heartbeat_main();
  void wake() noexcept;

  const std::vector<std::string> brokers_;
  const ClientOptions options_;
  const uint64_t client_id_;
  std::string endpoint_;
  std::atomic<uint64_t> next_request_id_{1};

  zmq::context_t ctx_{1};
  int wake_fd_ = -1;  // eventfd: someone wants the socket

  Mutex io_mu_;
  zmq::socket_t sock_ PATRO_GUARDED_BY(io_mu_);
  // The faster of ours and the broker's (from its Welcome), so the broker never thinks us dead.
  std::atomic<int64_t> heartbeat_ms_{0};
  // How long the broker may be silent before we call it gone: its interval times its liveness.
  std::atomic<int64_t> broker_window_ms_{0};
  Clock::time_point last_heard_ PATRO_GUARDED_BY(io_mu_);
  Clock::time_point next_heartbeat_ PATRO_GUARDED_BY(io_mu_);

  Mutex out_mu_;
  std::deque<Multipart> outbox_ PATRO_GUARDED_BY(out_mu_);

  Mutex state_mu_;
  CondVar state_cv_;
  std::unordered_map<uint64_t, Slot> slots_ PATRO_GUARDED_BY(state_mu_);
  uint64_t io_generation_ PATRO_GUARDED_BY(state_mu_) = 0;
  bool stopping_ PATRO_GUARDED_BY(state_mu_) = false;

  std::thread heartbeat_;
};

}  // namespace patro::detail
