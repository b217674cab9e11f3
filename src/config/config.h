// kmsd configuration: one JSON file (`kmsd --config FILE`), every key documented in
// config/kmsd.example.json. Dev mode builds the same struct in code (src/dev).
//
// Secrets are never in the config itself: the config names the files that hold them.
#pragma once

#include <cstdint>
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/status.h"

namespace kms::config {

struct TlsConfig {
  std::string cert_file;       // server certificate chain (PEM)
  std::string key_file;        // server private key (PEM), mode 0600 advised
  std::string client_ca_file;  // CA bundle that client certificates must chain to
};

struct HsmConfig {
  std::string module_path = "/usr/lib/softhsm/libsofthsm2.so";
  std::string token_label;
  std::string pin_file;
  std::string master_key_label = "kmsd-master";
  std::string master_key_kind = "rsa-4096";  // "rsa-4096" | "aes-256"
  int max_sessions = 16;
  // Written into the process environment as SOFTHSM2_CONF before the module loads
  // (a path, not a secret); empty leaves the environment alone.
  std::string softhsm2_conf;
  // Serialize every call into the module (for modules that are not thread-safe).
  bool serialize_calls = false;
};

// How kmsd calls its backends (HSM, store): each on a bounded pool of its own, each call
// with a deadline, behind a circuit that fails uncached requests fast while the backend
// is down (src/keys/backend_executor.h).
struct BackendsConfig {
  int request_threads = 32;       // threads that run gRPC RPC bodies (not gRPC's own)
  int request_queue = 4096;       // RPCs waiting for one of them; past it UNAVAILABLE
  int threads = 8;                // workers per backend
  int max_queue = 512;            // calls waiting per backend
  int call_timeout_ms = 2000;     // a call not answered by then is abandoned: UNAVAILABLE
  int open_initial_ms = 200;      // a tripped circuit fails fast this long before a probe
  int open_max_ms = 2000;         // ... doubling while probes fail, at most this
};

struct PostgresConfig {
  // libpq connection string without a password ("host=db port=5432 dbname=kms user=kmsd").
  std::string conninfo;
  std::string password_file;  // the password, read from this file
  std::string sslmode;        // "" (leave to conninfo) | disable | require | verify-ca | verify-full ...
  std::string sslrootcert;    // CA file for verify-ca / verify-full
  int pool_size = 8;
  std::string schema = "kmsd";
};

struct StoreConfig {
  std::string backend = "sqlite";  // "sqlite" | "postgres"
  std::string sqlite_path;
  PostgresConfig postgres;
};

// Redis / Valkey, optional: invalidation events between replicas and global rate limits.
struct RedisConfig {
  std::string addr;  // "host:port" or "unix:/path"; empty: no Redis
  std::string password_file;
  int64_t connect_timeout_ms = 500;
  int64_t command_timeout_ms = 250;
};

struct ClusterConfig {
  // How often a replica polls the store's epoch (the coherence that works without Redis).
  int64_t poll_interval_seconds = 10;
};

// Scheduled rotation and the KEK re-wrap job (src/sched/rotation.h). The periods default
// to KMS_ROTATION_PERIOD / VAULT_ROTATION_PERIOD when set (which also sets the JWT one).
struct RotationConfig {
  int64_t check_interval_seconds = 60;
  int64_t kek_period_seconds = 7776000;
  int64_t dek_period_seconds = 7776000;
  int64_t dek_rotations_per_check = 500;   // tenants rotated by age per check at most
  int64_t rewrap_rate_per_second = 2000;   // keys re-wrapped per second; 0: unthrottled
  int64_t rewrap_batch_size = 500;         // keys per batch and checkpoint
  int64_t rewrap_parallelism = 2;          // HSM re-wrap calls in flight within a batch
  int64_t retired_kek_keep_days = 30;      // then the retired KEK's blob is destroyed
};

struct JwtConfig {
  std::string issuer;                       // set as "iss" when a caller gives none
  int64_t max_ttl_seconds = 900;            // JWT_ACCESS_TOKEN_TTL
  int64_t clock_skew_seconds = 60;
  int64_t jwks_cache_seconds = 300;         // pre-publish window and JWKS max-age
  int64_t rotation_period_seconds = 7776000;  // KMS_ROTATION_PERIOD / VAULT_ROTATION_PERIOD
  int64_t key_max_age_seconds = 604800;     // KEY_MAX_AGE
  bool fail_closed_when_critical = false;
  int64_t max_claims_bytes = 8192;
};

// Bytes a ciphertext envelope adds to its plaintext; max_ciphertext_bytes is always
// max_plaintext_bytes + this (ParseConfig derives it, ValidateConfig checks it).
inline constexpr int64_t kCiphertextOverheadBytes = 33;

struct LimitsConfig {
  int64_t max_plaintext_bytes = 64 * 1024;
  int64_t max_ciphertext_bytes = 64 * 1024 + 33;  // derived when not set
  int max_batch_items = 1000;
  int max_context_pairs = 16;
  int64_t max_context_bytes = 4096;
  // The bytes of gRPC requests in flight at once, in total (gate/inflight_budget.h):
  // beyond it a call gets RESOURCE_EXHAUSTED "retry after". At least the largest request
  // a method accepts (a maximal EncryptBatch: about 68 MiB with the defaults above). The
  // default keeps kmsd's resident memory under 512 MiB whatever its peers send
  // (docs/security.md has the measurement).
  int64_t max_inflight_request_bytes = 96 << 20;
};

// Bounds of the HTTPS listener (src/server/http): everything a peer that has not
// authenticated can hold there (connections, time, memory, workers) is capped here.
// Times in milliseconds, sizes in bytes.
struct HttpConfig {
  int max_connections = 256;          // total; when full the oldest idle one is closed
  int max_connections_per_ip = 64;    // per peer address
  int64_t handshake_timeout_ms = 5000;   // TLS handshake, from accept
  int64_t header_timeout_ms = 10000;     // the whole request header, from its first byte
  int64_t idle_timeout_ms = 60000;       // keep-alive wait for the next request
  int64_t request_timeout_ms = 30000;    // header + body + handler, from the first byte
  int64_t max_header_bytes = 16384;      // request line + header fields (431 beyond)
  int64_t max_body_bytes = 1 << 20;      // request body (413 beyond)
  int worker_threads = 2;                // pool for handlers that may block
  int max_queued_requests = 64;          // blocking requests waiting or running (503 beyond)
};

// The /metrics endpoint on the HTTPS listener (Prometheus text format).
// The Vault-compatible transit door on the HTTPS listener (docs/vault.md).
struct VaultConfig {
  bool enabled = true;                  // routes under /v1/ on the HTTPS listener
  std::string mount = "transit";        // transit routes at /v1/<mount>/...
  // 0 (the defaults): derived from the other sections, so no default can contradict them.
  int64_t token_ttl_seconds = 0;        // auth/cert/login tokens; 0: min(900, jwt.max_ttl_seconds)
  int64_t max_body_bytes = 0;           // body of a Vault request (413 beyond); 0: http.max_body_bytes
  int max_batch_items = 0;              // batch_input items; 0: limits.max_batch_items

