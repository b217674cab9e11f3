#include "src/config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "src/common/strict_json.h"
#include "src/common/strings.h"
#include "src/common/text_file.h"

namespace kms::config {
namespace {

using Json = nlohmann::json;

constexpr int64_t kMaxPlaintextBytesLimit = 16 * 1024 * 1024;
constexpr int kMaxBatchItemsLimit = 100000;
constexpr int kMaxContextPairsLimit = 256;
constexpr int64_t kMaxContextBytesLimit = 64 * 1024;
constexpr int64_t kMaxDekTtlSeconds = 86400;
constexpr int kMaxHsmSessions = 1024;
constexpr int kMaxHttpConnections = 65536;
constexpr size_t kMaxTokenLabelBytes = 32;  // CK_TOKEN_INFO.label is 32 bytes
constexpr int kMaxJsonDepth = 16;

// The store backends this build supports; adding one is adding it here and to
// ValidateStore() (its own required keys).
constexpr std::string_view kStoreBackends[] = {"sqlite", "postgres"};
constexpr std::string_view kSslModes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
constexpr std::string_view kMasterKeyKinds[] = {"rsa-4096", "aes-256"};
constexpr std::string_view kLogLevels[] = {"trace", "debug", "info", "warn", "error"};

std::string KeyPath(std::string_view prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : absl::StrCat(Av(prefix), ".", Av(key));
}

std::string ErrnoText(int err) { return std::strerror(err); }

template <size_t N>
bool OneOf(std::string_view value, const std::string_view (&allowed)[N]) {
  for (std::string_view a : allowed) {
    if (a == value) return true;
  }
  return false;
}

template <size_t N>
std::string Alternatives(const std::string_view (&allowed)[N]) {
  std::string out;
  for (std::string_view a : allowed) absl::StrAppend(&out, out.empty() ? "" : ", ", Av(a));
  return out;
}

// --- Typed access to one JSON object, with errors that name the key. ---

class ObjectReader {
 public:
  ObjectReader(const Json& obj, std::string prefix) : obj_(obj), prefix_(std::move(prefix)) {}

  // Every key of the object must be in `allowed` (typos are errors, not silence).
  absl::Status CheckKeys(std::initializer_list<std::string_view> allowed) const {
    for (const auto& [key, value] : obj_.items()) {
      bool known = false;
      for (std::string_view a : allowed) known = known || a == key;
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown key '", KeyPath(prefix_, key), "'"));
      }
    }
    return absl::OkStatus();
  }

  // Each Get* leaves `out` alone when the key is absent.
  absl::Status GetString(std::string_view key, std::string* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return TypeError(key, "a string", *v);
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  absl::Status GetBool(std::string_view key, bool* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return TypeError(key, "a boolean (true or false)", *v);
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status GetInt64(std::string_view key, int64_t* out) const {
    const Json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number_integer()) return TypeError(key, "an integer", *v);
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(KeyPath(prefix_, key), ": ", v->get<uint64_t>(), " is out of range"));
    }
    *out = v->get<int64_t>();
    return absl::OkStatus();
  }

  absl::Status GetInt(std::string_view key, int* out) const {
    int64_t wide = *out;
    if (absl::Status s = GetInt64(key, &wide); !s.ok()) return s;
    if (wide < std::numeric_limits<int>::min() || wide > std::numeric_limits<int>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat(KeyPath(prefix_, key), ": ", wide, " is out of range"));
    }
    *out = static_cast<int>(wide);
    return absl::OkStatus();
  }

  // The nested object under `key`, or nullptr when absent.
  absl::StatusOr<const Json*> GetObject(std::string_view key) const {
    const Json* v = Find(key);
    if (v == nullptr) return nullptr;
    if (!v->is_object()) return TypeError(key, "an object", *v);
    return v;
  }

  // The array under `key`, or nullptr when absent.
  absl::StatusOr<const Json*> GetArray(std::string_view key) const {
    const Json* v = Find(key);
    if (v == nullptr) return nullptr;
    if (!v->is_array()) return TypeError(key, "an array", *v);
    return v;
  }

  std::string Path(std::string_view key) const { return KeyPath(prefix_, key); }

 private:
  const Json* Find(std::string_view key) const {
    auto it = obj_.find(key);
    return it == obj_.end() ? nullptr : &*it;
  }

  absl::Status TypeError(std::string_view key, std::string_view expected, const Json& v) const {
    return absl::InvalidArgumentError(absl::StrCat(KeyPath(prefix_, key), ": expected ",
                                                   Av(expected), ", got ", v.type_name()));
  }

  const Json& obj_;
  std::string prefix_;
};

// Reads the object at `parent[key]` (if present) with `fn(ObjectReader&)`.
template <typename Fn>
absl::Status WithObject(const ObjectReader& parent, std::string_view key, Fn fn) {
  absl::StatusOr<const Json*> obj = parent.GetObject(key);
  if (!obj.ok()) return obj.status();
  if (*obj == nullptr) return absl::OkStatus();
  ObjectReader reader(**obj, parent.Path(key));
  return fn(reader);
}

// --- JSON text -> Json, with duplicate keys and absurd nesting rejected. ---

absl::StatusOr<Json> ParseJsonText(std::string_view text) {
  KMS_ASSIGN_OR_RETURN(Json root, ParseStrictJson(text, "config", kMaxJsonDepth));
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config must be a JSON object, got ", root.type_name()));
  }
  return root;
}

// --- JSON -> Config (types and key names only; values are checked by ValidateConfig). ---

