// Runs one verified request against the served objects and builds its reply. One Executor per
// worker thread (it reuses its FlatBuffers builder); the objects are shared and each operation
// locks only the node it works on.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <optional>
#include <string>

#include "deferred.hpp"
#include "lock_table.hpp"
#include "object_table.hpp"
#include "patro/options.hpp"
#include "remote_refs.hpp"
#include "served_ops.hpp"
#include "wire.hpp"

namespace patro::detail {

/// The request barrier, called inside a catch block: the error reply for the exception being
/// handled. A patro::Error keeps its code (a RemoteError its type), bad_alloc is overloaded,
/// anything else is internal and logged. Throws only if it cannot allocate the reply.
zmq::message_t exception_reply(uint64_t request_id);
/// The same for a oneway call, which has no reply: the text its failure is counted with.
std::string exception_text();

class Executor {
 public:
  /// locks (may be null) is consulted for fencing tokens.
  Executor(ObjectTable& objects, const ServerOptions& options, LockTable* locks = nullptr)
      : objects_(objects), options_(options), limits_(options.limits), locks_(locks) {}

  /// The Reply body for req; an empty message when a method will reply later (patro::Deferred)
  /// through sink. routing is the caller's routing id at the broker. Never throws for anything a
  /// peer sent. deadline: the request's, on this host's clock (the dispatcher works it out).
  zmq::message_t execute(const wire::Request& req, std::string_view routing,
                         std::chrono::steady_clock::time_point deadline);

  /// How references to other servers' objects are made callable (null: they are not).
  void set_remote_refs(RemoteRefs* refs) noexcept { remote_refs_ = refs; }

  /// Where late replies go.
  void set_reply_sink(std::weak_ptr<ReplySink> sink) { sink_ = std::move(sink); }

  /// A successful Reply body with these results (and the arguments a call changed) for `client`
  /// (the references it carries are counted as sent to that client). The lane's one reply
  /// encoder: immediate, owed and late replies are all encoded here.
  zmq::message_t results_reply(uint64_t client, uint64_t request_id, const ValueArray& results,
                               const ChangedArgs* changed = nullptr);

  /// Runs a oneway call (no reply); the error's text if it failed. Never throws for anything a
  /// peer sent.
  std::optional<std::string> execute_oneway(const wire::Request& req,
                                            std::chrono::steady_clock::time_point deadline);

  /// The object whose lock a lock request names: the request's object, or the object stored at
  /// its path. Throws Error (unknown_object, type_mismatch).
  uint64_t lock_object(const wire::Request& req);

 private:
  /// One request's operands, decoded once for the handler the op table names.
  struct OpCall {
    const wire::Request& req;
    wire::Op op;
    std::shared_ptr<Node> root;
    const Path& path;
    ValueArray& args;
  };
  ValueArray run(const wire::Request& req);
  ValueArray run_element(OpCall& c);    // get, set, add, erase, exists, describe
  ValueArray run_container(OpCall& c);  // size, keys, values, clear, push, pop, splice...
  ValueArray run_served_op(OpCall& c);  // call, can, operator, convert, file
  Value resolve_ref(const wire::Ref& ref);
  flatbuffers::Offset<wire::Ref> write_ref(flatbuffers::FlatBufferBuilder& fb, const Reference& r,
                                           uint64_t client);

  ObjectTable& objects_;
  const ServerOptions& options_;
  const Limits& limits_;
  LockTable* locks_;
  RemoteRefs* remote_refs_ = nullptr;
  ChangedArgs changed_;  // arguments the current request's call changed
  std::weak_ptr<ReplySink> sink_;
  ReplyRoute route_;       // the current request's
  bool deferred_ = false;  // the current request's method replies later
  flatbuffers::FlatBufferBuilder fb_{1024};
};

}  // namespace patro::detail
