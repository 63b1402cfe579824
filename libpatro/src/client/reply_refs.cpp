#include "reply_refs.hpp"

#include "oneway_batcher.hpp"
#include "wire.hpp"

namespace patro::detail {
namespace {

class QueuedRelease final : public ReplyRelease {
 public:
  QueuedRelease(std::shared_ptr<ReleaseQueue> queue, const Limits& limits)
      : queue_(std::move(queue)), limits_(limits) {}

  void release_unread(const zmq::message_t& reply, bool results,
                      bool changed) const noexcept override {
    try {
      AlignedScratch scratch;
      const wire::Reply* r = verified_reply(reply, limits_, scratch);
      if (r == nullptr || r->status() != wire::Status::Ok) return;
      const RefReader let_go = [this](const wire::Ref& ref) {
        queue_->add(ObjectId{ref.server(), ref.object()});
        return Value();
      };
      if (changed && r->changed_args())
        for (const auto* c : *r->changed_args()) (void)decode_value(c->value(), let_go);
      if (results) (void)decode_values(r->results(), let_go);
    } catch (...) {
      // A reply that cannot be read: its references stay with the server until we disconnect.
    }
  }

 private:
  const std::shared_ptr<ReleaseQueue> queue_;
  const Limits limits_;
};

}  // namespace

std::shared_ptr<const ReplyRelease> reply_release(std::shared_ptr<ReleaseQueue> queue,
                                                  const Limits& limits) {
  return std::make_shared<const QueuedRelease>(std::move(queue), limits);
}

}  // namespace patro::detail