absl::Status ReadConfig(const Json& root, Config& c) {
  ObjectReader top(root, "");
  KMS_RETURN_IF_ERROR(top.CheckKeys({"node_id", "grpc", "http", "tls", "hsm", "store",
                                     "policy_file", "limits", "dek_cache", "tenants",
                                     "redis", "cluster", "jwt", "rotation", "log_level",
                                     "lock_memory", "metrics", "health", "audit",
                                     "backends", "xks", "k8s_kms", "vault"}));
  KMS_RETURN_IF_ERROR(top.GetString("node_id", &c.node_id));
  KMS_RETURN_IF_ERROR(WithObject(top, "grpc", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"listen"}));
    return r.GetString("listen", &c.grpc_listen);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "http", [&](ObjectReader& r) {
    HttpConfig& h = c.http;
    KMS_RETURN_IF_ERROR(r.CheckKeys({"listen", "max_connections", "max_connections_per_ip",
                                     "handshake_timeout_ms", "header_timeout_ms",
                                     "idle_timeout_ms", "request_timeout_ms",
                                     "max_header_bytes", "max_body_bytes", "worker_threads",
                                     "max_queued_requests"}));
    KMS_RETURN_IF_ERROR(r.GetInt("max_connections", &h.max_connections));
    KMS_RETURN_IF_ERROR(r.GetInt("max_connections_per_ip", &h.max_connections_per_ip));
    KMS_RETURN_IF_ERROR(r.GetInt64("handshake_timeout_ms", &h.handshake_timeout_ms));
    KMS_RETURN_IF_ERROR(r.GetInt64("header_timeout_ms", &h.header_timeout_ms));
    KMS_RETURN_IF_ERROR(r.GetInt64("idle_timeout_ms", &h.idle_timeout_ms));
    KMS_RETURN_IF_ERROR(r.GetInt64("request_timeout_ms", &h.request_timeout_ms));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_header_bytes", &h.max_header_bytes));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_body_bytes", &h.max_body_bytes));
    KMS_RETURN_IF_ERROR(r.GetInt("worker_threads", &h.worker_threads));
    KMS_RETURN_IF_ERROR(r.GetInt("max_queued_requests", &h.max_queued_requests));
    return r.GetString("listen", &c.http_listen);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "tls", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"cert_file", "key_file", "client_ca_file"}));
    KMS_RETURN_IF_ERROR(r.GetString("cert_file", &c.tls.cert_file));
    KMS_RETURN_IF_ERROR(r.GetString("key_file", &c.tls.key_file));
    return r.GetString("client_ca_file", &c.tls.client_ca_file);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "hsm", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"module_path", "token_label", "pin_file",
                                     "master_key_label", "master_key_kind", "max_sessions",
                                     "softhsm2_conf", "serialize_calls"}));
    KMS_RETURN_IF_ERROR(r.GetBool("serialize_calls", &c.hsm.serialize_calls));
    KMS_RETURN_IF_ERROR(r.GetString("module_path", &c.hsm.module_path));
    KMS_RETURN_IF_ERROR(r.GetString("token_label", &c.hsm.token_label));
    KMS_RETURN_IF_ERROR(r.GetString("pin_file", &c.hsm.pin_file));
    KMS_RETURN_IF_ERROR(r.GetString("master_key_label", &c.hsm.master_key_label));
    KMS_RETURN_IF_ERROR(r.GetString("master_key_kind", &c.hsm.master_key_kind));
    KMS_RETURN_IF_ERROR(r.GetInt("max_sessions", &c.hsm.max_sessions));
    return r.GetString("softhsm2_conf", &c.hsm.softhsm2_conf);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "store", [&](ObjectReader& r) {
    // One sub-object per backend; "postgres" joins the list with its own keys.
    KMS_RETURN_IF_ERROR(r.CheckKeys({"backend", "sqlite", "postgres"}));
    KMS_RETURN_IF_ERROR(r.GetString("backend", &c.store.backend));
    KMS_RETURN_IF_ERROR(WithObject(r, "sqlite", [&](ObjectReader& s) {
      KMS_RETURN_IF_ERROR(s.CheckKeys({"path"}));
      return s.GetString("path", &c.store.sqlite_path);
    }));
    return WithObject(r, "postgres", [&](ObjectReader& s) {
      PostgresConfig& pg = c.store.postgres;
      KMS_RETURN_IF_ERROR(s.CheckKeys(
          {"conninfo", "password_file", "sslmode", "sslrootcert", "pool_size", "schema"}));
      KMS_RETURN_IF_ERROR(s.GetString("conninfo", &pg.conninfo));
      KMS_RETURN_IF_ERROR(s.GetString("password_file", &pg.password_file));
      KMS_RETURN_IF_ERROR(s.GetString("sslmode", &pg.sslmode));
      KMS_RETURN_IF_ERROR(s.GetString("sslrootcert", &pg.sslrootcert));
      KMS_RETURN_IF_ERROR(s.GetInt("pool_size", &pg.pool_size));
      return s.GetString("schema", &pg.schema);
    });
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "redis", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(
        r.CheckKeys({"addr", "password_file", "connect_timeout_ms", "command_timeout_ms"}));
    KMS_RETURN_IF_ERROR(r.GetString("addr", &c.redis.addr));
    KMS_RETURN_IF_ERROR(r.GetString("password_file", &c.redis.password_file));
    KMS_RETURN_IF_ERROR(r.GetInt64("connect_timeout_ms", &c.redis.connect_timeout_ms));
    return r.GetInt64("command_timeout_ms", &c.redis.command_timeout_ms);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "metrics", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"enabled", "require_client_cert"}));
    KMS_RETURN_IF_ERROR(r.GetBool("enabled", &c.metrics.enabled));
    return r.GetBool("require_client_cert", &c.metrics.require_client_cert);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "backends", [&](ObjectReader& r) {
    BackendsConfig& b = c.backends;
    KMS_RETURN_IF_ERROR(r.CheckKeys({"request_threads", "request_queue", "threads", "max_queue",
                                     "call_timeout_ms", "open_initial_ms", "open_max_ms"}));
    KMS_RETURN_IF_ERROR(r.GetInt("request_threads", &b.request_threads));
    KMS_RETURN_IF_ERROR(r.GetInt("request_queue", &b.request_queue));
    KMS_RETURN_IF_ERROR(r.GetInt("threads", &b.threads));
    KMS_RETURN_IF_ERROR(r.GetInt("max_queue", &b.max_queue));
    KMS_RETURN_IF_ERROR(r.GetInt("call_timeout_ms", &b.call_timeout_ms));
    KMS_RETURN_IF_ERROR(r.GetInt("open_initial_ms", &b.open_initial_ms));
    return r.GetInt("open_max_ms", &b.open_max_ms);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "vault", [&](ObjectReader& r) {
    VaultConfig& v = c.vault;
    KMS_RETURN_IF_ERROR(r.CheckKeys(
        {"enabled", "mount", "token_ttl_seconds", "max_body_bytes", "max_batch_items"}));
    KMS_RETURN_IF_ERROR(r.GetBool("enabled", &v.enabled));
    KMS_RETURN_IF_ERROR(r.GetString("mount", &v.mount));
    KMS_RETURN_IF_ERROR(r.GetInt64("token_ttl_seconds", &v.token_ttl_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_body_bytes", &v.max_body_bytes));
    return r.GetInt("max_batch_items", &v.max_batch_items);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "health", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"probe_interval_seconds"}));
    return r.GetInt64("probe_interval_seconds", &c.health.probe_interval_seconds);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "cluster", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"poll_interval_seconds"}));
    return r.GetInt64("poll_interval_seconds", &c.cluster.poll_interval_seconds);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "rotation", [&](ObjectReader& r) {
    RotationConfig& o = c.rotation;
    KMS_RETURN_IF_ERROR(r.CheckKeys({"check_interval_seconds", "kek_period_seconds",
                                     "dek_period_seconds", "dek_rotations_per_check",
                                     "rewrap_rate_per_second", "rewrap_batch_size",
                                     "rewrap_parallelism", "retired_kek_keep_days"}));
    KMS_RETURN_IF_ERROR(r.GetInt64("check_interval_seconds", &o.check_interval_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("kek_period_seconds", &o.kek_period_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("dek_period_seconds", &o.dek_period_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("dek_rotations_per_check", &o.dek_rotations_per_check));
    KMS_RETURN_IF_ERROR(r.GetInt64("rewrap_rate_per_second", &o.rewrap_rate_per_second));
    KMS_RETURN_IF_ERROR(r.GetInt64("rewrap_batch_size", &o.rewrap_batch_size));
    KMS_RETURN_IF_ERROR(r.GetInt64("rewrap_parallelism", &o.rewrap_parallelism));
    return r.GetInt64("retired_kek_keep_days", &o.retired_kek_keep_days);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "jwt", [&](ObjectReader& r) {
    JwtConfig& j = c.jwt;
    KMS_RETURN_IF_ERROR(r.CheckKeys({"issuer", "max_ttl_seconds", "clock_skew_seconds",
                                     "jwks_cache_seconds", "rotation_period_seconds",
                                     "key_max_age_seconds", "fail_closed_when_critical",
                                     "max_claims_bytes"}));
    KMS_RETURN_IF_ERROR(r.GetString("issuer", &j.issuer));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_ttl_seconds", &j.max_ttl_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("clock_skew_seconds", &j.clock_skew_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("jwks_cache_seconds", &j.jwks_cache_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("rotation_period_seconds", &j.rotation_period_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("key_max_age_seconds", &j.key_max_age_seconds));
    KMS_RETURN_IF_ERROR(r.GetBool("fail_closed_when_critical", &j.fail_closed_when_critical));
    return r.GetInt64("max_claims_bytes", &j.max_claims_bytes);
  }));
  KMS_RETURN_IF_ERROR(top.GetString("policy_file", &c.policy_file));
  KMS_RETURN_IF_ERROR(WithObject(top, "limits", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"max_plaintext_bytes", "max_batch_items",
                                     "max_context_pairs", "max_context_bytes",
                                     "max_inflight_request_bytes"}));
    KMS_RETURN_IF_ERROR(
        r.GetInt64("max_inflight_request_bytes", &c.limits.max_inflight_request_bytes));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_plaintext_bytes", &c.limits.max_plaintext_bytes));
    KMS_RETURN_IF_ERROR(r.GetInt("max_batch_items", &c.limits.max_batch_items));
    KMS_RETURN_IF_ERROR(r.GetInt("max_context_pairs", &c.limits.max_context_pairs));
    return r.GetInt64("max_context_bytes", &c.limits.max_context_bytes);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "dek_cache", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys(
        {"ttl_seconds", "max_entries", "usage_flush_min_count", "usage_flush_max_age_seconds"}));
    KMS_RETURN_IF_ERROR(r.GetInt64("ttl_seconds", &c.dek_cache.ttl_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("usage_flush_min_count", &c.dek_cache.usage_flush_min_count));
    KMS_RETURN_IF_ERROR(
        r.GetInt64("usage_flush_max_age_seconds", &c.dek_cache.usage_flush_max_age_seconds));
    return r.GetInt64("max_entries", &c.dek_cache.max_entries);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "xks", [&](ObjectReader& r) {
    XksConfig& x = c.xks;
    KMS_RETURN_IF_ERROR(r.CheckKeys({"listen", "tls", "client_common_name", "uri_prefix", "region",
                                     "credentials", "identity", "max_clock_skew_seconds",
                                     "deadline_ms", "health_key", "http"}));
    KMS_RETURN_IF_ERROR(r.GetString("listen", &x.listen));
    KMS_RETURN_IF_ERROR(WithObject(r, "tls", [&](ObjectReader& t) {
      KMS_RETURN_IF_ERROR(t.CheckKeys({"cert_file", "key_file", "client_ca_file"}));
      KMS_RETURN_IF_ERROR(t.GetString("cert_file", &x.tls.cert_file));
      KMS_RETURN_IF_ERROR(t.GetString("key_file", &x.tls.key_file));
      return t.GetString("client_ca_file", &x.tls.client_ca_file);
    }));
    KMS_RETURN_IF_ERROR(r.GetString("client_common_name", &x.client_common_name));
    KMS_RETURN_IF_ERROR(r.GetString("uri_prefix", &x.uri_prefix));
    KMS_RETURN_IF_ERROR(r.GetString("region", &x.region));
    KMS_RETURN_IF_ERROR(r.GetString("identity", &x.identity));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_clock_skew_seconds", &x.max_clock_skew_seconds));
    KMS_RETURN_IF_ERROR(r.GetInt64("deadline_ms", &x.deadline_ms));
    KMS_RETURN_IF_ERROR(r.GetString("health_key", &x.health_key));
    KMS_RETURN_IF_ERROR(WithObject(r, "http", [&](ObjectReader& h) {
      HttpConfig& l = x.http;
      KMS_RETURN_IF_ERROR(h.CheckKeys({"max_connections", "max_connections_per_ip",
                                       "handshake_timeout_ms", "header_timeout_ms",
                                       "idle_timeout_ms", "request_timeout_ms", "max_header_bytes",
                                       "max_body_bytes", "worker_threads", "max_queued_requests"}));
      KMS_RETURN_IF_ERROR(h.GetInt("max_connections", &l.max_connections));
      KMS_RETURN_IF_ERROR(h.GetInt("max_connections_per_ip", &l.max_connections_per_ip));
      KMS_RETURN_IF_ERROR(h.GetInt64("handshake_timeout_ms", &l.handshake_timeout_ms));
      KMS_RETURN_IF_ERROR(h.GetInt64("header_timeout_ms", &l.header_timeout_ms));
      KMS_RETURN_IF_ERROR(h.GetInt64("idle_timeout_ms", &l.idle_timeout_ms));
      KMS_RETURN_IF_ERROR(h.GetInt64("request_timeout_ms", &l.request_timeout_ms));
      KMS_RETURN_IF_ERROR(h.GetInt64("max_header_bytes", &l.max_header_bytes));
      KMS_RETURN_IF_ERROR(h.GetInt64("max_body_bytes", &l.max_body_bytes));
      KMS_RETURN_IF_ERROR(h.GetInt("worker_threads", &l.worker_threads));
      return h.GetInt("max_queued_requests", &l.max_queued_requests);
    }));
    KMS_ASSIGN_OR_RETURN(const Json* creds, r.GetArray("credentials"));
    if (creds != nullptr) {
      for (size_t i = 0; i < creds->size(); ++i) {
        const std::string where = absl::StrCat("xks.credentials[", i, "]");
        if (!(*creds)[i].is_object()) {
          return absl::InvalidArgumentError(absl::StrCat(where, ": expected an object"));
        }
        ObjectReader cr((*creds)[i], where);
        XksCredentialConfig cred;
        KMS_RETURN_IF_ERROR(cr.CheckKeys({"access_key_id", "secret_access_key_file"}));
        KMS_RETURN_IF_ERROR(cr.GetString("access_key_id", &cred.access_key_id));
        KMS_RETURN_IF_ERROR(cr.GetString("secret_access_key_file", &cred.secret_access_key_file));
        x.credentials.push_back(std::move(cred));
      }
    }
    return absl::OkStatus();
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "k8s_kms", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"socket_path", "socket_mode", "identity", "key"}));
    KMS_RETURN_IF_ERROR(r.GetString("socket_path", &c.k8s_kms.socket_path));
    KMS_RETURN_IF_ERROR(r.GetString("socket_mode", &c.k8s_kms.socket_mode));
    KMS_RETURN_IF_ERROR(r.GetString("identity", &c.k8s_kms.identity));
    return r.GetString("key", &c.k8s_kms.key);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "tenants", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"auto_create"}));
    return r.GetBool("auto_create", &c.tenants_auto_create);
  }));
  KMS_RETURN_IF_ERROR(WithObject(top, "audit", [&](ObjectReader& r) {
    KMS_RETURN_IF_ERROR(r.CheckKeys({"enabled", "retention_days", "max_backlog",
                                     "refuse_admin_when_full", "flush_interval_ms"}));
    KMS_RETURN_IF_ERROR(r.GetBool("enabled", &c.audit.enabled));
    KMS_RETURN_IF_ERROR(r.GetInt64("retention_days", &c.audit.retention_days));
    KMS_RETURN_IF_ERROR(r.GetInt64("max_backlog", &c.audit.max_backlog));
    KMS_RETURN_IF_ERROR(r.GetBool("refuse_admin_when_full", &c.audit.refuse_admin_when_full));
    return r.GetInt64("flush_interval_ms", &c.audit.flush_interval_ms);
  }));
  KMS_RETURN_IF_ERROR(top.GetString("log_level", &c.log_level));
  KMS_RETURN_IF_ERROR(top.GetBool("lock_memory", &c.lock_memory));
  return absl::OkStatus();
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

