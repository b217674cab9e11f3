#include "src/server/server.h"

#include <openssl/crypto.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpc/support/log.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "spdlog/spdlog.h"
#include "src/audit/audit_log.h"
#include "src/authz/policy.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/hsm/resilient_hsm.h"
#include "src/keys/backend_executor.h"
#include "src/keys/guarded_backends.h"
#include "src/server/grpc/rpc_pool.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/metrics/registry.h"
#include "src/server/gate/call_gate.h"
#include "src/server/grpc/rpc_metrics.h"
#include "src/server/observability.h"
#include "src/server/grpc/admin_service.h"
#include "src/server/grpc/key_service.h"
#include "src/server/grpc/listener_probe.h"
#include "src/server/grpc/unary.h"
#include "src/server/gate/inflight_budget.h"
#include "src/server/open_file_limit.h"
#include "src/server/http/https_server.h"
#include "src/server/k8s_kms/kms_plugin.h"
#include "src/server/xks/xks_door.h"
#include "src/common/secret_file.h"
#include <sys/stat.h>
#include "src/server/vault/vault_door.h"
#include "src/common/text_file.h"
#include "src/coord/rate_limiters.h"
#include "src/coord/redis_invalidation_bus.h"
#include "src/store/postgres/postgres_key_store.h"
#include "src/store/postgres/postgres_leader_election.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "src/sched/health_state.h"
#include "src/sched/key_jobs.h"
#include "src/sched/key_state.h"
#include "src/sched/rotation.h"
#include "src/sched/scheduler.h"
#include "src/sched/store_epoch.h"

#ifndef KMSD_VERSION
#define KMSD_VERSION "dev"
#endif

namespace kms::server {

void RestrictGrpcToTls13() { setenv("GRPC_SSL_CIPHER_SUITES", "PSK-AES256-GCM-SHA384", 1); }

void RouteGrpcLogsToSpdlog() {
  gpr_set_log_function([](gpr_log_func_args* args) {
    const spdlog::level::level_enum level = args->severity == GPR_LOG_SEVERITY_ERROR
                                                ? spdlog::level::err
                                                : args->severity == GPR_LOG_SEVERITY_INFO
                                                      ? spdlog::level::info
                                                      : spdlog::level::debug;
    spdlog::log(level, "grpc: {} ({}:{})", args->message != nullptr ? args->message : "",
                args->file != nullptr ? args->file : "", args->line);
  });
}

struct KmsServer::Parts {
  config::Config config;
  std::unique_ptr<http::HttpsServer> http;
  // The Vault transit door on the HTTPS listener (config vault.*); attached once loaded.
  std::unique_ptr<vault::VaultDoor> vault;
  std::atomic<bool> ready{false};
  // Health: /readyz, grpc.health.v1 and GetStatus all read this one source.
  std::unique_ptr<sched::HealthState> health;
  // Metrics (null when metrics.enabled is false). Declared before the parts whose
  // functions it reads, so it goes after them.
  std::unique_ptr<metrics::MetricRegistry> metrics;
  std::unique_ptr<RpcMetrics> rpc_metrics;
  OperationalMetrics ops;
  std::unique_ptr<sched::KeyStateCache> key_state;
  std::unique_ptr<hsm::ResilientHsm> hsm;
  std::unique_ptr<store::KeyStore> store_backend;
  // Every HSM and store call goes through these (pools, deadlines, circuits); the parts
  // below only ever see the guarded seams. Declared after the backends, before their
  // users: destroyed after the users, before the backends.
  std::unique_ptr<keys::BackendExecutor> hsm_executor;
  std::unique_ptr<keys::BackendExecutor> store_executor;
  std::unique_ptr<keys::GuardedHsm> guarded_hsm;
  std::unique_ptr<store::KeyStore> store;  // the guarded store
  std::unique_ptr<keys::HsmKekRing> kek_ring;
  std::unique_ptr<authz::PolicyAuthorizer> authz;
  std::unique_ptr<keys::KeyManager> keys;
  std::unique_ptr<jwt::JwtService> jwt;
  std::unique_ptr<coord::InvalidationBus> bus;
  std::unique_ptr<coord::RateLimiter> limiter;
  std::unique_ptr<coord::LeaderElection> leader;
  std::unique_ptr<sched::StoreEpochSource> epoch;
  std::unique_ptr<sched::KeyManagerSink> invalidations;
  std::unique_ptr<sched::Scheduler> scheduler;
  std::unique_ptr<sched::RotationService> rotation;
  std::unique_ptr<audit::AuditLog> audit;  // null when audit.enabled is false
  std::unique_ptr<CallGate> gate;
  std::unique_ptr<KeyServiceImpl> key_service;
  std::unique_ptr<AdminServiceImpl> admin_service;
  // Runs the RPC bodies (grpc/rpc_pool.h); destroyed after the gRPC server.
  std::unique_ptr<RpcPool> rpc_pool;
  std::unique_ptr<grpc::Server> grpc;
  int grpc_port = 0;
  std::unique_ptr<InflightBudget> budget;
  // The gRPC listener probe's verdict (grpc/listener_probe.h): whether the last probe
  // completed a TLS handshake, and since when (Unix seconds) it has been failing.
  std::atomic<bool> grpc_accepting{true};
  std::atomic<int64_t> grpc_failing_since{0};
  // The XKS door (its own HTTPS listener) and the Kubernetes KMS plugin (its own gRPC
  // server on a unix socket); null when not configured.
  std::unique_ptr<xks::XksDoor> xks;
  std::unique_ptr<http::HttpsServer> xks_http;
  std::unique_ptr<k8s_kms::KmsPluginService> k8s_kms;
  std::unique_ptr<grpc::Server> k8s_grpc;
};

namespace {

// The bounds of the gRPC listener against peers that have not authenticated (gRPC 1.51
// has no connection cap; docs/security.md says what stays unbounded).
// A connection must finish its TLS handshake (client certificate verified) this soon
// after accept, else gRPC closes it: an idle or slow TCP peer holds a descriptor this long.
constexpr int kGrpcHandshakeTimeoutMs = 5000;
// An authenticated connection with no call for this long is closed (GOAWAY).
constexpr int kGrpcMaxConnectionIdleMs = 5 * 60 * 1000;
// Every connection is recycled after this long (plus the grace for calls in flight), so
// no connection holds server state for ever.
constexpr int kGrpcMaxConnectionAgeMs = 60 * 60 * 1000;
constexpr int kGrpcMaxConnectionAgeGraceMs = 30 * 1000;
// Keepalive pings find dead peers of idle connections.
constexpr int kGrpcKeepaliveTimeMs = 60 * 1000;
constexpr int kGrpcKeepaliveTimeoutMs = 20 * 1000;
// Concurrent calls per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
constexpr int kGrpcMaxConcurrentStreams = 64;
// Request metadata per call (HTTP/2 header list).
constexpr int kGrpcMaxMetadataBytes = 16 * 1024;
// gRPC's own memory (transport buffers of every connection: received bytes before a
// handler sees them); under pressure gRPC shrinks flow-control windows and cancels
// streams ("Buffers full"). Threads: gRPC's resource-quota thread cap.
constexpr int64_t kGrpcQuotaMemoryBytes = 128 << 20;
constexpr int kGrpcQuotaMaxThreads = 64;
// The listener probe: how often, how long one may take, and how long a failure may last
// before /healthz fails too (gRPC 1.51 does not recover from it: restart the process).
constexpr std::chrono::seconds kGrpcProbeInterval(5);
constexpr std::chrono::milliseconds kGrpcProbeTimeout(3000);
constexpr int64_t kGrpcProbeDeadAfterSeconds = 30;

// Wipes a string holding a private key when the scope ends, on every path.
class WipeOnExit {
 public:
  explicit WipeOnExit(std::string& s) : s_(s) {}
  ~WipeOnExit() { OPENSSL_cleanse(s_.data(), s_.size()); }

