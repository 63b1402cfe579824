// Runs one verified request against the served objects and the lock table, and builds its reply.
// Each wire::Op has one named handler, in one table (executor.cpp): the op table's group
// (wire/op_table.hpp) says what a request's operands are (the object and its path, the object
// whose lock it names, or nothing for a release), the handler does the work. One Executor per
// lane (it reuses its FlatBuffers builder); the objects are shared and each operation locks only
// the node it works on.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "client_rights.hpp"
#include "deferred.hpp"
#include "lock_table.hpp"
#include "object_table.hpp"
#include "patro/options.hpp"
#include "remote_refs.hpp"
#include "served_ops.hpp"
#include "wire.hpp"

namespace patro::detail {

/// What became of a request.
enum class Dispatched {
  reply,     // its reply is ready: send it now
  parked,    // a lock wait: the lock table owes its reply (a grant, or its deadline)
  deferred,  // a patro::Deferred answers later, through the lane's outbox
  running,   // a copy of a request still running: its reply comes when that finishes
};

/// The request barrier, called inside a catch block: the error reply for the exception being
/// handled. A patro::Error keeps its code (a RemoteError its type), bad_alloc is overloaded,
/// anything else is internal and logged. Throws only if it cannot allocate the reply.
zmq::message_t exception_reply(uint64_t request_id);
/// The same for a oneway call, which has no reply: the text its failure is counted with.
std::string exception_text();

class Executor {
 public:
  /// locks runs the lock operations and is consulted for fencing tokens (null: no fencing, and a
  /// lock operation fails as internal).
  Executor(ObjectTable& objects, const ServerOptions& options, LockTable* locks = nullptr)
      : objects_(objects), options_(options), limits_(options.limits), locks_(locks) {}

  /// Runs req. reply: its Reply body when it is ready now (Dispatched::reply); none when a method
  /// replies later through the sink (deferred: patro::Deferred) or a lock operation parked its
  /// caller (parked: the lock table owes the reply). routing is the caller's routing id at the
  /// broker. owed: replies a lock operation owes other parked callers (a grant), to send after
  /// this one. Never throws for anything a peer sent. deadline: the request's, on this host's
  /// clock (the dispatcher works it out); a parked caller waits no longer.
  Dispatched execute(const wire::Request& req, std::string_view routing,
                     std::chrono::steady_clock::time_point deadline, zmq::message_t& reply,
                     std::vector<DeferredReply>& owed);

  /// The rights of the client of the call being run (client_rights.hpp) for as long as the scope
  /// lives: a read-only key calls only methods marked read-only, and a key limited to some names
  /// cannot pass references to objects it cannot reach. null: everything.
  class RightsScope {
   public:
    RightsScope(Executor& e, const AllowEntry* rights, const ClientRights* table, uint64_t client)
        : e_(e) {
      e_.rights_ = rights;
      e_.rights_table_ = table;
      e_.rights_client_ = client;
    }
    ~RightsScope() { e_.rights_ = nullptr; }
    RightsScope(const RightsScope&) = delete;
    RightsScope& operator=(const RightsScope&) = delete;

   private:
    Executor& e_;
  };
  /// A pipelined request's object (the result of the request it was made on), used in place of
  /// the request's own server and object until cleared (nullopt). The dispatcher sets it.
  void set_target(std::optional<ObjectId> target) noexcept { target_ = target; }
  /// The object the request names (its own, or the pipelined target set above).
  ObjectId target_of(const wire::Request& req) const noexcept {
    return target_ ? *target_ : ObjectId{req.server(), req.object()};
  }

  /// How references to other servers' objects are made callable (null: they are not).
  void set_remote_refs(RemoteRefs* refs) noexcept { remote_refs_ = refs; }

  /// Where late replies go.
  void set_reply_sink(std::weak_ptr<ReplySink> sink) { sink_ = std::move(sink); }