void ResolvePath(const std::string& base_dir, std::string& path) {
  if (path.empty() || base_dir.empty() || path.front() == '/') return;
  path = (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

// --- Validation. Each check appends "key: what is wrong" to `errors`. ---

class Errors {
 public:
  void Add(std::string_view key, std::string_view what) {
    messages_.push_back(absl::StrCat(Av(key), ": ", Av(what)));
  }
  absl::Status ToStatus() const {
    if (messages_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrJoin(messages_, "; "));
  }

 private:
  std::vector<std::string> messages_;
};

void CheckRange(Errors& errors, std::string_view key, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    errors.Add(key, absl::StrCat("must be between ", lo, " and ", hi, ", got ", value));
  }
}

// HOST:PORT, HOST a name or IPv4 address or a bracketed IPv6 address, PORT 0-65535.
void CheckListen(Errors& errors, std::string_view key, std::string_view addr) {
  const std::string hint = absl::StrCat("'", Av(addr), "' is not HOST:PORT (e.g. 127.0.0.1:8443)");
  size_t colon = addr.rfind(':');
  if (colon == std::string_view::npos) return errors.Add(key, hint);
  std::string_view host = addr.substr(0, colon);
  std::string_view port = addr.substr(colon + 1);
  if (host.empty()) return errors.Add(key, hint);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return errors.Add(key, hint);
    std::string inner(host.substr(1, host.size() - 2));
    in6_addr a6;
    if (inet_pton(AF_INET6, inner.c_str(), &a6) != 1) {
      return errors.Add(key, absl::StrCat("'", inner, "' is not an IPv6 address"));
    }
  } else {
    if (host.find(':') != std::string_view::npos) {
      return errors.Add(key, absl::StrCat(hint, "; write IPv6 addresses as [ADDR]:PORT"));
    }
    for (char ch : host) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' &&
          ch != '_') {
        return errors.Add(key, absl::StrCat("'", Av(host), "' is not a valid host name"));
      }
    }
  }
  uint32_t port_number = 0;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
      !absl::SimpleAtoi(Av(port), &port_number) || port_number > 65535) {
    errors.Add(key, absl::StrCat("port '", Av(port), "' must be a number from 0 to 65535"));
  }
}