 private:
  std::string& s_;
};

// Runs `open` until it succeeds, fails for a reason other than UNAVAILABLE, or a stop
// is requested. Backoff: 1 s, doubling, at most 30 s. While it waits, `health` (when
// given) says what start-up waits for (/readyz shows it with its 503).
template <typename T>
absl::StatusOr<T> OpenWithBackoff(const char* what, const std::atomic<bool>* stop,
                                  const std::function<absl::StatusOr<T>()>& open,
                                  sched::HealthState* health = nullptr,
                                  std::optional<sched::Backend> backend = std::nullopt) {
  auto delay = std::chrono::seconds(1);
  while (true) {
    if (health) health->SetLoading(absl::StrCat("loading the ", what));
    absl::StatusOr<T> result = open();
    if (health && backend) health->Report(*backend, result.status());
    if (result.ok() || !absl::IsUnavailable(result.status())) return result;
    if (health) {
      health->SetLoading(absl::StrCat(what, " unavailable at start; retrying with backoff"));
    }
    spdlog::warn("{} unavailable ({}); retrying in {} s", what, std::string(result.status().message()),
                 delay.count());
    for (auto waited = std::chrono::milliseconds(0); waited < delay;
         waited += std::chrono::milliseconds(100)) {
      if (stop && stop->load()) return absl::CancelledError("stopped while waiting for backends");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    delay = std::min(delay * 2, std::chrono::seconds(30));
  }
}

store::PostgresOptions PostgresOptionsFrom(const config::Config& config) {
  const config::PostgresConfig& pg = config.store.postgres;
  store::PostgresOptions o;
  o.conninfo = pg.conninfo;
  o.password_file = pg.password_file;
  o.sslmode = pg.sslmode;
  o.sslrootcert = pg.sslrootcert;
  o.pool_size = pg.pool_size;
  o.schema = pg.schema;
  o.application_name = "kmsd " + config.node_id;
  return o;
}

absl::StatusOr<std::unique_ptr<store::KeyStore>> OpenStore(const config::Config& config) {
  if (config.store.backend == "postgres") {
    KMS_ASSIGN_OR_RETURN(auto pg, store::PostgresKeyStore::Open(PostgresOptionsFrom(config)));
    return std::unique_ptr<store::KeyStore>(std::move(pg));
  }
  KMS_ASSIGN_OR_RETURN(auto sqlite, store::SqliteKeyStore::Open(config.store.sqlite_path));
  return std::unique_ptr<store::KeyStore>(std::move(sqlite));
}

// The JWT options from the config, then the environment (KEY_MAX_AGE,
// KMS_ROTATION_PERIOD / VAULT_ROTATION_PERIOD, JWT_ACCESS_TOKEN_TTL: not secrets).
absl::StatusOr<jwt::JwtServiceOptions> JwtOptionsFrom(const config::JwtConfig& c) {
  jwt::JwtServiceOptions o;
  o.issuer = c.issuer;
  o.max_ttl_seconds = c.max_ttl_seconds;
  o.clock_skew_seconds = c.clock_skew_seconds;
  o.jwks_cache_seconds = c.jwks_cache_seconds;
  o.rotation_period_seconds = c.rotation_period_seconds;
  o.key_max_age_seconds = c.key_max_age_seconds;
  o.fail_closed_when_critical = c.fail_closed_when_critical;
  o.max_claims_bytes = static_cast<size_t>(c.max_claims_bytes);
  // Ticks often enough that a replica sees another's rotation well within the window.
  o.refresh_interval_seconds = std::clamp<int64_t>(c.jwks_cache_seconds / 4, 1, 30);
  KMS_RETURN_IF_ERROR(jwt::ApplyEnvironmentOverrides(o));
  KMS_RETURN_IF_ERROR(jwt::ValidateOptions(o));
  return o;
}

// grpc.health.v1: the overall service ("") is SERVING whenever kmsd serves, degraded or
// not (a shared store's outage must not make every replica unready at once); one named
// service per backend ("kmsd.hsm", "kmsd.store", "kmsd.redis") tells which is down.
void ApplyGrpcHealth(grpc::HealthCheckServiceInterface* service, const sched::HealthSnapshot& s) {
  if (service == nullptr) return;
  service->SetServingStatus("", s.serving());
  for (const sched::BackendHealth& b : s.backends) {
    service->SetServingStatus(absl::StrCat("kmsd.", b.name), s.serving() && b.up);
  }
}

// The rotation options from the config; KMS_ROTATION_PERIOD / VAULT_ROTATION_PERIOD,
// when set, replace both periods (as they replace the JWT one).
absl::StatusOr<sched::RotationOptions> RotationOptionsFrom(const config::Config& config) {
  const config::RotationConfig& c = config.rotation;
  sched::RotationOptions o;
  o.check_interval = std::chrono::seconds(c.check_interval_seconds);
  o.kek_period_seconds = c.kek_period_seconds;
  o.dek_period_seconds = c.dek_period_seconds;
  KMS_ASSIGN_OR_RETURN(int64_t env_period, jwt::RotationPeriodFromEnvironment(
                                               [](const char* name) { return std::getenv(name); }));
  if (env_period > 0) {
    o.kek_period_seconds = env_period;
    o.dek_period_seconds = env_period;
  }
  o.dek_rotations_per_check = static_cast<int>(c.dek_rotations_per_check);
  o.rewrap_rate_per_second = c.rewrap_rate_per_second;
  o.rewrap_batch_size = static_cast<int>(c.rewrap_batch_size);
  o.rewrap_parallelism = static_cast<int>(c.rewrap_parallelism);
  o.retired_kek_keep_days = c.retired_kek_keep_days;
  // With SQLite this node is the only one; with PostgreSQL, every replica has seen the new
  // KEK (epoch poll) before an old one is retired and unloaded.
  o.retire_grace = config.store.backend == "postgres"
                       ? std::chrono::seconds(2 * config.cluster.poll_interval_seconds)
                       : std::chrono::seconds(0);
  return o;
}

// The XKS door on a listener of its own: SigV4 credentials from their files, every path
// to one blocking handler with the latency budget answered as the specification's
// DependencyTimeoutException and a full queue as ThrottlingException.
absl::Status StartXksDoor(KmsServer::Parts& p, const config::Config& config);
absl::Status StartK8sKmsPlugin(KmsServer::Parts& p, const config::Config& config);

}  // namespace

KmsServer::KmsServer() : parts_(std::make_unique<Parts>()) {}

KmsServer::~KmsServer() { Shutdown(); }

int KmsServer::grpc_port() const { return parts_->grpc_port; }
int KmsServer::http_port() const { return parts_->http ? parts_->http->port() : 0; }

absl::StatusOr<std::unique_ptr<KmsServer>> KmsServer::Start(const config::Config& config,
                                                           const std::atomic<bool>* stop) {
  KMS_RETURN_IF_ERROR(config::ValidateConfig(config));
  // Before any descriptor is opened: a limit too low for the backends is the operator's
  // to fix, said at once.
  KMS_RETURN_IF_ERROR(RaiseOpenFileLimit(OpenFileNeedsOf(config)).status());
  // Every method's largest request must fit the door's in-flight budget.
  const size_t largest_request = KeyServiceRequestLimits::From(config.limits).Largest();
  if (static_cast<int64_t>(largest_request) > config.limits.max_inflight_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "limits.max_inflight_request_bytes (", config.limits.max_inflight_request_bytes,
        ") must be at least the largest request (", largest_request,
        " bytes with these limits)"));
  }
  std::unique_ptr<KmsServer> server(new KmsServer());
  Parts& p = *server->parts_;
  p.config = config;
  SetSecretMemoryLocking(config.lock_memory);
  p.health = std::make_unique<sched::HealthState>(RealClock::Instance(), !config.redis.addr.empty());
  if (config.metrics.enabled) {
    p.metrics = std::make_unique<metrics::MetricRegistry>();
    RegisterHealthMetrics(*p.metrics, *p.health, KMSD_VERSION);
  }

