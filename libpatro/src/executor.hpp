// Runs one verified request against the served objects and builds its reply. One Executor per
// worker thread (it reuses its FlatBuffers builder); the objects are shared and each operation
// locks only the node it works on.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include "object_table.hpp"
#include "patro/options.hpp"
#include "served_ops.hpp"
#include "wire.hpp"

namespace patro::detail {

class Executor {
 public:
  Executor(ObjectTable& objects, const ServerOptions& options)
      : objects_(objects), options_(options), limits_(options.limits) {}

  /// The Reply body for req. Never throws for anything a peer sent.
  zmq::message_t execute(const wire::Request& req);

 private:
  ValueArray run(const wire::Request& req);
  Value resolve_ref(const wire::Ref& ref);
  flatbuffers::Offset<wire::Ref> write_ref(flatbuffers::FlatBufferBuilder& fb, const Reference& r);

  ObjectTable& objects_;
  const ServerOptions& options_;
  const Limits& limits_;
  ChangedArgs changed_;  // arguments the current request's call changed
  flatbuffers::FlatBufferBuilder fb_{1024};
};

}  // namespace patro::detail