// The file must exist, be a regular file, and be readable by this process.
void CheckReadableFile(Errors& errors, std::string_view key, const std::string& path) {
  if (path.empty()) return errors.Add(key, "required");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    return errors.Add(key, absl::StrCat("cannot read ", path, ": ", ErrnoText(errno)));
  }
  struct stat st;
  bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  close(fd);
  if (!regular) errors.Add(key, absl::StrCat("cannot read ", path, ": not a regular file"));
}

void ValidateStore(Errors& errors, const StoreConfig& store) {
  if (!OneOf(store.backend, kStoreBackends)) {
    errors.Add("store.backend", absl::StrCat("'", store.backend, "' is not supported (use ",
                                             Alternatives(kStoreBackends), ")"));
    return;
  }
  if (store.backend == "sqlite" && store.sqlite_path.empty()) {
    errors.Add("store.sqlite.path", "required when store.backend is sqlite");
  }
  if (store.backend == "postgres") {
    const PostgresConfig& pg = store.postgres;
    if (pg.conninfo.empty()) {
      errors.Add("store.postgres.conninfo", "required when store.backend is postgres");
    } else if (absl::StrContains(absl::AsciiStrToLower(pg.conninfo), "password")) {
      errors.Add("store.postgres.conninfo",
                 "must not carry a password: put it in the file store.postgres.password_file names");
    }
    if (!pg.password_file.empty()) CheckReadableFile(errors, "store.postgres.password_file", pg.password_file);
    if (!pg.sslmode.empty() && !OneOf(pg.sslmode, kSslModes)) {
      errors.Add("store.postgres.sslmode",
                 absl::StrCat("'", pg.sslmode, "' must be one of ", Alternatives(kSslModes)));
    }
    if (!pg.sslrootcert.empty()) CheckReadableFile(errors, "store.postgres.sslrootcert", pg.sslrootcert);
    if ((pg.sslmode == "verify-ca" || pg.sslmode == "verify-full") && pg.sslrootcert.empty()) {
      errors.Add("store.postgres.sslrootcert", "required with sslmode verify-ca / verify-full");
    }
    CheckRange(errors, "store.postgres.pool_size", pg.pool_size, 1, 256);
    if (pg.schema.empty() || pg.schema.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") !=
                                 std::string::npos) {
      errors.Add("store.postgres.schema", "must be 1 or more of [a-z0-9_]");
    }
  }
}

