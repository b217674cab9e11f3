#include "src/server/k8s_kms/kms_plugin.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "spdlog/spdlog.h"
#include "src/common/log.h"
#include "src/common/request_context.h"
#include "src/server/gate/call_record.h"
#include "src/server/gate/door_metrics.h"
#include "src/server/gate/public_status.h"
#include "src/server/grpc/grpc_status.h"
#include "src/server/grpc/unary.h"

namespace kms::server::k8s_kms {
namespace {

// Requests carry at most a ciphertext or plaintext, a uid, a key_id and annotations.
constexpr size_t kMaxRequestBytes = kMaxCiphertextBytes + kMaxKeyIdBytes + kMaxAnnotationBytes + 4096;

// The context every plugin ciphertext is bound to, so a kms.v1 caller's ciphertext of the
// same tenant never decrypts here and one of ours never decrypts there without it.
constexpr char kContextKey[] = "kmsd:door";
constexpr char kContextValue[] = "k8s-kms-v2";
constexpr char kStatusContextValue[] = "k8s-kms-v2-status";

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

keys::EncryptionContext Context(const char* value) {
  keys::EncryptionContext ctx;
  ctx.Add(kContextKey, value).IgnoreError();
  return ctx;
}

// The request's uid when it is a plain id (the apiserver sends UUIDs), else a new one.
std::string AuditRequestId(const std::string& uid) {
  const bool plain = !uid.empty() && uid.size() <= 64 && std::all_of(uid.begin(), uid.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
  if (plain) return uid;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("k8s-%016x", rng());
}

// The caller's uid, printable and bounded, for the log line.
std::string Uid(const std::string& uid) {
  std::string out;
  for (char c : uid) {
    if (out.size() >= 64) break;
    out.push_back(c >= 0x21 && c <= 0x7e && c != '"' ? c : '?');
  }
  return out;
}

template <typename Request, typename Response, typename Body>
grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out, std::string_view method,
                                const std::string& identity, metrics::Registry* registry,
                                Body&& body) {
  const auto started = std::chrono::steady_clock::now();
  Request request;
  Response response;
  // Audited like the kms.v1 door: the call's record is filled by the gate's decision and
  // reported with the final status (a data-plane call: aggregated).
  CallRecord call{.method = method};
  absl::Status status = DecodeRequest(*in, kMaxRequestBytes, request);
  if (status.ok()) {
    if constexpr (requires { request.uid(); }) call.request_id = AuditRequestId(request.uid());
    if (call.request_id.empty()) call.request_id = AuditRequestId("");
    CallScope scope(&call);
    status = body(request, &response, &call);
    if (call.gate != nullptr) status = call.gate->Report(call, status);
  }
  if (status.ok()) status = EncodeResponse(response, out);
  WipeSecrets(response);
  WipeSecrets(request);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  {
    RequestIdScope id(call.request_id);
    LogEvent(spdlog::level::info, "k8s_kms_request",
             {{"method", std::string(method)},
              {"identity", identity},
              {"uid", Uid([&] {
                 if constexpr (requires { request.uid(); }) return request.uid();
                 return std::string();
               }())},
              {"result", absl::StatusCodeToString(status.code())},
              {"latency_ms", absl::StrFormat("%.2f", ms)}});
  }
  static constexpr DoorMetricNames kMetrics{
      .requests_total = "kmsd_k8s_kms_requests_total",
      .requests_help = "Kubernetes KMS v2 plugin requests, by method and the gRPC status code the "
                       "caller received.",
      .duration_seconds = "kmsd_k8s_kms_request_duration_seconds",
      .duration_help = "Time from a received Kubernetes KMS plugin request to its status, by method.",
      .operation_label = "method",
      .outcome_label = "code"};
  RecordDoorRequest(registry, kMetrics, std::string(method.substr(6)),  // "K8sKmsEncrypt" -> "Encrypt"
                    absl::StatusCodeToString(PublicCode(status)), ms / 1000.0);
  return FinishUnary(ctx, status, method);
}

}  // namespace

std::string KeyIdFor(const keys::TenantId& tenant, uint32_t dek_version) {
  return absl::StrCat("kmsd:", tenant.str(), ":v", dek_version);
}

grpc::ServerUnaryReactor* KmsPluginService::Status(grpc::CallbackServerContext* ctx,
                                                   const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return Serve<::v2::StatusRequest, ::v2::StatusResponse>(
      ctx, in, out, "K8sKmsStatus", identity_, metrics_,
      [&](const ::v2::StatusRequest&, ::v2::StatusResponse* resp, CallRecord* call) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity_, authz::Operation::kGetStatus, ""));
        resp->set_version("v2");
        // healthz is "ok" only when a real round trip through the domain works now.
        static constexpr uint8_t kProbe[] = {'k', '8', 's', '-', 'k', 'm', 's'};
        const keys::EncryptionContext probe_ctx = Context(kStatusContextValue);
        absl::StatusOr<keys::EncryptResult> sealed = keys_.Encrypt(tenant_, probe_ctx, kProbe);
        absl::Status health = sealed.status();
        if (sealed.ok()) {
          absl::StatusOr<keys::DecryptResult> opened =
              keys_.Decrypt(tenant_, probe_ctx, Bytes(sealed->ciphertext));
          health = opened.status();
          if (opened.ok() && opened->plaintext != std::string_view("k8s-kms")) {
            health = absl::InternalError("the status round trip returned other bytes");
          }
        }
        if (health.ok()) {
          call->key_versions = absl::StrCat("dek:", sealed->dek_version);
          resp->set_healthz("ok");
          resp->set_key_id(KeyIdFor(tenant_, sealed->dek_version));
        } else {
          spdlog::warn("k8s-kms: status round trip failed: {}", health.ToString());
          resp->set_healthz(absl::StrCat("kmsd: ", PublicMessage(health, "k8s-kms status")));
          // key_id must not be empty: the last known is not kept, so name the key.
          resp->set_key_id(absl::StrCat("kmsd:", tenant_.str(), ":unknown"));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KmsPluginService::Encrypt(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return Serve<::v2::EncryptRequest, ::v2::EncryptResponse>(
      ctx, in, out, "K8sKmsEncrypt", identity_, metrics_,
      [&](const ::v2::EncryptRequest& req, ::v2::EncryptResponse* resp, CallRecord* call) -> absl::Status {
        if (req.plaintext().empty()) return absl::InvalidArgumentError("plaintext is empty");
        if (req.plaintext().size() > kMaxPlaintextBytes) {
          return absl::InvalidArgumentError(
              absl::StrCat("plaintext is over ", kMaxPlaintextBytes,
                           " bytes (the ciphertext must stay under 1 kB)"));
        }
        KMS_RETURN_IF_ERROR(gate_.Admit(identity_, authz::Operation::kEncrypt, tenant_.str()));
        KMS_ASSIGN_OR_RETURN(keys::EncryptResult sealed,
                             keys_.Encrypt(tenant_, Context(kContextValue), Bytes(req.plaintext())));
        resp->set_ciphertext(std::move(sealed.ciphertext));
        resp->set_key_id(KeyIdFor(tenant_, sealed.dek_version));
        call->key_versions = absl::StrCat("dek:", sealed.dek_version);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KmsPluginService::Decrypt(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return Serve<::v2::DecryptRequest, ::v2::DecryptResponse>(
      ctx, in, out, "K8sKmsDecrypt", identity_, metrics_,
      [&](const ::v2::DecryptRequest& req, ::v2::DecryptResponse* resp, CallRecord* call) -> absl::Status {
        if (req.ciphertext().empty() || req.ciphertext().size() > kMaxCiphertextBytes) {
          return absl::InvalidArgumentError("ciphertext must be 1 to 1023 bytes");
        }
        if (req.key_id().empty() || req.key_id().size() > kMaxKeyIdBytes) {
          return absl::InvalidArgumentError("key_id must be 1 to 1023 bytes");
        }
        size_t annotation_bytes = 0;
        for (const auto& [k, v] : req.annotations()) annotation_bytes += k.size() + v.size();
        if (annotation_bytes > kMaxAnnotationBytes) {
          return absl::InvalidArgumentError("annotations are over 32 kB");
        }
        KMS_RETURN_IF_ERROR(gate_.Admit(identity_, authz::Operation::kDecrypt, tenant_.str()));
        KMS_ASSIGN_OR_RETURN(keys::DecryptResult opened,
                             keys_.Decrypt(tenant_, Context(kContextValue), Bytes(req.ciphertext())));
        if (req.key_id() != KeyIdFor(tenant_, opened.dek_version)) {
          std::fill(opened.plaintext.begin(), opened.plaintext.end(), '\0');
          return absl::InvalidArgumentError("key_id does not match the ciphertext's key version");
        }
        call->key_versions = absl::StrCat("dek:", opened.dek_version);
        resp->set_plaintext(std::move(opened.plaintext));
        return absl::OkStatus();
      });
}

}  // namespace kms::server::k8s_kms