  int64_t TokenTtl(const JwtConfig& jwt) const {
    return token_ttl_seconds > 0 ? token_ttl_seconds : std::min<int64_t>(900, jwt.max_ttl_seconds);
  }
  int64_t MaxBody(const HttpConfig& http) const {
    return max_body_bytes > 0 ? max_body_bytes : http.max_body_bytes;
  }
  int MaxBatch(const LimitsConfig& limits) const {
    return max_batch_items > 0 ? max_batch_items : limits.max_batch_items;
  }
};

struct MetricsConfig {
  bool enabled = true;               // false: no /metrics and no RPC metrics at all
  bool require_client_cert = false;  // true: /metrics answers 403 without a verified client cert
};

// The periodic probes behind /readyz, grpc.health.v1 and GetStatus.
struct HealthConfig {
  int64_t probe_interval_seconds = 5;
};

// One SigV4 access key of the XKS door: the id AWS KMS sends, the secret in a file.
struct XksCredentialConfig {
  std::string access_key_id;
  std::string secret_access_key_file;
};

// The AWS KMS External Key Store door (src/server/xks) on a listener of its own.
struct XksConfig {
  std::string listen;  // HOST:PORT; empty: no XKS door
  // Its TLS: a publicly trusted certificate for AWS (tls.cert_file, tls.key_file);
  // tls.client_ca_file optional: when set, client certificates are required (mTLS).
  TlsConfig tls;
  std::string client_common_name;  // mTLS: required client CN (cks.kms.<region>.amazonaws.com)
  std::string uri_prefix;          // "" or "/path"; the API is at {uri_prefix}/kms/xks/v1
  std::string region = "us-east-1";  // the SigV4 region AWS KMS signs for
  std::vector<XksCredentialConfig> credentials;  // 1 or 2 pairs accepted at once
  std::string identity = "aws-kms-xks";  // the identity the policy and audit see
  int64_t max_clock_skew_seconds = 300;  // SigV4 request time window, either way
  int64_t deadline_ms = 150;             // answer DependencyTimeoutException after this
  std::string health_key;                // optional test key for the deep health check
  // The listener's bounds; bodies are small here (the largest request, a decrypt with
  // 8 KiB of AAD, is under 20 KiB of JSON).
  HttpConfig http = [] {
    HttpConfig h;
    h.max_body_bytes = 64 * 1024;
    return h;
  }();
};

// The Kubernetes KMS v2 plugin (src/server/k8s_kms) on a unix socket.
struct K8sKmsConfig {
  std::string socket_path;  // empty: no plugin
  std::string socket_mode = "0600";  // octal; the socket file's permissions
  std::string identity = "k8s-kms-plugin";  // the identity the policy and audit see
  std::string key;  // the kmsd tenant whose DEKs encrypt the cluster's seeds
};

struct DekCacheConfig {
  int64_t ttl_seconds = 3600;
  int64_t max_entries = 500000;  // DEK versions (~640 B each: docs/benchmarks.md)
  // The DEK usage flush (keys::KeyManagerOptions): counts below the minimum wait up to
  // the max age; 0 and 0: every count at every flush (every 10 s).
  int64_t usage_flush_min_count = 1000;
  int64_t usage_flush_max_age_seconds = 300;
};

// The audit log (src/audit/audit_log.h).
struct AuditConfig {
  bool enabled = true;
  int64_t retention_days = 365;          // older records are deleted by a daily job
  int64_t max_backlog = 100000;          // records waiting to be written
  bool refuse_admin_when_full = true;    // refuse changes while the backlog is full
  int64_t flush_interval_ms = 1000;      // data-plane aggregates are written this often
};

struct Config {
  std::string node_id;             // default: hostname
  std::string grpc_listen = "127.0.0.1:8443";
  std::string http_listen = "127.0.0.1:8444";  // empty: no HTTPS listener (key http.listen)
  HttpConfig http;                             // the rest of the "http" object
  TlsConfig tls;
  HsmConfig hsm;
  StoreConfig store;
  std::string policy_file;
  LimitsConfig limits;
  DekCacheConfig dek_cache;
  RedisConfig redis;
  ClusterConfig cluster;
  JwtConfig jwt;
  MetricsConfig metrics;
  HealthConfig health;
  BackendsConfig backends;
  RotationConfig rotation;
  XksConfig xks;
  K8sKmsConfig k8s_kms;
  AuditConfig audit;
  VaultConfig vault;
  bool tenants_auto_create = false;
  std::string log_level = "info";  // trace|debug|info|warn|error
  bool lock_memory = true;         // mlock key pages where the process may
};

// Reads and validates a config file. INVALID_ARGUMENT (or NOT_FOUND for a missing
// file) with a message that names the key and says what to fix. Relative paths in
// the file are resolved against the file's directory.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);
// Parses and validates config JSON text; relative paths resolve against `base_dir`.
absl::StatusOr<Config> ParseConfig(std::string_view json_text, const std::string& base_dir);
// Validates a config built in code (dev mode) with the same rules.
absl::Status ValidateConfig(const Config& config);

}  // namespace kms::config