void ValidateRedis(Errors& errors, const RedisConfig& redis) {
  if (redis.addr.empty()) return;
  if (redis.addr.rfind("unix:", 0) == 0) {
    if (redis.addr.size() <= 5 || redis.addr[5] != '/') {
      errors.Add("redis.addr", "unix sockets are given as unix:/absolute/path");
    }
  } else {
    CheckListen(errors, "redis.addr", redis.addr);
  }
  if (!redis.password_file.empty()) CheckReadableFile(errors, "redis.password_file", redis.password_file);
  CheckRange(errors, "redis.connect_timeout_ms", redis.connect_timeout_ms, 1, 60000);
  CheckRange(errors, "redis.command_timeout_ms", redis.command_timeout_ms, 1, 60000);
}

void ValidateHttpBounds(Errors& errors, const std::string& prefix, const HttpConfig& http) {
  CheckRange(errors, prefix + ".max_connections", http.max_connections, 1, kMaxHttpConnections);
  CheckRange(errors, prefix + ".max_connections_per_ip", http.max_connections_per_ip, 1,
             std::max(1, http.max_connections));
  CheckRange(errors, prefix + ".handshake_timeout_ms", http.handshake_timeout_ms, 100, 60000);
  CheckRange(errors, prefix + ".header_timeout_ms", http.header_timeout_ms, 100, 300000);
  CheckRange(errors, prefix + ".idle_timeout_ms", http.idle_timeout_ms, 100, 3600000);
  CheckRange(errors, prefix + ".request_timeout_ms", http.request_timeout_ms, 100, 600000);
  if (http.header_timeout_ms > http.request_timeout_ms) {
    errors.Add(prefix + ".header_timeout_ms", "must not exceed " + prefix + ".request_timeout_ms");
  }
  CheckRange(errors, prefix + ".max_header_bytes", http.max_header_bytes, 1024, 1 << 20);
  CheckRange(errors, prefix + ".max_body_bytes", http.max_body_bytes, 0, int64_t{64} << 20);
  CheckRange(errors, prefix + ".worker_threads", http.worker_threads, 1, 64);
  CheckRange(errors, prefix + ".max_queued_requests", http.max_queued_requests, 1, 100000);
}

