// The Kubernetes KMS v2 plugin door (k8s.io/kms/apis/v2/api.proto, vendored in
// proto/third_party/k8s.io/kms): v2.KeyManagementService on a gRPC server of its own,
// listening on a unix socket whose file permissions are the access control (no TLS).
// Every caller is the one configured identity for the policy, rate limit and log; the
// key is one configured kmsd tenant.
//
//   Status   version "v2"; healthz "ok" only when a real encrypt + decrypt round trip
//            through the domain just worked (else the reason); key_id = the key's
//            current version (from that round trip).
//   Encrypt  field ciphertext (Encrypt) of the plaintext under the tenant's primary DEK;
//            key_id = "kmsd:<tenant>:v<DEK version>"; no annotations.
//   Decrypt  opens the ciphertext; the key_id given must be the one the ciphertext was
//            made under (rotation changes key_id; old key_ids decrypt until their
//            version is retired).
//
// Sizes (the API's constraints): ciphertext and key_id under 1 kB, annotations under
// 32 kB; so a plaintext may be at most 1023 - 33 bytes. Requests over a method's limit are
// refused before decoding. Handlers run inline on gRPC's callback threads, like the
// kms.v1 door.
#pragma once

#include <memory>
#include <string>

#include "kms/metrics/metrics.h"
#include "src/keys/key_manager.h"
#include "src/server/gate/call_gate.h"
#include "third_party/k8s.io/kms/apis/v2/api.grpc.pb.h"

namespace kms::server::k8s_kms {

inline constexpr size_t kMaxCiphertextBytes = 1023;  // "less than 1 kB"
inline constexpr size_t kMaxKeyIdBytes = 1023;
inline constexpr size_t kMaxAnnotationBytes = 32 * 1024 - 1;
inline constexpr size_t kMaxPlaintextBytes = kMaxCiphertextBytes - 33;  // field overhead

using KeyManagementServiceRaw = ::v2::KeyManagementService::WithRawCallbackMethod_Status<
    ::v2::KeyManagementService::WithRawCallbackMethod_Encrypt<
        ::v2::KeyManagementService::WithRawCallbackMethod_Decrypt<
            ::v2::KeyManagementService::Service>>>;

// "kmsd:<tenant>:v<version>".
std::string KeyIdFor(const keys::TenantId& tenant, uint32_t dek_version);

class KmsPluginService final : public KeyManagementServiceRaw {
 public:
  KmsPluginService(keys::KeyManager& keys, const CallGate& gate, keys::TenantId tenant,
                   std::string identity)
      : keys_(keys), gate_(gate), tenant_(std::move(tenant)), identity_(std::move(identity)) {}

  // Counts requests (kmsd_k8s_kms_requests_total{method, code}) and their time
  // (kmsd_k8s_kms_request_duration_seconds{method}); set before serving.
  void set_metrics(metrics::Registry* registry) { metrics_ = registry; }

  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Encrypt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Decrypt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;

 private:
  keys::KeyManager& keys_;
  const CallGate& gate_;
  const keys::TenantId tenant_;
  const std::string identity_;
  metrics::Registry* metrics_ = nullptr;
};

}  // namespace kms::server::k8s_kms