  if (!config.http_listen.empty()) {
    using http::Response;
    KMS_ASSIGN_OR_RETURN(p.http, http::HttpsServer::Bind(config.http_listen, config.tls, config.http));
    p.http->Handle("/healthz", [&p](const http::Request&) {
      // A gRPC listener that stopped accepting does not recover (gRPC 1.51): once it has
      // failed for kGrpcProbeDeadAfterSeconds, liveness fails so the process restarts.
      const int64_t since = p.grpc_failing_since.load();
      if (since != 0 && RealClock::Instance().UnixSeconds() - since >= kGrpcProbeDeadAfterSeconds) {
        return Response{.status = 503, .body = "gRPC listener not accepting connections\n"};
      }
      return Response{.body = "ok\n"};
    });
    // 503 until every key is loaded, and while the gRPC listener does not accept; 200
    // while serving, saying "degraded" and naming the backend when the HSM or the store
    // is down (cached keys are still served).
    p.http->Handle("/readyz", [&p](const http::Request&) {
      const sched::HealthSnapshot s = p.health->Snapshot();
      if (s.serving() && !p.grpc_accepting) {
        return Response{.status = 503, .body = "gRPC listener not accepting connections\n"};
      }
      return Response{.status = s.serving() ? 200 : 503, .body = s.Describe()};
    });
    if (p.metrics) {
      // Prometheus text format, served from the start (while loading: the health series,
      // kmsd_ready 0). Scrape-time reads are in memory, but the exposition of a few
      // hundred series is not microseconds: it runs on the worker pool.
      const bool require_cert = config.metrics.require_client_cert;
      p.http->Handle(
          "/metrics",
          [&p, require_cert](const http::Request& req) {
            if (require_cert && !req.authenticated()) {
              return Response{.status = 403, .body = "a client certificate is required\n"};
            }
            return Response{.content_type = std::string(metrics::MetricRegistry::kContentType),
                            .body = p.metrics->WriteText()};
          },
          http::Route{.kind = http::HandlerKind::kBlocking});
    }
    // Public: verifiers anywhere fetch the keys; a client certificate is not needed.
    // Routes are fixed before the listener starts; p.jwt is read only once p.ready.
    // Jwks() copies a snapshot: it never blocks, so it runs on the event loop.
    p.http->Handle("/.well-known/jwks.json", [&p](const http::Request&) {
      absl::StatusOr<jwt::JwksDocument> jwks =
          p.ready ? p.jwt->Jwks() : absl::UnavailableError("loading");
      if (!jwks.ok()) return Response{.status = 503, .body = "signing keys not loaded\n"};
      return Response{.content_type = "application/jwk-set+json",
                      .body = jwks->json,
                      .headers = {{"Cache-Control", jwks->CacheControl()}}};
    });
    // The keys that verify shred receipts: every signing key ever stored, retired ones
    // too, so an old receipt verifies for good (docs/architecture.md, "Shred receipts").
    p.http->Handle("/.well-known/kmsd-receipt-keys.json", [&p](const http::Request&) {
      absl::StatusOr<jwt::JwksDocument> keys =
          p.ready ? p.jwt->ReceiptKeys() : absl::UnavailableError("loading");
      if (!keys.ok()) return Response{.status = 503, .body = "signing keys not loaded\n"};
      return Response{.content_type = "application/jwk-set+json",
                      .body = keys->json,
                      .headers = {{"Cache-Control", keys->CacheControl()}}};
    });
    if (config.vault.enabled) {
      p.vault = std::make_unique<vault::VaultDoor>(
          config, vault::VaultDoorInfo{.node_id = config.node_id, .version = KMSD_VERSION},
          RealClock::Instance());
      p.vault->Register(*p.http);
      if (p.metrics) p.vault->set_metrics(p.metrics.get());
    }
    p.http->Start();
  }