  /// A successful Reply body with these results (and the arguments a call changed) for `client`
  /// (the references it carries are counted as sent to that client). The lane's one reply
  /// encoder: immediate, owed and late replies are all encoded here.
  zmq::message_t results_reply(uint64_t client, uint64_t request_id, const ValueArray& results,
                               const ChangedArgs* changed = nullptr);

  /// Runs a oneway call (no reply; one that may travel in a oneway batch, op_info(op).oneway);
  /// the error's text if it failed. Never throws for anything a peer sent.
  std::optional<std::string> execute_oneway(const wire::Request& req,
                                            std::chrono::steady_clock::time_point deadline);

  /// How many handlers the table has for op (one for each operation the op table knows, none for
  /// the others).
  static size_t handlers_of(wire::Op op) noexcept;

 private:
  /// One request's operands, decoded once by its group (op_info(op).handler) for its handler.
  struct OpCall {
    const wire::Request& req;
    wire::Op op;
    std::shared_ptr<Node> root;  // the request's object (null for a lock operation, a release)
    const Path& path;
    ValueArray& args;
    uint64_t lock_object = 0;  // a lock operation's: the object whose lock it names
  };
  using Handler = ValueArray (Executor::*)(OpCall&);
  struct HandlerRow {
    wire::Op op;
    Handler run;
  };
  friend struct HandlerTable;
  /// The handler of each operation, by its number (executor.cpp: null for an unknown one).
  static const std::array<Handler, 256> kHandlerByOp;

  ValueArray run(const wire::Request& req);
  /// The object whose lock a lock request names: the request's object, or the object stored at
  /// its path. Throws Error (unknown_object, type_mismatch).
  uint64_t lock_object(const wire::Request& req);

  // The handlers, one per operation (a few share one where the work is the same).
  ValueArray get(OpCall& c);
  ValueArray set(OpCall& c);
  ValueArray add(OpCall& c);
  ValueArray erase_or_exists(OpCall& c);  // erase, exists
  ValueArray copy(OpCall& c);
  ValueArray describe(OpCall& c);
  ValueArray contents(OpCall& c);    // size, keys, values, clear
  ValueArray slice(OpCall& c);       // one page of a container
  ValueArray grow_array(OpCall& c);  // push, unshift, splice, resize
  ValueArray take_end(OpCall& c);    // pop, shift
  ValueArray served(OpCall& c);      // call, can, isa, operator, convert, file
  ValueArray lock(OpCall& c);
  ValueArray unlock(OpCall& c);
  ValueArray wait(OpCall& c);
  ValueArray notify(OpCall& c);
  ValueArray lock_info(OpCall& c);
  ValueArray lock_state(OpCall& c);
  ValueArray release(OpCall& c);
  /// A lock operation's results, or none with the caller parked (parked_).
  ValueArray outcome_or_park(const std::optional<SyncOutcome>& o);
  Value resolve_ref(const wire::Ref& ref);
  flatbuffers::Offset<wire::Ref> write_ref(flatbuffers::FlatBufferBuilder& fb, const Reference& r,
                                           uint64_t client);

  ObjectTable& objects_;
  const ServerOptions& options_;
  const Limits& limits_;
  LockTable* locks_;
  RemoteRefs* remote_refs_ = nullptr;
  // The current call's client's rights (RightsScope; null: everything).
  const AllowEntry* rights_ = nullptr;
  const ClientRights* rights_table_ = nullptr;
  uint64_t rights_client_ = 0;
  ChangedArgs changed_;             // arguments the current request's call changed
  std::optional<ObjectId> target_;  // the current request's, when pipelined
  std::weak_ptr<ReplySink> sink_;
  ReplyRoute route_;       // the current request's
  bool deferred_ = false;  // the current request's method replies later
  bool parked_ = false;    // the current request's caller waits for a lock or a notify
  std::vector<DeferredReply>* owed_ = nullptr;  // the current request's (null: a oneway call)
  flatbuffers::FlatBufferBuilder fb_{1024};
};

}  // namespace patro::detail
