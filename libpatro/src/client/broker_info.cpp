// patro::broker_info: a client's question to a broker about its registry, servers and counters.
#include <algorithm>

#include "connection.hpp"
#include "patro/broker.hpp"

namespace patro {

BrokerInfo broker_info(const std::string& endpoint, const ClientOptions& options) {
  auto conn = std::make_shared<detail::Connection>(std::vector<std::string>{endpoint}, options);
  conn->connect();
  flatbuffers::FlatBufferBuilder fb(64);
  fb.Finish(wire::CreateControl(fb, wire::ControlBody::BrokerInfoRequest,
                                wire::CreateBrokerInfoRequest(fb).Union()),
            wire::ControlIdentifier());
  zmq::message_t body = conn->control(detail::Command::broker_info, fb);
  detail::AlignedScratch scratch;
  const wire::Control* c = detail::verified_control(body, options.limits, scratch);
  const wire::BrokerInfoReply* r = c ? c->body_as_BrokerInfoReply() : nullptr;
  if (r == nullptr) throw Error(Errc::bad_message, "a broker info reply failed verification");
  BrokerInfo info;
  if (r->names()) {
    for (const auto* nb : *r->names()) {
      if (!nb->name()) continue;
      info.names.push_back(BrokerName{nb->name()->str(), ObjectId{nb->server(), nb->object()},
                                      nb->type_name() ? nb->type_name()->str() : std::string(),
                                      nb->reftype() ? nb->reftype()->str() : std::string()});
    }
  }
  if (r->servers()) {
    for (const auto* s : *r->servers())
      info.servers.push_back(BrokerServer{s->server_id(), s->lanes(), s->clients(), s->dedup_hits(),
                                          s->expired(), s->direct(), s->brokered(),
                                          s->not_authorized()});
  }
  std::sort(info.names.begin(), info.names.end(),
            [](const BrokerName& a, const BrokerName& b) { return a.name < b.name; });
  std::sort(info.servers.begin(), info.servers.end(),
            [](const BrokerServer& a, const BrokerServer& b) { return a.id < b.id; });
  info.stats.routed = r->routed();
  info.stats.replies = r->replies();
  info.stats.dropped = r->dropped();
  info.stats.rejected = r->rejected();
  info.stats.clients = r->clients();
  info.stats.servers = r->servers_now();
  info.stats.retried = r->retried();
  info.stats.dedup_hits = r->dedup_hits();
  info.stats.expired = r->expired();
  info.stats.refused = r->refused();
  return info;
}

}  // namespace patro