  // Policy and credentials first: they are files, and their errors are the operator's.
  KMS_ASSIGN_OR_RETURN(p.authz, authz::PolicyAuthorizer::FromFile(config.policy_file));
  KMS_ASSIGN_OR_RETURN(std::string cert, ReadTextFile(config.tls.cert_file, "tls.cert_file"));
  KMS_ASSIGN_OR_RETURN(std::string ca, ReadTextFile(config.tls.client_ca_file, "tls.client_ca_file"));

  if (!config.hsm.softhsm2_conf.empty()) setenv("SOFTHSM2_CONF", config.hsm.softhsm2_conf.c_str(), 1);
  KMS_ASSIGN_OR_RETURN(hsm::MasterKeyKind kind, hsm::ParseMasterKeyKind(config.hsm.master_key_kind));
  hsm::Pkcs11Options hsm_options{.module_path = config.hsm.module_path,
                                 .token_label = config.hsm.token_label,
                                 .pin_file = config.hsm.pin_file,
                                 .master_key_label = config.hsm.master_key_label,
                                 .master_key_kind = kind,
                                 .create_master_key = true,
                                 .max_sessions = config.hsm.max_sessions};
  // A call that hit an HSM restart waits for the re-initialisation for at most half its
  // deadline, so it can still be retried within it.
  hsm::ResilienceOptions resilience{
      .serialize_calls = config.hsm.serialize_calls,
      .recovery_wait = std::chrono::milliseconds(config.backends.call_timeout_ms / 2)};
  KMS_ASSIGN_OR_RETURN(
      p.hsm, OpenWithBackoff<std::unique_ptr<hsm::ResilientHsm>>(
                 "HSM", stop,
                 [&] {
                   return hsm::ResilientHsm::Open(
                       [hsm_options] { return hsm::Pkcs11Hsm::Open(hsm_options); },
                       hsm_options.pin_file, resilience);
                 },
                 p.health.get(), sched::Backend::kHsm));
  spdlog::info("HSM self-test passed (AES-256-GCM known answer, KEK wrap round trip){}",
               config.hsm.serialize_calls ? "; every PKCS#11 call is serialized" : "");
  const auto backend_options = [&config](std::string name) {
    return keys::BackendExecutorOptions{
        .name = std::move(name),
        .threads = config.backends.threads,
        .max_queue = static_cast<size_t>(config.backends.max_queue),
        .call_timeout = std::chrono::milliseconds(config.backends.call_timeout_ms),
        .open_initial = std::chrono::milliseconds(config.backends.open_initial_ms),
        .open_max = std::chrono::milliseconds(config.backends.open_max_ms)};
  };
  p.hsm_executor = std::make_unique<keys::BackendExecutor>(backend_options("hsm"));
  // A circuit that opens or closes is reported at once, not at the next probe.
  p.hsm_executor->SetListener(
      [&p](const absl::Status& s) { p.health->Report(sched::Backend::kHsm, s); });
  // The HSM probes itself while its circuit is open, so no request is ever the probe that
  // waits out a hung backend's deadline.
  p.hsm_executor->SetProbe([&p] { return p.hsm->Ping(); });
  p.guarded_hsm = std::make_unique<keys::GuardedHsm>(p.hsm.get(), p.hsm_executor.get());
  if (p.hsm->created_master_key()) {
    spdlog::info("created master key '{}' ({}) in token '{}'", config.hsm.master_key_label,
                 config.hsm.master_key_kind, config.hsm.token_label);
  }
  spdlog::info("KEKs are wrapped with {}", hsm::KekWrapMechanismName(p.hsm->kek_wrap_mechanism()));

