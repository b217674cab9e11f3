// kms.v1.KeyService, the data plane, on the gRPC callback API with raw methods
// (grpc/unary.h). Every RPC runs inline on the callback thread: on a DEK cache hit it
// is a few microseconds of AES-GCM; a miss blocks only the requests for that tenant,
// which wait on one single-flight load.
#pragma once

#include <algorithm>

#include <optional>

#include "kms/v1/key_service.grpc.pb.h"
#include "src/config/config.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/key_manager.h"
#include "src/keys/key_ref.h"
#include "src/server/gate/call_gate.h"

namespace kms::server {

using KeyServiceRaw = v1::KeyService::WithRawCallbackMethod_Encrypt<
    v1::KeyService::WithRawCallbackMethod_Decrypt<
        v1::KeyService::WithRawCallbackMethod_EncryptBatch<
            v1::KeyService::WithRawCallbackMethod_DecryptBatch<
                v1::KeyService::WithRawCallbackMethod_SignJwt<
                    v1::KeyService::WithRawCallbackMethod_VerifyJwt<
                        v1::KeyService::WithRawCallbackMethod_GetJwks<
                            v1::KeyService::WithRawCallbackMethod_ReEncrypt<
                                v1::KeyService::WithRawCallbackMethod_ReEncryptBatch<
                                    v1::KeyService::WithRawCallbackMethod_GenerateDataKey<
                                        v1::KeyService::WithRawCallbackMethod_GenerateDataKeyWithoutPlaintext<
                                            v1::KeyService::WithRawCallbackMethod_DecryptDataKey<
                                                v1::KeyService::WithRawCallbackMethod_ComputeBlindIndex<
                                                    v1::KeyService::WithRawCallbackMethod_ComputeBlindIndexBatch<
                                                        v1::KeyService::Service>>>>>>>>>>>>>>;

// The largest request each method accepts, in bytes, derived from the config's limits
// (a maximal item: plaintext or ciphertext, context, tenant id, framing).
struct KeyServiceRequestLimits {
  size_t item = 0;   // Encrypt, Decrypt
  size_t batch = 0;  // EncryptBatch, DecryptBatch
  size_t jwt = 0;    // SignJwt, VerifyJwt, GetJwks
  size_t reencrypt = 0;        // ReEncrypt: an item with a second context
  size_t reencrypt_batch = 0;  // ReEncryptBatch
  static KeyServiceRequestLimits From(const config::LimitsConfig& limits);
  // The largest of them: what gRPC's message limit and the in-flight budget must take.
  size_t Largest() const { return std::max({item, batch, jwt, reencrypt, reencrypt_batch}); }
};

// The CRC32C a request item carries (key_service.proto, "Integrity fields"): of its
// plaintext or ciphertext, and of its context's canonical bytes; unset when not sent.
struct RequestChecksums {
  std::optional<uint32_t> data;
  std::optional<uint32_t> context;
};

class KeyServiceImpl final : public KeyServiceRaw {
 public:
  KeyServiceImpl(keys::KeyManager& keys, jwt::JwtService& jwt, const CallGate& gate,
                 config::LimitsConfig limits)
      : keys_(keys),
        jwt_(jwt),
        gate_(gate),
        limits_(limits),
        request_limits_(KeyServiceRequestLimits::From(limits)) {}

  grpc::ServerUnaryReactor* Encrypt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Decrypt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* EncryptBatch(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* req,
                                         grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* DecryptBatch(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* req,
                                         grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* SignJwt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* VerifyJwt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                      grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GetJwks(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ReEncrypt(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                      grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ReEncryptBatch(grpc::CallbackServerContext* ctx,
                                           const grpc::ByteBuffer* req,
                                           grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GenerateDataKey(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* req,
                                            grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* GenerateDataKeyWithoutPlaintext(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* req,
                                                            grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* DecryptDataKey(grpc::CallbackServerContext* ctx,
                                           const grpc::ByteBuffer* req,
                                           grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ComputeBlindIndex(grpc::CallbackServerContext* ctx,
                                              const grpc::ByteBuffer* req,
                                              grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* ComputeBlindIndexBatch(grpc::CallbackServerContext* ctx,
                                                   const grpc::ByteBuffer* req,
                                                   grpc::ByteBuffer* resp) override;

 private:
  // The key set (the request's tenant_id or key_name, exactly one) checked and admitted
  // for `op`: its store row id (key_ref.h).
  absl::StatusOr<keys::TenantId> Admit(const std::string& identity, authz::Operation op,
                                       const std::string& tenant,
                                       const std::string& key_name) const;
  absl::StatusOr<keys::KeyRef> AdmitRef(const std::string& identity, authz::Operation op,
                                        const std::string& tenant,
                                        const std::string& key_name) const;
  absl::Status BlindIndexOne(const keys::BlindIndexKeys& index_keys,
                             const std::string& normalization, const std::string& value,
                             v1::ComputeBlindIndexResponse* out);
  absl::Status EncryptOne(const keys::TenantId& tenant, const std::string& plaintext,
                          const google::protobuf::Map<std::string, std::string>& context,
                          v1::EncryptResponse* out, const RequestChecksums& crc);
  absl::Status DecryptOne(const keys::TenantId& tenant, const std::string& ciphertext,
                          const google::protobuf::Map<std::string, std::string>& context,
                          v1::DecryptResponse* out, const RequestChecksums& crc);
  absl::Status ReEncryptOne(const keys::TenantId& tenant, const std::string& ciphertext,
                            const google::protobuf::Map<std::string, std::string>& context,
                            bool replace_context,
                            const google::protobuf::Map<std::string, std::string>& new_context,
                            v1::ReEncryptResponse* out, const RequestChecksums& crc);

  keys::KeyManager& keys_;
  jwt::JwtService& jwt_;
  const CallGate& gate_;
  const config::LimitsConfig limits_;
  const KeyServiceRequestLimits request_limits_;
};

}  // namespace kms::server
