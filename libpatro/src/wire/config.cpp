#include "patro/config.hpp"

#include <fcntl.h>
#include <flatbuffers/idl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "config_generated.h"
#include "config_schema.hpp"

namespace patro {

namespace {
std::unique_ptr<flatbuffers::Parser> config_parser() {
  flatbuffers::IDLOptions o;
  o.strict_json = true;
  o.indent_step = -1;  // one line
  o.skip_unexpected_fields_in_json = true;
  auto parser = std::make_unique<flatbuffers::Parser>(o);
  if (!parser->Parse(detail::kConfigSchema))
    throw Error(Errc::internal, "config schema does not parse: " + parser->error_);
  return parser;
}
}  // namespace

Config::Config(std::vector<std::string> brokers, std::vector<ObjectEntry> objects)
    : brokers_(std::move(brokers)), objects_(std::move(objects)) {}

Config Config::parse(std::string_view text) {
  std::string json(text);
  while (!json.empty() && (json.back() == '\n' || json.back() == '\r' || json.back() == ' '))
    json.pop_back();
  if (json.empty() || json.front() != '{')
    throw Error(Errc::bad_config,
                "config text must be one JSON object, as Config::to_string() "
                "writes it");
  auto parser_ptr = config_parser();
  flatbuffers::Parser& parser = *parser_ptr;
  if (!parser.Parse(json.c_str()))
    throw Error(Errc::bad_config, "config does not parse: " + parser.error_);
  flatbuffers::Verifier verifier(parser.builder_.GetBufferPointer(), parser.builder_.GetSize());
  if (!verifier.VerifyBuffer<config::Config>(nullptr))
    throw Error(Errc::bad_config, "config does not verify");
  const auto* c = flatbuffers::GetRoot<config::Config>(parser.builder_.GetBufferPointer());
  if (c->version() != 1)
    throw Error(Errc::bad_config, "config version " + std::to_string(c->version()) +
                                      " is not supported (this is version 1)");
  std::vector<std::string> brokers;
  if (c->brokers())
    for (const auto* b : *c->brokers())
      if (b->size() > 0) brokers.push_back(b->str());
  if (brokers.empty()) throw Error(Errc::bad_config, "config names no broker address");
  std::vector<ObjectEntry> objects;
  if (c->objects()) {
    for (const auto* o : *c->objects()) {
      if (!o->id()) throw Error(Errc::bad_config, "config object without an id");
      objects.push_back(ObjectEntry{ObjectId::from_hex(o->id()->string_view()),
                                    o->type_name() ? o->type_name()->str() : std::string(),
                                    o->reftype() ? o->reftype()->str() : std::string()});
    }
  }
  Config config(std::move(brokers), std::move(objects));
  if (c->broker_key() && c->broker_key()->size() > 0) {
    if (!is_curve_key(c->broker_key()->string_view()))
      throw Error(Errc::bad_config, "config broker_key is not a Z85 CURVE key");
    config.set_broker_key(c->broker_key()->str());
  }
  if (c->client_secret_key() && c->client_secret_key()->size() > 0) {
    CurveKeyPair keys{c->client_public_key() ? c->client_public_key()->str() : std::string(),
                      c->client_secret_key()->str()};
    if (!is_curve_key(keys.public_key) || !is_curve_key(keys.secret_key))
      throw Error(Errc::bad_config, "config client key pair is not two Z85 CURVE keys");
    config.set_client_key(std::move(keys));
  }
  if (c->route() && c->route()->size() > 0) {
    const std::string route = c->route()->str();
    if (route != "auto" && route != "direct" && route != "broker")
      throw Error(Errc::bad_config,
                  "config route '" + route + "' is not one of auto, direct, broker");
    config.set_route(route);
  }
  return config;
}

Config Config::from_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(Errc::bad_config, "cannot read config file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str());
}

std::string Config::to_string() const {
  flatbuffers::FlatBufferBuilder fb(512);
  std::vector<flatbuffers::Offset<config::ObjectEntry>> objs;
  for (const auto& o : objects_)
    objs.push_back(config::CreateObjectEntryDirect(fb, o.id.to_hex().c_str(), o.type_name.c_str(),
                                                   o.reftype.c_str()));
  auto brokers = fb.CreateVectorOfStrings(brokers_);
  auto objects = fb.CreateVector(objs);
  const auto string_or_none = [&fb](const std::string& text) {
    return text.empty() ? flatbuffers::Offset<flatbuffers::String>() : fb.CreateString(text);
  };
  auto broker_key = string_or_none(broker_key_);
  auto client_public = string_or_none(client_key_.public_key);
  auto client_secret = string_or_none(client_key_.secret_key);
  auto route = string_or_none(route_);
  config::ConfigBuilder b(fb);
  b.add_version(1);
  b.add_brokers(brokers);
  b.add_objects(objects);
  if (!broker_key.IsNull()) b.add_broker_key(broker_key);
  if (!client_public.IsNull()) b.add_client_public_key(client_public);
  if (!client_secret.IsNull()) b.add_client_secret_key(client_secret);
  if (!route.IsNull()) b.add_route(route);
  fb.Finish(b.Finish());
  fb.ForceDefaults(false);
  auto parser = config_parser();
  std::string out;
  if (!flatbuffers::GenerateText(*parser, fb.GetBufferPointer(), &out))
    throw Error(Errc::internal, "cannot write config text");
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

void Config::to_file(const std::string& path) const {
  const std::string text = to_string();
  // Write to a temporary beside it and rename, so a reader never sees half a config.
  const std::string tmp = path + ".tmp";
  {
    // With a secret key inside, no one else may read it, from the first byte on.
    const bool secret = !client_key_.empty();
    const int fd =
        ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0666);
    if (fd < 0) throw Error(Errc::invalid_argument, "cannot write config file '" + path + "'");
    const std::string line = text + '\n';
    bool ok = (!secret || ::fchmod(fd, 0600) == 0) &&
              ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ok = ::close(fd) == 0 && ok;
    if (!ok) {
      std::remove(tmp.c_str());
      throw Error(Errc::invalid_argument, "cannot write config file '" + path + "'");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(Errc::invalid_argument, "cannot write config file '" + path + "'");
  }
}

bool Config::serving() const {
  return server_ && server_->running();
}
void Config::stop() const {
  if (server_) server_->stop();
}
void Config::wait() const {
  if (server_) server_->wait();
}
std::string Config::server_endpoint() const {
  return server_ ? server_->server_endpoint() : std::string();
}

}  // namespace patro