  KMS_ASSIGN_OR_RETURN(p.store_backend, OpenWithBackoff<std::unique_ptr<store::KeyStore>>(
                                   "key store", stop, [&] { return OpenStore(config); }, p.health.get(),
                                   sched::Backend::kStore));
  p.store_executor = std::make_unique<keys::BackendExecutor>(backend_options("store"));
  p.store_executor->SetListener(
      [&p](const absl::Status& s) { p.health->Report(sched::Backend::kStore, s); });
  p.store_executor->SetProbe([&p] { return p.store_backend->Ping(); });
  p.store = std::make_unique<keys::GuardedKeyStore>(p.store_backend.get(), p.store_executor.get());

  KMS_ASSIGN_OR_RETURN(jwt::JwtServiceOptions jwt_options, JwtOptionsFrom(config.jwt));
  keys::KeyManagerOptions key_options{
      .cache = {.ttl = std::chrono::seconds(config.dek_cache.ttl_seconds),
                .max_entries = static_cast<size_t>(config.dek_cache.max_entries)},
      .auto_create_tenants = config.tenants_auto_create,
      .usage_flush_min_count = static_cast<uint64_t>(config.dek_cache.usage_flush_min_count),
      .usage_flush_max_age = std::chrono::seconds(config.dek_cache.usage_flush_max_age_seconds)};
  key_options.cache.max_stale = std::chrono::seconds(jwt_options.key_max_age_seconds);
  KMS_ASSIGN_OR_RETURN(
      p.kek_ring, OpenWithBackoff<std::unique_ptr<keys::HsmKekRing>>("KEK ring", stop, [&] {
        return keys::HsmKekRing::Create(p.guarded_hsm.get(), p.store.get(), &RealClock::Instance());
      }, p.health.get()));
  KMS_ASSIGN_OR_RETURN(p.keys, keys::KeyManager::Create(p.kek_ring.get(), p.store.get(),
                                                        &RealClock::Instance(), key_options));
  KMS_ASSIGN_OR_RETURN(p.jwt, jwt::JwtService::Create(p.kek_ring.get(), p.store.get(),
                                                      p.store.get(), &RealClock::Instance(),
                                                      jwt_options));
  KMS_RETURN_IF_ERROR(OpenWithBackoff<bool>("JWT signing keys", stop, [&]() -> absl::StatusOr<bool> {
                        KMS_RETURN_IF_ERROR(p.jwt->Load());
                        return true;
                      }, p.health.get()).status());

