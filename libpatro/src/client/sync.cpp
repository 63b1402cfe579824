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

// "No timeout" still has a bound, max_lock_wait, and the server applies it too: a server that
// granted a lock after its client had given up would leave a lock that nobody knows it holds.
Value bound_arg(const Proxy& p) {
  return Value(p.connection()->options().max_lock_wait.count());
}

// How long the client waits for the server's answer: the server's own bound plus the ordinary
// call deadline as grace, so the server's answer (grant or timeout) always comes first.
std::chrono::milliseconds deadline_for(const Proxy& p, const Timeout& t) {
  const ClientOptions& o = p.connection()->options();
  const auto budget = t ? std::max(*t, std::chrono::milliseconds(0)) : o.max_lock_wait;
  return std::min(budget, o.max_lock_wait) + o.call_timeout;
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
  return outcome(run(p, wire::Op::Lock, {timeout_arg(timeout), Value(steal), bound_arg(p)},
                     deadline_for(p, timeout)));
}

SyncResult unlock(const Proxy& p, int64_t count) {
  return outcome(run(p, wire::Op::Unlock, {Value(count)}));
}

SyncResult wait(const Proxy& p, Timeout timeout) {
  return outcome(
      run(p, wire::Op::Wait, {timeout_arg(timeout), bound_arg(p)}, deadline_for(p, timeout)));
}

SyncResult notify(const Proxy& p, int64_t count) {
  return outcome(run(p, wire::Op::Notify, {Value(count)}));
}

LockState lock_state(const Proxy& p) {
  auto r = run(p, wire::Op::LockState, {});
  if (r.size() != 1) throw Error(Errc::bad_message, "a lock_state reply needs 1 result");
  return LockState(r[0].as<int>());
}

LockInfo lock_info(const Proxy& p) {
  auto r = run(p, wire::Op::LockInfo, {});
  if (r.size() != 5) throw Error(Errc::bad_message, "a lock_info reply needs 5 results");
  return LockInfo{
      static_cast<uint64_t>(r[0].as<int64_t>()), static_cast<uint32_t>(r[1].as<int64_t>()),
      static_cast<uint64_t>(r[2].as<int64_t>()), static_cast<uint64_t>(r[3].as<int64_t>()),
      static_cast<uint64_t>(r[4].as<int64_t>())};
}

}  // namespace patro
