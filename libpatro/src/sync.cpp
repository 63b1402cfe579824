// The client side of monitor locks: each operation is one request; a lock or wait that must
// wait is parked on the server, and its reply comes when it is granted or times out.
#include "patro/sync.hpp"

#include "connection.hpp"

namespace patro {

namespace {

SyncResult outcome(const ValueArray& r) {
  if (r.size() != 4) throw Error(Errc::bad_message, "a lock reply needs 4 results");
  return SyncResult{r[0].as<bool>(), r[1].as<int64_t>(), r[2].as<int>(),
                    static_cast<uint64_t>(r[3].as<int64_t>())};
}

Value timeout_arg(const Timeout& t) {
  return t ? Value(t->count()) : Value();
}

// How long the client waits for the server's answer: the lock's own timeout plus the ordinary
// call deadline as grace, or max_lock_wait when the lock blocks without a timeout.
std::chrono::milliseconds deadline_for(const Proxy& p, const Timeout& t) {
  const ClientOptions& o = p.connection()->options();
  if (!t) return o.max_lock_wait;
  const auto budget = std::max(*t, std::chrono::milliseconds(0));
  return budget >= o.max_lock_wait ? o.max_lock_wait : budget + o.call_timeout;
}

ValueArray run(const Proxy& p, wire::Op op, ValueArray args, Timeout deadline = std::nullopt) {
  return p.connection()->call(p.id(), op, p.path(), args, {}, wire::CallContext::Scalar,
                              detail::CallExtras{deadline, 0});
}

}  // namespace

std::string LockState::name() const {
  switch (code_) {
    case 0:
      return "NULL";
    case 1:
      return "WAIT";
    case 2:
      return "NOTIFY";
    case 3:
      return "STOLEN";
    default:
      return code_ >= 4 ? "LOCK" : "UNKNOWN";
  }
}

SyncResult lock(const Proxy& p, Timeout timeout, bool steal) {
  return outcome(
      run(p, wire::Op::Lock, {timeout_arg(timeout), Value(steal)}, deadline_for(p, timeout)));
}

SyncResult unlock(const Proxy& p, int64_t count) {
  return outcome(run(p, wire::Op::Unlock, {Value(count)}));
}

SyncResult wait(const Proxy& p, Timeout timeout) {
  return outcome(run(p, wire::Op::Wait, {timeout_arg(timeout)}, deadline_for(p, timeout)));
}

SyncResult notify(const Proxy& p, int64_t count) {
  return outcome(run(p, wire::Op::Notify, {Value(count)}));
}

LockState lock_state(const Proxy& p) {
  auto r = run(p, wire::Op::LockState, {});
  if (r.size() != 1) throw Error(Errc::bad_message, "a lock_state reply needs 1 result");
  return LockState(r[0].as<int>());
}

}  // namespace patro