  // Coordination: Redis when configured (never required), leadership from the store.
  const std::string& node_id = config.node_id;  // ValidateConfig: never empty
  if (!config.redis.addr.empty()) {
    coord::RedisOptions redis{.addr = config.redis.addr,
                              .connect_timeout = std::chrono::milliseconds(config.redis.connect_timeout_ms),
                              .command_timeout = std::chrono::milliseconds(config.redis.command_timeout_ms),
                              .password_file = config.redis.password_file};
    KMS_ASSIGN_OR_RETURN(p.bus, coord::RedisInvalidationBus::Create(redis, node_id));
    KMS_ASSIGN_OR_RETURN(p.limiter, coord::RedisRateLimiter::Create(redis));
  } else {
    p.limiter = std::make_unique<coord::LocalRateLimiter>();
  }
  if (config.store.backend == "postgres") {
    KMS_ASSIGN_OR_RETURN(p.leader, store::PostgresLeaderElection::Create(PostgresOptionsFrom(config)));
  } else {
    p.leader = std::make_unique<sched::AlwaysLeader>();
  }
  p.epoch = std::make_unique<sched::StoreEpochSource>(*p.store);
  p.invalidations = std::make_unique<sched::KeyManagerSink>(*p.keys);
  p.scheduler = std::make_unique<sched::Scheduler>(
      RealClock::Instance(), *p.epoch, *p.invalidations, p.bus.get(), *p.leader,
      sched::Scheduler::Options{
          .poll_interval = std::chrono::seconds(config.cluster.poll_interval_seconds)});
  KMS_RETURN_IF_ERROR(p.scheduler->AddJob(
      sched::MakeJwtTickJob(*p.jwt, std::chrono::seconds(jwt_options.refresh_interval_seconds))));
  KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeDekUsageFlushJob(*p.keys)));
  // Health probes on the scheduler's thread, never on a request thread.
  sched::HealthProbes probes{.hsm = [&p] { return p.kek_ring->Ping(); },
                             .store = [&p] { return p.store->Ping(); }};
  if (p.bus) {
    probes.redis = [&p] {
      return p.scheduler->bus_healthy() ? absl::OkStatus() : absl::UnavailableError("unreachable");
    };
  }
  KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeHealthProbeJob(
      *p.health, std::move(probes), std::chrono::seconds(config.health.probe_interval_seconds))));
  // Key ages for the metrics, read from the store by a job, never by a scrape, against
  // the same rotation periods the rotation check uses.
  KMS_ASSIGN_OR_RETURN(sched::RotationOptions rotation_options, RotationOptionsFrom(config));
  p.key_state = std::make_unique<sched::KeyStateCache>(
      *p.store, *p.store, [&p] { return p.kek_ring->primary_version(); });
  p.key_state->set_now_for_refresh([] { return RealClock::Instance().UnixSeconds(); });
  p.key_state->SetRotationPeriod(sched::RotatingKey::kKek, rotation_options.kek_period_seconds);
  p.key_state->SetRotationPeriod(sched::RotatingKey::kDek, rotation_options.dek_period_seconds);
  p.key_state->SetRotationPeriod(sched::RotatingKey::kJwt, jwt_options.rotation_period_seconds);
  if (absl::Status refreshed = p.key_state->Refresh(); !refreshed.ok()) {
    spdlog::warn("key ages not read at start: {}", refreshed.ToString());
  }
  KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeKeyStateRefreshJob(*p.key_state)));
  {
    std::vector<std::unique_ptr<sched::RewrapTarget>> targets;
    targets.push_back(std::make_unique<sched::DekRewrapTarget>(
        p.kek_ring.get(), p.store.get(), p.store.get(), rotation_options.rewrap_parallelism));
    targets.push_back(std::make_unique<sched::JwtRewrapTarget>(p.jwt.get(), p.store.get()));
    p.rotation = std::make_unique<sched::RotationService>(
        RealClock::Instance(), *p.store, *p.kek_ring, *p.keys, p.jwt.get(), std::move(targets),
        std::move(rotation_options));
    p.rotation->SetOnJobCreated([&p] { p.scheduler->Trigger(sched::kKekRewrapJobName).IgnoreError(); });
    p.rotation->SetPublish([&p](const coord::InvalidationEvent& e) { p.scheduler->Publish(e); });
    KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeRotationCheckJob(*p.rotation)));
    KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeKekRewrapJob(*p.rotation)));
  }
  KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeJob(
      "grpc_listener_probe", kGrpcProbeInterval, /*leader_only=*/false,
      [&p](const sched::JobContext&) -> absl::Status {
        absl::Status probe = ProbeTlsListener(p.config.grpc_listen, p.grpc_port, kGrpcProbeTimeout);
        if (probe.ok()) {
          if (!p.grpc_accepting.exchange(true)) spdlog::info("gRPC listener accepts again");
          p.grpc_failing_since = 0;
          return probe;
        }
        if (p.grpc_accepting.exchange(false)) {
          spdlog::error("gRPC listener is not accepting connections ({}); /readyz reports not "
                        "ready, and /healthz fails after {} s",
                        std::string(probe.message()), kGrpcProbeDeadAfterSeconds);
          int64_t expected = 0;
          p.grpc_failing_since.compare_exchange_strong(expected, RealClock::Instance().UnixSeconds());
        }
        return probe;
      })));
  p.keys->SetChangeListener(
      [&p](const coord::InvalidationEvent& event) { p.scheduler->Publish(event); });
  p.kek_ring->SetChangeListener(
      [&p](const coord::InvalidationEvent& event) { p.scheduler->Publish(event); });

  // The audit log: this node's chain in the store, resumed from its last record.
  store::AuditStore* audit_store = dynamic_cast<store::AuditStore*>(p.store.get());
  if (audit_store == nullptr || !static_cast<keys::GuardedKeyStore*>(p.store.get())->has_audit()) {
    return absl::InternalError("the key store has no audit log");
  }
  if (config.audit.enabled) {
    audit::AuditLogOptions audit_options{
        .node = node_id,
        .flush_interval = std::chrono::milliseconds(config.audit.flush_interval_ms),
        .max_backlog = static_cast<size_t>(config.audit.max_backlog),
        .refuse_admin_when_full = config.audit.refuse_admin_when_full};
    KMS_ASSIGN_OR_RETURN(
        p.audit, OpenWithBackoff<std::unique_ptr<audit::AuditLog>>("audit log", stop, [&] {
          return audit::AuditLog::Create(*audit_store, audit_options);
        }));
    const int64_t retention_ms = config.audit.retention_days * 86400 * 1000;
    KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeJob(
        "audit-retention", std::chrono::hours(1), /*leader_only=*/true,
        [audit_store, retention_ms](const sched::JobContext&) -> absl::Status {
          const int64_t now_ms = RealClock::Instance().UnixSeconds() * 1000;
          KMS_ASSIGN_OR_RETURN(int64_t deleted, audit_store->DeleteAuditBefore(now_ms - retention_ms));
          if (deleted > 0) spdlog::info("audit: {} records past retention deleted", deleted);
          return absl::OkStatus();
        })));
    p.audit->Start();
  }
  p.gate = std::make_unique<CallGate>(*p.authz, p.limiter.get(), p.audit.get());
  if (p.metrics) {
    p.ops = RegisterKmsdMetrics(*p.metrics, MetricSources{.clock = &RealClock::Instance(),
                                                          .keys = p.keys.get(),
                                                          .hsm = p.hsm.get(),
                                                          .jwt = p.jwt.get(),
                                                          .key_state = p.key_state.get(),
                                                          .key_max_age_seconds =
                                                              jwt_options.key_max_age_seconds,
                                                          .version = KMSD_VERSION});
    p.gate->set_rate_limited_counter(p.ops.rate_limited);
    p.rotation->SetRewrappedCounter(p.ops.rewrapped_keys);
    p.rpc_metrics = std::make_unique<RpcMetrics>(
        *p.metrics, std::vector<std::string>{"kms.v1.KeyService", "kms.v1.AdminService"});
    RpcMetrics::Install(p.rpc_metrics.get());
  }
  if (p.metrics && p.audit) {
    // The audit log's backlog and drops for the metrics (and the AuditRecordsDropped alert).
    KMS_RETURN_IF_ERROR(p.scheduler->AddJob(sched::MakeJob(
        "audit-metrics", std::chrono::seconds(5), /*leader_only=*/false,
        [&p, reported = uint64_t{0}](const sched::JobContext&) mutable -> absl::Status {
          const audit::AuditLogStats s = p.audit->stats();
          if (p.ops.audit_backlog) p.ops.audit_backlog->Set(static_cast<double>(s.backlog));
          if (p.ops.audit_dropped && s.dropped > reported) {
            p.ops.audit_dropped->Increment(s.dropped - reported);
          }
          reported = s.dropped;
          return absl::OkStatus();
        })));
  }
  p.key_service = std::make_unique<KeyServiceImpl>(*p.keys, *p.jwt, *p.gate, config.limits);
  p.admin_service = std::make_unique<AdminServiceImpl>(
      *p.keys, *p.kek_ring, *p.jwt, *p.store, *p.gate, *p.scheduler, RealClock::Instance(),
      NodeInfo{.node_id = node_id,
               .version = KMSD_VERSION,
               .store_backend = std::string(p.store->backend_name()),
               .master_key_kind = config.hsm.master_key_kind,
               .started_at_unix = RealClock::Instance().UnixSeconds()});
  p.admin_service->SetRotation(p.rotation.get());
  p.admin_service->set_audit_store(audit_store);
  if (p.audit) {
    p.admin_service->set_audit_health([&p]() -> absl::Status {
      const audit::AuditLogStats s = p.audit->stats();
      if (s.full) return absl::ResourceExhaustedError("backlog full");
      if (s.store_failing) return absl::UnavailableError("not written");
      return absl::OkStatus();
    });
  }

  p.rpc_pool = std::make_unique<RpcPool>(config.backends.request_threads,
                                         static_cast<size_t>(config.backends.request_queue));
  RpcPool::Install(p.rpc_pool.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // The server key is read only now, and wiped on every path out of this scope.
  KMS_ASSIGN_OR_RETURN(std::string key, ReadTextFile(config.tls.key_file, "tls.key_file"));
  WipeOnExit wipe_key(key);
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = ca;
  tls.pem_key_cert_pairs.push_back({std::move(key), cert});
  WipeOnExit wipe_option_key(tls.pem_key_cert_pairs[0].private_key);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.grpc_listen, grpc::SslServerCredentials(tls), &p.grpc_port);
  // gRPC sets SO_REUSEPORT by default: a second kmsd on the same port would start, say
  // "ready" and take half the connections (with its own certificates). Refuse instead,
  // as the HTTPS listener does.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, kGrpcHandshakeTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, kGrpcMaxConnectionIdleMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, kGrpcMaxConnectionAgeMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, kGrpcMaxConnectionAgeGraceMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kGrpcKeepaliveTimeMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kGrpcKeepaliveTimeoutMs);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kGrpcMaxConcurrentStreams);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kGrpcMaxMetadataBytes);
  grpc::ResourceQuota quota("kmsd-grpc");
  quota.Resize(kGrpcQuotaMemoryBytes);
  quota.SetMaxThreads(kGrpcQuotaMaxThreads);
  builder.SetResourceQuota(quota);
  // The door's in-flight budget, checked by every raw handler before it decodes.
  p.budget = std::make_unique<InflightBudget>(config.limits.max_inflight_request_bytes);
  SetDoorBudget(p.budget.get());
  builder.RegisterService(p.key_service.get());
  builder.RegisterService(p.admin_service.get());
  // gRPC buffers a whole message before a handler sees it: its limit is the largest of
  // the door's per-method limits (a full batch of maximal items), so each method's own
  // limit, checked before decoding, is what callers meet. The per-method limits shape
  // the answer; this one bounds the memory of one request.
  const KeyServiceRequestLimits door_limits = KeyServiceRequestLimits::From(config.limits);
  const int64_t max_message = std::min<int64_t>(
      static_cast<int64_t>(door_limits.Largest()),
      1 << 30);
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message));
  builder.SetMaxSendMessageSize(static_cast<int>(max_message));
  p.grpc = builder.BuildAndStart();
  if (!p.grpc || p.grpc_port == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen for gRPC on ", config.grpc_listen,
                     " (address in use, or the TLS certificate/key do not load)"));
  }
  p.admin_service->set_health(p.health.get());
  p.health->SetServing();
  p.health->SetListener([&p](const sched::HealthSnapshot& s) {
    ApplyGrpcHealth(p.grpc->GetHealthCheckService(), s);
  });
  ApplyGrpcHealth(p.grpc->GetHealthCheckService(), p.health->Snapshot());
  if (!config.xks.listen.empty()) KMS_RETURN_IF_ERROR(StartXksDoor(p, config));
  if (!config.k8s_kms.socket_path.empty()) KMS_RETURN_IF_ERROR(StartK8sKmsPlugin(p, config));
  if (p.vault) {
    p.vault->Attach(*p.keys, *p.jwt, *p.gate, [&p] { return p.health->Snapshot().serving(); });
  }
  p.scheduler->Start();
  p.ready = true;
  return server;
}

