#include "src/server/key_service.h"

#include "spdlog/spdlog.h"
#include "src/keys/tenant_id.h"
#include "src/server/request_validation.h"
#include "src/server/rpc_auth.h"
#include "src/server/status_map.h"

namespace kms::server {

namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The checks every data-plane RPC makes before touching a key.
absl::Status Admit(const grpc::CallbackServerContext& ctx, const CallGate& gate,
                   authz::Operation op, const std::string& tenant) {
  KMS_RETURN_IF_ERROR(keys::ValidateTenantId(tenant));
  return gate.Admit(ctx, op, tenant);
}

template <typename Result>
void SetItemError(Result* result, const absl::Status& status, std::string_view rpc) {
  v1::ItemError* error = result->mutable_error();
  error->set_code(static_cast<int32_t>(ToGrpcStatus(status, rpc).error_code()));
  error->set_message(SanitizedMessage(status, rpc));
}

}  // namespace

absl::Status KeyServiceImpl::EncryptOne(const std::string& tenant, const std::string& plaintext,
                                        const google::protobuf::Map<std::string, std::string>& context,
                                        v1::EncryptResponse* out) {
  KMS_RETURN_IF_ERROR(ValidatePlaintext(plaintext, limits_));
  KMS_ASSIGN_OR_RETURN(std::vector<crypto::ContextPair> pairs, ValidateContext(context, limits_));
  uint32_t version = 0;
  KMS_RETURN_IF_ERROR(
      keys_.Encrypt(tenant, pairs, Bytes(plaintext), out->mutable_ciphertext(), &version));
  out->set_dek_version(version);
  return absl::OkStatus();
}

absl::Status KeyServiceImpl::DecryptOne(const std::string& tenant, const std::string& ciphertext,
                                        const google::protobuf::Map<std::string, std::string>& context,
                                        v1::DecryptResponse* out) {
  KMS_RETURN_IF_ERROR(ValidateCiphertext(ciphertext, limits_));
  KMS_ASSIGN_OR_RETURN(std::vector<crypto::ContextPair> pairs, ValidateContext(context, limits_));
  uint32_t version = 0;
  KMS_RETURN_IF_ERROR(
      keys_.Decrypt(tenant, pairs, Bytes(ciphertext), out->mutable_plaintext(), &version));
  out->set_dek_version(version);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KeyServiceImpl::Encrypt(grpc::CallbackServerContext* ctx,
                                                  const v1::EncryptRequest* req,
                                                  v1::EncryptResponse* resp) {
  absl::Status status = Admit(*ctx, gate_, authz::Operation::kEncrypt, req->tenant_id());
  if (status.ok()) status = EncryptOne(req->tenant_id(), req->plaintext(), req->context(), resp);
  return FinishUnary(ctx, status, "Encrypt");
}

grpc::ServerUnaryReactor* KeyServiceImpl::Decrypt(grpc::CallbackServerContext* ctx,
                                                  const v1::DecryptRequest* req,
                                                  v1::DecryptResponse* resp) {
  absl::Status status = Admit(*ctx, gate_, authz::Operation::kDecrypt, req->tenant_id());
  if (status.ok()) status = DecryptOne(req->tenant_id(), req->ciphertext(), req->context(), resp);
  return FinishUnary(ctx, status, "Decrypt");
}

grpc::ServerUnaryReactor* KeyServiceImpl::EncryptBatch(grpc::CallbackServerContext* ctx,
                                                       const v1::EncryptBatchRequest* req,
                                                       v1::EncryptBatchResponse* resp) {
  absl::Status status = Admit(*ctx, gate_, authz::Operation::kEncrypt, req->tenant_id());
  if (status.ok()) status = ValidateBatchSize(req->items_size(), limits_);
  if (!status.ok()) return FinishUnary(ctx, status, "EncryptBatch");
  resp->mutable_results()->Reserve(req->items_size());
  for (const v1::EncryptBatchItem& item : req->items()) {
    v1::EncryptBatchResult* result = resp->add_results();
    absl::Status item_status =
        EncryptOne(req->tenant_id(), item.plaintext(), item.context(), result->mutable_ok());
    if (!item_status.ok()) SetItemError(result, item_status, "EncryptBatch");
  }
  return FinishUnary(ctx, absl::OkStatus(), "EncryptBatch");
}

grpc::ServerUnaryReactor* KeyServiceImpl::DecryptBatch(grpc::CallbackServerContext* ctx,
                                                       const v1::DecryptBatchRequest* req,
                                                       v1::DecryptBatchResponse* resp) {
  absl::Status status = Admit(*ctx, gate_, authz::Operation::kDecrypt, req->tenant_id());
  if (status.ok()) status = ValidateBatchSize(req->items_size(), limits_);
  if (!status.ok()) return FinishUnary(ctx, status, "DecryptBatch");
  resp->mutable_results()->Reserve(req->items_size());
  for (const v1::DecryptBatchItem& item : req->items()) {
    v1::DecryptBatchResult* result = resp->add_results();
    absl::Status item_status =
        DecryptOne(req->tenant_id(), item.ciphertext(), item.context(), result->mutable_ok());
    if (!item_status.ok()) SetItemError(result, item_status, "DecryptBatch");
  }
  return FinishUnary(ctx, absl::OkStatus(), "DecryptBatch");
}

grpc::ServerUnaryReactor* KeyServiceImpl::SignJwt(grpc::CallbackServerContext* ctx,
                                                  const v1::SignJwtRequest* req,
                                                  v1::SignJwtResponse* resp) {
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kSignJwt, "");
  if (status.ok()) {
    absl::StatusOr<jwt::SignedJwt> signed_jwt = jwt_.Sign(req->claims_json(), req->ttl_seconds());
    status = signed_jwt.status();
    if (signed_jwt.ok()) {
      resp->set_jwt(std::move(signed_jwt->jwt));
      resp->set_kid(signed_jwt->kid);
      resp->set_issued_at_unix(signed_jwt->issued_at);
      resp->set_expires_at_unix(signed_jwt->expires_at);
    }
  }
  return FinishUnary(ctx, status, "SignJwt");
}

grpc::ServerUnaryReactor* KeyServiceImpl::VerifyJwt(grpc::CallbackServerContext* ctx,
                                                    const v1::VerifyJwtRequest* req,
                                                    v1::VerifyJwtResponse* resp) {
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kVerifyJwt, "");
  if (status.ok() && req->jwt().size() > 16 * 1024) {
    status = absl::InvalidArgumentError("jwt is larger than 16 KiB");
  }
  if (status.ok()) {
    absl::StatusOr<jwt::VerifiedJwt> verified = jwt_.Verify(req->jwt());
    status = verified.status();
    if (verified.ok()) {
      resp->set_kid(verified->kid);
      resp->set_claims_json(verified->claims_json);
      resp->set_expires_at_unix(verified->expires_at);
    }
  }
  return FinishUnary(ctx, status, "VerifyJwt");
}

grpc::ServerUnaryReactor* KeyServiceImpl::GetJwks(grpc::CallbackServerContext* ctx,
                                                  const v1::GetJwksRequest* req,
                                                  v1::GetJwksResponse* resp) {
  absl::Status status = gate_.Admit(*ctx, authz::Operation::kVerifyJwt, "");
  if (status.ok()) {
    absl::StatusOr<jwt::JwksDocument> jwks = jwt_.Jwks();
    status = jwks.status();
    if (jwks.ok()) {
      resp->set_jwks_json(jwks->json);
      resp->set_max_age_seconds(jwks->max_age_seconds);
    }
  }
  return FinishUnary(ctx, status, "GetJwks");
}

}  // namespace kms::server
