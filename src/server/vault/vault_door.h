// The Vault door: HashiCorp Vault's transit secrets engine API (the subset services use)
// and its cert auth, on the HTTPS listener, so that software written against Vault
// (hvac, node-vault, ...) uses kmsd unchanged. docs/vault.md is the compatibility table:
// every endpoint and parameter, supported, mapped or refused.
//
// A door only translates (docs/architecture.md, "Doors and the gate"): it decodes
// Vault's JSON, turns the client certificate and its X-Vault-Token into an identity,
// passes the CallGate with kmsd's operation for the endpoint, calls the domain
// (keys::KeyManager, jwt::JwtService for tokens) with domain types, and encodes Vault's
// answer: {"data":...} or {"errors":[...]} with Vault's status codes. A transit key is
// a kmsd tenant; its key versions are the tenant's DEK versions; a ciphertext is
// "vault:v<N>:" + base64(kmsd field ciphertext v1), so the bytes after the prefix are
// exactly what the gRPC door's Decrypt takes, and the other way round.
//
// Thread-safe: handlers run on the HTTPS listener's worker pool.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "kms/common/clock.h"
#include "kms/metrics/metrics.h"
#include "src/config/config.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/key_manager.h"
#include "src/server/gate/call_gate.h"
#include "src/server/http/https_server.h"
#include "src/server/vault/vault_token.h"

namespace kms::server::vault {

struct VaultDoorInfo {
  std::string node_id;
  std::string version;  // kmsd's version, reported as Vault's "version" with "+kmsd"
};

class VaultDoor {
 public:
  // `config` must have passed config::ValidateConfig. Serves nothing but 503 ("Vault is
  // sealed", as Vault answers while it is) until Attach.
  VaultDoor(const config::Config& config, VaultDoorInfo info, const Clock& clock);
  ~VaultDoor();

  // Registers the door's routes (/v1/sys/health, /v1/sys/seal-status: on the event
  // loop; everything else under /v1/: on the worker pool, with vault.max_body_bytes).
  // Call before the listener starts.
  void Register(http::HttpsServer& server);

  // The domain, once kmsd has loaded its keys; `serving` says whether kmsd serves now
  // (sys/health). All must outlive the door. Call once, before any request may use them.
  void Attach(keys::KeyManager& keys, const jwt::JwtService& jwt, const CallGate& gate,
              std::function<bool()> serving);

  // One request (what the registered routes call; tests call it directly). Counted in
  // kmsd_vault_requests_total{operation, code} (code: the HTTP status) and timed in
  // kmsd_vault_request_duration_seconds{operation} once set_metrics named a registry;
  // operation is the audit name of a transit call ("VaultEncrypt", ...) or "VaultHealth",
  // "VaultSealStatus", "VaultInit", "VaultLogin", "VaultLookupSelf", "VaultOther".
  http::Response Serve(const http::Request& request);

  // Where Serve records its metrics; null (the default): nowhere. Set before serving.
  void set_metrics(metrics::Registry* registry) { metrics_ = registry; }

  class Impl;

 private:
  const int64_t max_body_bytes_;
  metrics::Registry* metrics_ = nullptr;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kms::server::vault