int KmsServer::xks_port() const { return parts_->xks_http ? parts_->xks_http->port() : 0; }

namespace {

absl::Status StartXksDoor(KmsServer::Parts& p, const config::Config& config) {
  const config::XksConfig& x = config.xks;
  std::vector<xks::SigV4Credential> credentials;
  for (const config::XksCredentialConfig& c : x.credentials) {
    KMS_ASSIGN_OR_RETURN(SecretBytes secret,
                         ReadSecretFile(c.secret_access_key_file, "xks secret_access_key_file", 1024));
    credentials.push_back(xks::SigV4Credential{.access_key_id = c.access_key_id,
                                               .secret_access_key = std::move(secret)});
  }
  KMS_ASSIGN_OR_RETURN(xks::SigV4Verifier verifier,
                       xks::SigV4Verifier::Create({.region = x.region,
                                                   .service = "kms-xks-proxy",
                                                   .max_skew_seconds = x.max_clock_skew_seconds},
                                                  std::move(credentials)));
  sched::HealthState* health = p.health.get();
  p.xks = std::make_unique<xks::XksDoor>(
      *p.keys, *p.gate, std::move(verifier), RealClock::Instance(),
      xks::XksDoorOptions{.uri_prefix = x.uri_prefix,
                          .identity = x.identity,
                          .node_id = config.node_id,
                          .version = KMSD_VERSION,
                          .health_key = x.health_key,
                          .backend_health = [health] {
                            const sched::HealthSnapshot s = health->Snapshot();
                            if (!s.serving()) return xks::EkmHealth::kUnavailable;
                            return s.degraded ? xks::EkmHealth::kDegraded : xks::EkmHealth::kActive;
                          }});
  KMS_ASSIGN_OR_RETURN(
      p.xks_http,
      http::HttpsServer::Bind(x.listen, x.tls, x.http,
                              http::ListenerOptions{
                                  .require_client_certificate = !x.tls.client_ca_file.empty(),
                                  .client_common_name = x.client_common_name}));
  if (p.metrics) p.xks->set_metrics(p.metrics.get());
  xks::XksDoor* door = p.xks.get();
  p.xks_http->HandlePrefix(
      "/", [door](const http::Request& r) { return door->Handle(r); },
      http::Route{.methods = {"POST"},
                  .kind = http::HandlerKind::kBlocking,
                  .handler_deadline_ms = x.deadline_ms,
                  .deadline_response = xks::XksDoor::DeadlineResponse(),
                  .busy_response = xks::XksDoor::BusyResponse()});
  p.xks_http->Start();
  spdlog::info("XKS proxy API listening on {} (URI path {}/kms/xks/v1, region {}, {} credential(s){})",
               x.listen, x.uri_prefix, x.region, x.credentials.size(),
               x.tls.client_ca_file.empty() ? "" : ", mTLS");
  return absl::OkStatus();
}

absl::Status StartK8sKmsPlugin(KmsServer::Parts& p, const config::Config& config) {
  const config::K8sKmsConfig& k = config.k8s_kms;
  KMS_ASSIGN_OR_RETURN(keys::TenantId tenant, keys::TenantId::Parse(k.key));
  p.k8s_kms = std::make_unique<k8s_kms::KmsPluginService>(*p.keys, *p.gate, tenant, k.identity);
  if (p.metrics) p.k8s_kms->set_metrics(p.metrics.get());
  // A stale socket from an earlier run would make the bind fail.
  struct stat st;
  if (lstat(k.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("k8s_kms.socket_path ", k.socket_path, " exists and is not a socket"));
    }
    unlink(k.socket_path.c_str());
  }
  const mode_t mode = static_cast<mode_t>(std::stoul(k.socket_mode, nullptr, 8));
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + k.socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(p.k8s_kms.get());
  builder.SetMaxReceiveMessageSize(64 * 1024);
  builder.SetMaxSendMessageSize(64 * 1024);
  // The socket is created by BuildAndStart with the process umask: no access for group
  // and others until the configured mode is set just after.
  const mode_t old_umask = umask(0177);
  p.k8s_grpc = builder.BuildAndStart();
  umask(old_umask);
  if (!p.k8s_grpc) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen on the unix socket ", k.socket_path, " (k8s_kms.socket_path)"));
  }
  if (chmod(k.socket_path.c_str(), mode) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot set the mode of ", k.socket_path, " (k8s_kms.socket_mode)"));
  }
  spdlog::info("Kubernetes KMS v2 plugin listening on unix:{} (mode {}, key {})", k.socket_path,
               k.socket_mode, k.key);
  return absl::OkStatus();
}

}  // namespace

