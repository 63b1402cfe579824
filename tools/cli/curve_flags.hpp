// The CURVE flags the Patro programs share: --curve-key FILE (this program's key pair, from
// patro keygen) and --broker-key Z85|FILE (the broker's public key). Without --curve-key, the
// library reads the pair $PATRO_CURVE_KEY names.
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <patro/curve.hpp>

namespace patro::cli {

struct CurveFlags {
  std::string curve_key;
  std::string broker_key;

  void add(CLI::App& app, const std::string& key_help) {
    app.add_option("--curve-key", curve_key, key_help)->type_name("FILE");
    app.add_option("--broker-key", broker_key,
                   "the broker's CURVE public key, as Z85 text or a file holding it (its .pub): "
                   "encrypt and authenticate the connection to the broker")
        ->type_name("Z85|FILE");
  }

  /// The key pair of --curve-key; empty without it. Throws patro::Error on a bad file.
  CurveKeyPair keys() const {
    return curve_key.empty() ? CurveKeyPair{} : read_key_file(curve_key);
  }

  /// The connecting side's options: the broker key and this side's pair (or, when --curve-key is
  /// not given, $PATRO_CURVE_KEY's, which the library reads).
  CurveOptions client() const {
    CurveOptions o;
    if (!broker_key.empty()) o.broker_key = read_public_key(broker_key);
    o.keys = keys();
    return o;
  }
};

}  // namespace patro::cli
