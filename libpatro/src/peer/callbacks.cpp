// Callbacks both ways, which need a client and a server in one process: a client's local objects
// served by a callback host (a server of one lane per connection that needs it, registered with
// the connection's broker), and a server's own client connection, on which it calls the objects of
// other servers (callback objects above all) that it is sent references to. The factories are
// installed when the library loads; the families below call them.
#include "connection.hpp"
#include "log.hpp"
#include "remote_refs.hpp"
#include "server.hpp"

namespace patro::detail {
namespace {

class CallbackServer final : public CallbackHost {
 public:
  explicit CallbackServer(Connection& conn) {
    ServerOptions o;
    o.broker = conn.broker_server_endpoint();
    o.curve = conn.options().curve;
    o.threads = 2;  // a callback that calls another of this client's callbacks does not wait
    o.limits = conn.options().limits;
    o.reference_lease = conn.options().callback_lease;
    server_ = std::make_shared<Server>(o, std::vector<Named>{});
    server_->start();
    PATRO_LOG(debug, "client") << "serving callbacks at " << o.broker;
  }
  ~CallbackServer() override { server_->stop(); }
  CallbackServer(const CallbackServer&) = delete;
  CallbackServer& operator=(const CallbackServer&) = delete;

  Value serve(const Reference& r) override { return server_->serve_callback(r.node); }
  bool on_host_thread() const override { return server_->on_lane_thread(); }
  uint64_t server_id() const override { return server_->server_id(); }
  uint64_t count_pass(const ObjectId& id) override { return server_->count_pass(id); }
  size_t served() const override { return server_->objects_served(); }

 private:
  std::shared_ptr<Server> server_;
};

std::unique_ptr<CallbackHost> make_callback_host(Connection& conn) {
  return std::make_unique<CallbackServer>(conn);
}

RemoteRefs::Maker open_connection(const std::vector<std::string>& brokers,
                                  const CurveOptions& curve) {
  ClientOptions o;
  o.curve = curve;
  auto conn = std::make_shared<Connection>(brokers, o);
  conn->connect();
  return [conn](const ObjectId& id, const std::string& type_name, const std::string& reftype,
                uint64_t pass) {
    return Value(Reference{nullptr, conn, id, {}, type_name, reftype, conn->hold(id, pass), false});
  };
}

struct Install {
  Install() {
    set_callback_host_factory(&make_callback_host);
    RemoteRefs::set_factory(&open_connection);
  }
};
const Install install;

}  // namespace
}  // namespace patro::detail