void ValidateHttp(Errors& errors, const HttpConfig& http) { ValidateHttpBounds(errors, "http", http); }

// The XKS door: only when xks.listen is set.
void ValidateXks(Errors& errors, const Config& c) {
  const XksConfig& x = c.xks;
  if (x.listen.empty()) return;
  CheckListen(errors, "xks.listen", x.listen);
  if (x.listen == c.grpc_listen || x.listen == c.http_listen) {
    if (!x.listen.ends_with(":0")) errors.Add("xks.listen", "must differ from grpc.listen and http.listen");
  }
  CheckReadableFile(errors, "xks.tls.cert_file", x.tls.cert_file);
  CheckReadableFile(errors, "xks.tls.key_file", x.tls.key_file);
  if (!x.tls.client_ca_file.empty()) CheckReadableFile(errors, "xks.tls.client_ca_file", x.tls.client_ca_file);
  if (!x.client_common_name.empty() && x.tls.client_ca_file.empty()) {
    errors.Add("xks.client_common_name", "needs xks.tls.client_ca_file (mTLS)");
  }
  // The specification: XksProxyUriPath ({prefix}/kms/xks/v1) is at most 128 characters of
  // [A-Za-z0-9/_-].
  if (!x.uri_prefix.empty() &&
      (x.uri_prefix.front() != '/' || x.uri_prefix.back() == '/' ||
       x.uri_prefix.size() + 11 > 128 ||
       x.uri_prefix.find_first_not_of(
           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/_-") != std::string::npos)) {
    errors.Add("xks.uri_prefix",
               "must be empty or start with '/', not end with '/', use only [A-Za-z0-9/_-], and "
               "leave {uri_prefix}/kms/xks/v1 at most 128 characters");
  }
  if (x.region.empty()) errors.Add("xks.region", "required");
  if (x.identity.empty()) errors.Add("xks.identity", "required");
  if (x.credentials.empty() || x.credentials.size() > 2) {
    errors.Add("xks.credentials", "one or two {access_key_id, secret_access_key_file} pairs");
  }
  for (size_t i = 0; i < x.credentials.size(); ++i) {
    const XksCredentialConfig& cred = x.credentials[i];
    const std::string key = absl::StrCat("xks.credentials[", i, "]");
    // The specification: 20-30 characters of A-Z and 2-7.
    if (cred.access_key_id.size() < 20 || cred.access_key_id.size() > 30 ||
        cred.access_key_id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") != std::string::npos) {
      errors.Add(key + ".access_key_id", "must be 20-30 characters of A-Z and 2-7");
    }
    CheckReadableFile(errors, key + ".secret_access_key_file", cred.secret_access_key_file);
    for (size_t j = 0; j < i; ++j) {
      if (x.credentials[j].access_key_id == cred.access_key_id) {
        errors.Add(key + ".access_key_id", "is listed twice");
      }
    }
  }
  CheckRange(errors, "xks.max_clock_skew_seconds", x.max_clock_skew_seconds, 1, 900);
  CheckRange(errors, "xks.deadline_ms", x.deadline_ms, 10, 250);
  ValidateHttpBounds(errors, "xks.http", x.http);
}

void ValidateK8sKms(Errors& errors, const K8sKmsConfig& k) {
  if (k.socket_path.empty()) return;
  if (k.socket_path.front() != '/') errors.Add("k8s_kms.socket_path", "must be an absolute path");
  if (k.socket_path.size() > 100) errors.Add("k8s_kms.socket_path", "must be at most 100 bytes (a unix socket path)");
  if (k.socket_mode.size() != 4 || k.socket_mode[0] != '0' ||
      k.socket_mode.find_first_not_of("01234567") != std::string::npos) {
    errors.Add("k8s_kms.socket_mode", "must be four octal digits such as \"0600\"");
  }
  if (k.identity.empty()) errors.Add("k8s_kms.identity", "required");
  if (k.key.empty()) errors.Add("k8s_kms.key", "required (the tenant whose key encrypts)");
}

void ValidateVault(Errors& errors, const Config& c) {
  const VaultConfig& v = c.vault;
  const bool mount_ok = !v.mount.empty() && v.mount.size() <= 64 &&
                        v.mount.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
                            std::string::npos &&
                        v.mount != "sys" && v.mount != "auth";
  if (!mount_ok) errors.Add("vault.mount", "1-64 of [A-Za-z0-9_-], not sys or auth");
  CheckRange(errors, "vault.token_ttl_seconds", v.token_ttl_seconds, 0, c.jwt.max_ttl_seconds);
  if (v.max_body_bytes != 0) {
    CheckRange(errors, "vault.max_body_bytes", v.max_body_bytes, 1024, int64_t{64} << 20);
  }
  CheckRange(errors, "vault.max_batch_items", v.max_batch_items, 0, c.limits.max_batch_items);
  if (v.MaxBody(c.http) > c.limits.max_inflight_request_bytes) {
    errors.Add("vault.max_body_bytes", "must not exceed limits.max_inflight_request_bytes");
  }
}

void ValidateJwt(Errors& errors, const JwtConfig& jwt) {
  CheckRange(errors, "jwt.max_ttl_seconds", jwt.max_ttl_seconds, 1, 86400);
  CheckRange(errors, "jwt.clock_skew_seconds", jwt.clock_skew_seconds, 0, 3600);
  CheckRange(errors, "jwt.jwks_cache_seconds", jwt.jwks_cache_seconds, 1, 86400);
  CheckRange(errors, "jwt.rotation_period_seconds", jwt.rotation_period_seconds, 60,
             int64_t{10} * 365 * 86400);
  CheckRange(errors, "jwt.key_max_age_seconds", jwt.key_max_age_seconds, 1, int64_t{365} * 86400);
  CheckRange(errors, "jwt.max_claims_bytes", jwt.max_claims_bytes, 16, 32768);  // jwt::kMaxClaimsBytesLimit
}

}  // namespace

absl::Status ValidateConfig(const Config& c) {
  Errors errors;
  if (c.node_id.empty()) {
    errors.Add("node_id", "must not be empty (omit it from the file to use the host name)");
  }

  if (c.grpc_listen.empty()) {
    errors.Add("grpc.listen", "required");
  } else {
    CheckListen(errors, "grpc.listen", c.grpc_listen);
  }
  if (!c.http_listen.empty()) {
    CheckListen(errors, "http.listen", c.http_listen);
    if (c.http_listen == c.grpc_listen && !c.http_listen.ends_with(":0")) {
      errors.Add("http.listen", "must differ from grpc.listen");
    }
  }

  CheckReadableFile(errors, "tls.cert_file", c.tls.cert_file);
  CheckReadableFile(errors, "tls.key_file", c.tls.key_file);
  CheckReadableFile(errors, "tls.client_ca_file", c.tls.client_ca_file);

  if (c.hsm.module_path.empty()) errors.Add("hsm.module_path", "required");
  if (c.hsm.token_label.empty()) {
    errors.Add("hsm.token_label", "required");
  } else if (c.hsm.token_label.size() > kMaxTokenLabelBytes) {
    errors.Add("hsm.token_label", absl::StrCat("at most ", kMaxTokenLabelBytes, " bytes"));
  }
  CheckReadableFile(errors, "hsm.pin_file", c.hsm.pin_file);
  if (c.hsm.master_key_label.empty()) errors.Add("hsm.master_key_label", "required");
  if (!OneOf(c.hsm.master_key_kind, kMasterKeyKinds)) {
    errors.Add("hsm.master_key_kind", absl::StrCat("'", c.hsm.master_key_kind, "' must be one of ",
                                                   Alternatives(kMasterKeyKinds)));
  }
  CheckRange(errors, "hsm.max_sessions", c.hsm.max_sessions, 1, kMaxHsmSessions);
  CheckRange(errors, "backends.request_threads", c.backends.request_threads, 1, 1024);
  CheckRange(errors, "backends.request_queue", c.backends.request_queue, 1, 1000000);
  CheckRange(errors, "backends.threads", c.backends.threads, 1, 256);
  CheckRange(errors, "backends.max_queue", c.backends.max_queue, 1, 1000000);
  CheckRange(errors, "backends.call_timeout_ms", c.backends.call_timeout_ms, 10, 600000);
  CheckRange(errors, "backends.open_initial_ms", c.backends.open_initial_ms, 1, 600000);
  CheckRange(errors, "backends.open_max_ms", c.backends.open_max_ms, c.backends.open_initial_ms,
             600000);
  if (!c.hsm.softhsm2_conf.empty()) {
    CheckReadableFile(errors, "hsm.softhsm2_conf", c.hsm.softhsm2_conf);
  }

  ValidateStore(errors, c.store);
  ValidateRedis(errors, c.redis);
  ValidateHttp(errors, c.http);
  ValidateXks(errors, c);
  ValidateK8sKms(errors, c.k8s_kms);
  ValidateVault(errors, c);
  CheckRange(errors, "cluster.poll_interval_seconds", c.cluster.poll_interval_seconds, 1, 3600);
  CheckRange(errors, "health.probe_interval_seconds", c.health.probe_interval_seconds, 1, 300);
  ValidateJwt(errors, c.jwt);
  {
    constexpr int64_t kTenYears = int64_t{10} * 365 * 86400;
    const RotationConfig& o = c.rotation;
    CheckRange(errors, "rotation.check_interval_seconds", o.check_interval_seconds, 1, 86400);
    CheckRange(errors, "rotation.kek_period_seconds", o.kek_period_seconds, 60, kTenYears);
    CheckRange(errors, "rotation.dek_period_seconds", o.dek_period_seconds, 60, kTenYears);
    CheckRange(errors, "rotation.dek_rotations_per_check", o.dek_rotations_per_check, 1, 100000);
    CheckRange(errors, "rotation.rewrap_rate_per_second", o.rewrap_rate_per_second, 0, 10000000);
    CheckRange(errors, "rotation.rewrap_batch_size", o.rewrap_batch_size, 1, 1000);
    CheckRange(errors, "rotation.rewrap_parallelism", o.rewrap_parallelism, 1, 64);
    CheckRange(errors, "rotation.retired_kek_keep_days", o.retired_kek_keep_days, 0, 3650);
  }
  CheckReadableFile(errors, "policy_file", c.policy_file);

  CheckRange(errors, "limits.max_plaintext_bytes", c.limits.max_plaintext_bytes, 1,
             kMaxPlaintextBytesLimit);
  // Only a plaintext limit in range has a meaningful (and overflow-free) ciphertext limit.
  const bool plaintext_in_range =
      c.limits.max_plaintext_bytes >= 1 && c.limits.max_plaintext_bytes <= kMaxPlaintextBytesLimit;
  if (plaintext_in_range &&
      c.limits.max_ciphertext_bytes != c.limits.max_plaintext_bytes + kCiphertextOverheadBytes) {
    errors.Add("limits.max_ciphertext_bytes",
               absl::StrCat("must be max_plaintext_bytes + ", kCiphertextOverheadBytes, " (",
                            c.limits.max_plaintext_bytes + kCiphertextOverheadBytes, ")"));
  }
  CheckRange(errors, "limits.max_batch_items", c.limits.max_batch_items, 1, kMaxBatchItemsLimit);
  CheckRange(errors, "limits.max_context_pairs", c.limits.max_context_pairs, 0,
             kMaxContextPairsLimit);
  CheckRange(errors, "limits.max_context_bytes", c.limits.max_context_bytes, 0,
             kMaxContextBytesLimit);
  // At least one maximal request of every method must fit: the server checks that at
  // start against the sizes its methods accept.
  CheckRange(errors, "limits.max_inflight_request_bytes", c.limits.max_inflight_request_bytes,
             int64_t{1} << 20, int64_t{1} << 36);

  CheckRange(errors, "audit.retention_days", c.audit.retention_days, 1, 36500);
  CheckRange(errors, "audit.max_backlog", c.audit.max_backlog, 1, 100000000);
  CheckRange(errors, "audit.flush_interval_ms", c.audit.flush_interval_ms, 10, 60000);

  CheckRange(errors, "dek_cache.ttl_seconds", c.dek_cache.ttl_seconds, 1, kMaxDekTtlSeconds);
  CheckRange(errors, "dek_cache.max_entries", c.dek_cache.max_entries, 1,
             std::numeric_limits<int64_t>::max());
  CheckRange(errors, "dek_cache.usage_flush_min_count", c.dek_cache.usage_flush_min_count, 0,
             int64_t{1} << 30);
  CheckRange(errors, "dek_cache.usage_flush_max_age_seconds",
             c.dek_cache.usage_flush_max_age_seconds, 0, 86400);

  if (!OneOf(c.log_level, kLogLevels)) {
    errors.Add("log_level",
               absl::StrCat("'", c.log_level, "' must be one of ", Alternatives(kLogLevels)));
  }
  return errors.ToStatus();
}

absl::StatusOr<Config> ParseConfig(std::string_view json_text, const std::string& base_dir) {
  KMS_ASSIGN_OR_RETURN(Json root, ParseJsonText(json_text));
  Config c;
  KMS_RETURN_IF_ERROR(ReadConfig(root, c));

  // Derived and defaulted values.
  if (c.limits.max_plaintext_bytes >= 1 && c.limits.max_plaintext_bytes <= kMaxPlaintextBytesLimit) {
    c.limits.max_ciphertext_bytes = c.limits.max_plaintext_bytes + kCiphertextOverheadBytes;
  }
  if (root.find("node_id") == root.end()) c.node_id = Hostname();

  for (std::string* path : {&c.tls.cert_file, &c.tls.key_file, &c.tls.client_ca_file,
                            &c.hsm.pin_file, &c.hsm.softhsm2_conf, &c.store.sqlite_path,
                            &c.store.postgres.password_file, &c.store.postgres.sslrootcert,
                            &c.redis.password_file, &c.policy_file, &c.xks.tls.cert_file,
                            &c.xks.tls.key_file, &c.xks.tls.client_ca_file}) {
    ResolvePath(base_dir, *path);
  }
  for (XksCredentialConfig& cred : c.xks.credentials) ResolvePath(base_dir, cred.secret_access_key_file);
  // A bare library name is for the dynamic loader's search path; only a relative path
  // with a directory in it is relative to the config file.
  if (c.hsm.module_path.find('/') != std::string::npos) ResolvePath(base_dir, c.hsm.module_path);

  KMS_RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  KMS_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, "config"));

  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  std::string base_dir = ec ? std::filesystem::path(path).parent_path().string()
                            : absolute.parent_path().string();
  absl::StatusOr<Config> config = ParseConfig(text, base_dir);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace kms::config
