#include "src/server/server.h"

#include <openssl/crypto.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "spdlog/spdlog.h"
#include "src/authz/policy.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/server/gate/call_gate.h"
#include "src/server/grpc/admin_service.h"
#include "src/server/grpc/key_service.h"
#include "src/server/grpc/listener_probe.h"
#include "src/server/grpc/unary.h"
#include "src/server/gate/inflight_budget.h"
#include "src/server/open_file_limit.h"
#include "src/server/http/https_server.h"
#include "src/common/text_file.h"
#include "src/coord/rate_limiters.h"
#include "src/coord/redis_invalidation_bus.h"
#include "src/store/postgres/postgres_key_store.h"
#include "src/store/postgres/postgres_leader_election.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "src/sched/key_jobs.h"
#include "src/sched/scheduler.h"
#include "src/sched/store_epoch.h"

#ifndef KMSD_VERSION
#define KMSD_VERSION "dev"
#endif

namespace kms::server {

void RestrictGrpcToTls13() { setenv("GRPC_SSL_CIPHER_SUITES", "PSK-AES256-GCM-SHA384", 1); }

struct KmsServer::Parts {
  config::Config config;
  std::unique_ptr<http::HttpsServer> http;
  std::atomic<bool> ready{false};
  std::unique_ptr<hsm::Pkcs11Hsm> hsm;
  std::unique_ptr<store::KeyStore> store;
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
  std::unique_ptr<CallGate> gate;
  std::unique_ptr<KeyServiceImpl> key_service;
  std::unique_ptr<AdminServiceImpl> admin_service;
  std::unique_ptr<grpc::Server> grpc;
  int grpc_port = 0;
  std::unique_ptr<InflightBudget> budget;
  // The gRPC listener probe's verdict (grpc/listener_probe.h): whether the last probe
  // completed a TLS handshake, and since when (Unix seconds) it has been failing.
  std::atomic<bool> grpc_accepting{true};
  std::atomic<int64_t> grpc_failing_since{0};
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
// is requested. Backoff: 1 s, doubling, at most 30 s.
template <typename T>
absl::StatusOr<T> OpenWithBackoff(const char* what, const std::atomic<bool>* stop,
                                  const std::function<absl::StatusOr<T>()>& open) {
  auto delay = std::chrono::seconds(1);
  while (true) {
    absl::StatusOr<T> result = open();
    if (result.ok() || !absl::IsUnavailable(result.status())) return result;
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
  const size_t largest_request = KeyServiceRequestLimits::From(config.limits).batch;
  if (static_cast<int64_t>(largest_request) > config.limits.max_inflight_request_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "limits.max_inflight_request_bytes (", config.limits.max_inflight_request_bytes,
        ") must be at least the largest batch request (", largest_request,
        " bytes with these limits)"));
  }
  std::unique_ptr<KmsServer> server(new KmsServer());
  Parts& p = *server->parts_;
  p.config = config;
  SetSecretMemoryLocking(config.lock_memory);

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
    p.http->Handle("/readyz", [&p](const http::Request&) {
      if (!p.ready) return Response{.status = 503, .body = "loading keys\n"};
      if (!p.grpc_accepting) {
        return Response{.status = 503, .body = "gRPC listener not accepting connections\n"};
      }
      return Response{.body = "ready\n"};
    });
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
  KMS_ASSIGN_OR_RETURN(
      p.hsm, OpenWithBackoff<std::unique_ptr<hsm::Pkcs11Hsm>>(
                 "HSM", stop, [&] { return hsm::Pkcs11Hsm::Open(hsm_options); }));
  if (p.hsm->created_master_key()) {
    spdlog::info("created master key '{}' ({}) in token '{}'", config.hsm.master_key_label,
                 config.hsm.master_key_kind, config.hsm.token_label);
  }
  spdlog::info("KEKs are wrapped with {}", hsm::KekWrapMechanismName(p.hsm->kek_wrap_mechanism()));

  KMS_ASSIGN_OR_RETURN(p.store, OpenWithBackoff<std::unique_ptr<store::KeyStore>>(
                                   "key store", stop, [&] { return OpenStore(config); }));

  KMS_ASSIGN_OR_RETURN(jwt::JwtServiceOptions jwt_options, JwtOptionsFrom(config.jwt));
  keys::KeyManagerOptions key_options{
      .cache = {.ttl = std::chrono::seconds(config.dek_cache.ttl_seconds),
                .max_entries = static_cast<size_t>(config.dek_cache.max_entries)},
      .auto_create_tenants = config.tenants_auto_create};
  key_options.cache.max_stale = std::chrono::seconds(jwt_options.key_max_age_seconds);
  KMS_ASSIGN_OR_RETURN(
      p.kek_ring, OpenWithBackoff<std::unique_ptr<keys::HsmKekRing>>("KEK ring", stop, [&] {
        return keys::HsmKekRing::Create(p.hsm.get(), p.store.get(), &RealClock::Instance());
      }));
  KMS_ASSIGN_OR_RETURN(p.keys, keys::KeyManager::Create(p.kek_ring.get(), p.store.get(),
                                                        &RealClock::Instance(), key_options));
  KMS_ASSIGN_OR_RETURN(p.jwt, jwt::JwtService::Create(p.kek_ring.get(), p.store.get(),
                                                      p.store.get(), &RealClock::Instance(),
                                                      jwt_options));
  KMS_RETURN_IF_ERROR(OpenWithBackoff<bool>("JWT signing keys", stop, [&]() -> absl::StatusOr<bool> {
                        KMS_RETURN_IF_ERROR(p.jwt->Load());
                        return true;
                      }).status());

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

  p.gate = std::make_unique<CallGate>(*p.authz, p.limiter.get());
  p.key_service = std::make_unique<KeyServiceImpl>(*p.keys, *p.jwt, *p.gate, config.limits);
  p.admin_service = std::make_unique<AdminServiceImpl>(
      *p.keys, *p.kek_ring, *p.jwt, *p.store, *p.gate, *p.scheduler, RealClock::Instance(),
      NodeInfo{.node_id = node_id,
               .version = KMSD_VERSION,
               .store_backend = std::string(p.store->backend_name()),
               .master_key_kind = config.hsm.master_key_kind,
               .started_at_unix = RealClock::Instance().UnixSeconds()});

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
  // A full batch of maximal items must fit in one message.
  const int64_t max_message =
      std::min<int64_t>(int64_t{config.limits.max_batch_items} *
                                (config.limits.max_plaintext_bytes + 64 + config.limits.max_context_bytes) +
                            (1 << 20),
                        1 << 30);
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message));
  builder.SetMaxSendMessageSize(static_cast<int>(max_message));
  p.grpc = builder.BuildAndStart();
  if (!p.grpc || p.grpc_port == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen for gRPC on ", config.grpc_listen,
                     " (address in use, or the TLS certificate/key do not load)"));
  }
  p.grpc->GetHealthCheckService()->SetServingStatus(true);
  p.scheduler->Start();
  p.ready = true;
  return server;
}

void KmsServer::Wait() {
  if (parts_->grpc) parts_->grpc->Wait();
}

void KmsServer::Shutdown() {
  Parts& p = *parts_;
  p.ready = false;
  if (p.grpc) {
    // In-flight RPCs take milliseconds; gRPC also waits this long for idle client
    // connections to go, so the grace period is short.
    p.grpc->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (p.http) p.http->Stop();
  if (p.scheduler) p.scheduler->Stop();
  if (p.budget) SetDoorBudget(nullptr);
}

}  // namespace kms::server
