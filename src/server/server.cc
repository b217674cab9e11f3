#include "src/server/server.h"

#include <openssl/crypto.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "spdlog/spdlog.h"
#include "src/authz/policy.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/keys/key_manager.h"
#include "src/server/admin_service.h"
#include "src/server/http_server.h"
#include "src/server/key_service.h"
#include "src/store/sqlite/sqlite_key_store.h"

#ifndef KMSD_VERSION
#define KMSD_VERSION "dev"
#endif

namespace kms::server {

void RestrictGrpcToTls13() { setenv("GRPC_SSL_CIPHER_SUITES", "PSK-AES256-GCM-SHA384", 1); }

struct KmsServer::Parts {
  config::Config config;
  std::unique_ptr<HttpServer> http;
  std::atomic<bool> ready{false};
  std::unique_ptr<hsm::Pkcs11Hsm> hsm;
  std::unique_ptr<store::KeyStore> store;
  std::unique_ptr<authz::PolicyAuthorizer> authz;
  std::unique_ptr<keys::KeyManager> keys;
  std::unique_ptr<KeyServiceImpl> key_service;
  std::unique_ptr<AdminServiceImpl> admin_service;
  std::unique_ptr<grpc::Server> grpc;
  int grpc_port = 0;
};

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::FailedPreconditionError(absl::StrCat(what, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "kmsd";
  return buf;
}

}  // namespace

KmsServer::KmsServer() : parts_(std::make_unique<Parts>()) {}

KmsServer::~KmsServer() { Shutdown(); }

int KmsServer::grpc_port() const { return parts_->grpc_port; }
int KmsServer::http_port() const { return parts_->http ? parts_->http->port() : 0; }

absl::StatusOr<std::unique_ptr<KmsServer>> KmsServer::Start(const config::Config& config,
                                                           const std::atomic<bool>* stop) {
  KMS_RETURN_IF_ERROR(config::ValidateConfig(config));
  std::unique_ptr<KmsServer> server(new KmsServer());
  Parts& p = *server->parts_;
  p.config = config;
  SetSecretMemoryLocking(config.lock_memory);

  if (!config.http_listen.empty()) {
    KMS_ASSIGN_OR_RETURN(p.http, HttpServer::Bind(config.http_listen, config.tls));
    p.http->Handle("/healthz", [] { return HttpServer::Response{.body = "ok\n"}; });
    p.http->Handle("/readyz", [&p] {
      return p.ready ? HttpServer::Response{.body = "ready\n"}
                     : HttpServer::Response{.status = 503, .body = "loading keys\n"};
    });
    p.http->Start();
  }

  // Policy and credentials first: they are files, and their errors are the operator's.
  KMS_ASSIGN_OR_RETURN(p.authz, authz::PolicyAuthorizer::FromFile(config.policy_file));
  KMS_ASSIGN_OR_RETURN(std::string cert, ReadFile(config.tls.cert_file, "tls.cert_file"));
  KMS_ASSIGN_OR_RETURN(std::string key, ReadFile(config.tls.key_file, "tls.key_file"));
  KMS_ASSIGN_OR_RETURN(std::string ca, ReadFile(config.tls.client_ca_file, "tls.client_ca_file"));

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

  KMS_ASSIGN_OR_RETURN(
      p.store, OpenWithBackoff<std::unique_ptr<store::KeyStore>>(
                   "key store", stop, [&]() -> absl::StatusOr<std::unique_ptr<store::KeyStore>> {
                     KMS_ASSIGN_OR_RETURN(auto s, store::SqliteKeyStore::Open(config.store.sqlite_path));
                     return std::unique_ptr<store::KeyStore>(std::move(s));
                   }));

  keys::KeyManagerOptions key_options{
      .cache = {.ttl = std::chrono::seconds(config.dek_cache.ttl_seconds),
                .max_entries = static_cast<size_t>(config.dek_cache.max_entries)},
      .auto_create_tenants = config.tenants_auto_create};
  KMS_ASSIGN_OR_RETURN(
      p.keys, OpenWithBackoff<std::unique_ptr<keys::KeyManager>>("key hierarchy", stop, [&] {
        return keys::KeyManager::Create(p.hsm.get(), p.store.get(), &RealClock::Instance(),
                                        key_options);
      }));

  p.key_service = std::make_unique<KeyServiceImpl>(*p.keys, *p.authz, config.limits);
  p.admin_service = std::make_unique<AdminServiceImpl>(
      *p.keys, *p.hsm, *p.store, *p.authz, RealClock::Instance(),
      NodeInfo{.node_id = config.node_id.empty() ? Hostname() : config.node_id,
               .version = KMSD_VERSION,
               .store_backend = std::string(p.store->backend_name()),
               .master_key_kind = config.hsm.master_key_kind,
               .started_at_unix = RealClock::Instance().UnixSeconds()});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::SslServerCredentialsOptions tls(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = ca;
  tls.pem_key_cert_pairs.push_back({key, cert});
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.grpc_listen, grpc::SslServerCredentials(tls), &p.grpc_port);
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
  // gRPC keeps its own copy of the server key; wipe ours.
  OPENSSL_cleanse(key.data(), key.size());
  OPENSSL_cleanse(tls.pem_key_cert_pairs[0].private_key.data(),
                  tls.pem_key_cert_pairs[0].private_key.size());
  if (!p.grpc || p.grpc_port == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot listen for gRPC on ", config.grpc_listen,
                     " (address in use, or the TLS certificate/key do not load)"));
  }
  p.grpc->GetHealthCheckService()->SetServingStatus(true);
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
    p.grpc->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  if (p.http) p.http->Stop();
}

}  // namespace kms::server