void KmsServer::Wait() {
  if (parts_->grpc) parts_->grpc->Wait();
}

bool KmsServer::AwaitBackendCalls(std::chrono::milliseconds grace, std::string* stuck) {
  const Parts& p = *parts_;
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (;;) {
    std::vector<std::string> busy;
    const std::pair<const char*, const keys::BackendExecutor*> executors[] = {
        {"hsm", p.hsm_executor.get()}, {"store", p.store_executor.get()}};
    for (const auto& [name, e] : executors) {
      if (e == nullptr) continue;
      const int calls = e->status().busy_workers;
      if (calls > 0) busy.push_back(absl::StrCat(name, ": ", calls, " calls"));
    }
    if (busy.empty()) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      if (stuck != nullptr) *stuck = absl::StrJoin(busy, ", ");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void KmsServer::Shutdown() {
  Parts& p = *parts_;
  p.ready = false;
  if (p.health) p.health->SetStopping();
  if (p.grpc) {
    // In-flight RPCs take milliseconds; gRPC also waits this long for idle client
    // connections to go, so the grace period is short.
    p.grpc->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (p.k8s_grpc) p.k8s_grpc->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  if (p.xks_http) p.xks_http->Stop();
  if (p.http) p.http->Stop();
  if (p.scheduler) p.scheduler->Stop();
  if (p.keys) {
    // The usage flush holds small counts for minutes (KeyManagerOptions): write them all.
    absl::StatusOr<int> flushed = p.keys->FlushEncryptionCounts(/*all=*/true);
    if (!flushed.ok()) spdlog::warn("DEK usage counts not written at stop: {}", flushed.status().ToString());
  }
  if (p.rpc_metrics && RpcMetrics::Installed() == p.rpc_metrics.get()) RpcMetrics::Install(nullptr);
  if (p.audit) p.audit->Stop();  // writes what the last calls left
  if (p.budget) SetDoorBudget(nullptr);
}

}  // namespace kms::server
