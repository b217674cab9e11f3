#include "src/server/grpc/key_service.h"

#include <algorithm>
#include <optional>

#include "src/server/gate/public_status.h"
#include "src/server/gate/request_limits.h"
#include "src/server/grpc/unary.h"

namespace kms::server {

namespace {

using v1::DecryptBatchRequest;
using v1::DecryptBatchResponse;
using v1::DecryptRequest;
using v1::DecryptResponse;
using v1::EncryptBatchRequest;
using v1::EncryptBatchResponse;
using v1::EncryptRequest;
using v1::EncryptResponse;

// A VerifyJwt request carries one token of at most jwt::kMaxTokenBytes (which every
// token kmsd issues fits), plus framing.
constexpr size_t kMaxJwtRequestBytes = jwt::kMaxTokenBytes + 1024;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <typename Result>
void SetItemError(Result* result, const absl::Status& status, std::string_view rpc) {
  v1::ItemError* error = result->mutable_error();
  error->set_code(static_cast<int32_t>(PublicCode(status)));
  error->set_message(PublicMessage(status, rpc));
}

}  // namespace

KeyServiceRequestLimits KeyServiceRequestLimits::From(const config::LimitsConfig& limits) {
  // Protobuf framing of a map entry or a field is a few bytes: 16 per context pair and
  // 1 KiB per message leave room for it (and for the tenant id, <= 64 bytes).
  const size_t item = static_cast<size_t>(std::max<int64_t>(0, limits.max_plaintext_bytes)) +
                      keys::kCiphertextOverhead +
                      static_cast<size_t>(std::max<int64_t>(0, limits.max_context_bytes)) +
                      16 * static_cast<size_t>(std::max<int64_t>(0, limits.max_context_pairs)) +
                      1024;
  const size_t context = static_cast<size_t>(std::max<int64_t>(0, limits.max_context_bytes)) +
                         16 * static_cast<size_t>(std::max<int64_t>(0, limits.max_context_pairs));
  const size_t items = static_cast<size_t>(std::max<int64_t>(0, limits.max_batch_items));
  return KeyServiceRequestLimits{.item = item,
                                 .batch = items * item + 1024,
                                 .jwt = kMaxJwtRequestBytes,
                                 .reencrypt = item + context,
                                 .reencrypt_batch = items * (item + context) + 1024};
}

absl::StatusOr<keys::TenantId> KeyServiceImpl::Admit(const std::string& identity,
                                                     authz::Operation op,
                                                     const std::string& tenant) const {
  KMS_ASSIGN_OR_RETURN(keys::TenantId id, keys::TenantId::Parse(tenant));
  KMS_RETURN_IF_ERROR(gate_.Admit(identity, op, id.str()));
  return id;
}

absl::Status KeyServiceImpl::EncryptOne(const keys::TenantId& tenant, const std::string& plaintext,
                                        const google::protobuf::Map<std::string, std::string>& context,
                                        v1::EncryptResponse* out) {
  KMS_RETURN_IF_ERROR(ValidatePlaintext(plaintext, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(context, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptResult result, keys_.Encrypt(tenant, ctx, Bytes(plaintext)));
  out->set_ciphertext(std::move(result.ciphertext));
  out->set_dek_version(result.dek_version);
  return absl::OkStatus();
}

absl::Status KeyServiceImpl::DecryptOne(const keys::TenantId& tenant, const std::string& ciphertext,
                                        const google::protobuf::Map<std::string, std::string>& context,
                                        v1::DecryptResponse* out) {
  KMS_RETURN_IF_ERROR(ValidateCiphertext(ciphertext, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(context, limits_));
  KMS_ASSIGN_OR_RETURN(keys::DecryptResult result, keys_.Decrypt(tenant, ctx, Bytes(ciphertext)));
  out->set_plaintext(std::move(result.plaintext));
  out->set_dek_version(result.dek_version);
  return absl::OkStatus();
}

absl::Status KeyServiceImpl::ReEncryptOne(
    const keys::TenantId& tenant, const std::string& ciphertext,
    const google::protobuf::Map<std::string, std::string>& context, bool replace_context,
    const google::protobuf::Map<std::string, std::string>& new_context,
    v1::ReEncryptResponse* out) {
  KMS_RETURN_IF_ERROR(ValidateCiphertext(ciphertext, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(context, limits_));
  if (!replace_context && !new_context.empty()) {
    return absl::InvalidArgumentError("new_context is set but replace_context is false");
  }
  std::optional<keys::EncryptionContext> next;
  if (replace_context) {
    KMS_ASSIGN_OR_RETURN(next, ValidateContext(new_context, limits_));
  }
  KMS_ASSIGN_OR_RETURN(
      keys::ReEncryptResult result,
      keys_.ReEncrypt(tenant, ctx, Bytes(ciphertext), next.has_value() ? &*next : nullptr));
  out->set_ciphertext(std::move(result.ciphertext));
  out->set_dek_version(result.dek_version);
  out->set_source_dek_version(result.source_dek_version);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KeyServiceImpl::Encrypt(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<EncryptRequest, EncryptResponse>(
      ctx, in, out, request_limits_.item, "Encrypt",
      [&](const std::string& identity, const EncryptRequest& req, EncryptResponse* resp) {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kEncrypt, req.tenant_id()));
        return EncryptOne(tenant, req.plaintext(), req.context(), resp);
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::Decrypt(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<DecryptRequest, DecryptResponse>(
      ctx, in, out, request_limits_.item, "Decrypt",
      [&](const std::string& identity, const DecryptRequest& req, DecryptResponse* resp) {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kDecrypt, req.tenant_id()));
        return DecryptOne(tenant, req.ciphertext(), req.context(), resp);
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::EncryptBatch(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* in,
                                                       grpc::ByteBuffer* out) {
  return ServeUnary<EncryptBatchRequest, EncryptBatchResponse>(
      ctx, in, out, request_limits_.batch, "EncryptBatch",
      [&](const std::string& identity, const EncryptBatchRequest& req,
          EncryptBatchResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kEncrypt, req.tenant_id()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        resp->mutable_results()->Reserve(req.items_size());
        for (const v1::EncryptBatchItem& item : req.items()) {
          v1::EncryptBatchResult* result = resp->add_results();
          absl::Status item_status =
              EncryptOne(tenant, item.plaintext(), item.context(), result->mutable_ok());
          if (!item_status.ok()) SetItemError(result, item_status, "EncryptBatch");
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::DecryptBatch(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* in,
                                                       grpc::ByteBuffer* out) {
  return ServeUnary<DecryptBatchRequest, DecryptBatchResponse>(
      ctx, in, out, request_limits_.batch, "DecryptBatch",
      [&](const std::string& identity, const DecryptBatchRequest& req,
          DecryptBatchResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kDecrypt, req.tenant_id()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        resp->mutable_results()->Reserve(req.items_size());
        for (const v1::DecryptBatchItem& item : req.items()) {
          v1::DecryptBatchResult* result = resp->add_results();
          absl::Status item_status =
              DecryptOne(tenant, item.ciphertext(), item.context(), result->mutable_ok());
          if (!item_status.ok()) SetItemError(result, item_status, "DecryptBatch");
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::ReEncrypt(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<v1::ReEncryptRequest, v1::ReEncryptResponse>(
      ctx, in, out, request_limits_.reencrypt, "ReEncrypt",
      [&](const std::string& identity, const v1::ReEncryptRequest& req,
          v1::ReEncryptResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kReEncrypt, req.tenant_id()));
        return ReEncryptOne(tenant, req.ciphertext(), req.context(), req.replace_context(),
                            req.new_context(), resp);
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::ReEncryptBatch(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* in,
                                                         grpc::ByteBuffer* out) {
  return ServeUnary<v1::ReEncryptBatchRequest, v1::ReEncryptBatchResponse>(
      ctx, in, out, request_limits_.reencrypt_batch, "ReEncryptBatch",
      [&](const std::string& identity, const v1::ReEncryptBatchRequest& req,
          v1::ReEncryptBatchResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kReEncrypt, req.tenant_id()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        resp->mutable_results()->Reserve(req.items_size());
        for (const v1::ReEncryptBatchItem& item : req.items()) {
          v1::ReEncryptBatchResult* result = resp->add_results();
          absl::Status item_status =
              ReEncryptOne(tenant, item.ciphertext(), item.context(), item.replace_context(),
                           item.new_context(), result->mutable_ok());
          if (!item_status.ok()) SetItemError(result, item_status, "ReEncryptBatch");
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::SignJwt(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<v1::SignJwtRequest, v1::SignJwtResponse>(
      ctx, in, out, request_limits_.jwt, "SignJwt",
      [&](const std::string& identity, const v1::SignJwtRequest& req,
          v1::SignJwtResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kSignJwt, ""));
        KMS_ASSIGN_OR_RETURN(jwt::SignedJwt signed_jwt,
                             jwt_.Sign(req.claims_json(), req.ttl_seconds()));
        resp->set_jwt(std::move(signed_jwt.jwt));
        resp->set_kid(signed_jwt.kid);
        resp->set_issued_at_unix(signed_jwt.issued_at);
        resp->set_expires_at_unix(signed_jwt.expires_at);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::VerifyJwt(grpc::CallbackServerContext* ctx,
                                                    const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<v1::VerifyJwtRequest, v1::VerifyJwtResponse>(
      ctx, in, out, request_limits_.jwt, "VerifyJwt",
      [&](const std::string& identity, const v1::VerifyJwtRequest& req,
          v1::VerifyJwtResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kVerifyJwt, ""));
        KMS_ASSIGN_OR_RETURN(jwt::VerifiedJwt verified, jwt_.Verify(req.jwt()));
        resp->set_kid(verified.kid);
        resp->set_claims_json(verified.claims_json);
        resp->set_expires_at_unix(verified.expires_at);
        return absl::OkStatus();
      },
      TooLarge::kRejectedToken);
}

grpc::ServerUnaryReactor* KeyServiceImpl::GetJwks(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<v1::GetJwksRequest, v1::GetJwksResponse>(
      ctx, in, out, request_limits_.jwt, "GetJwks",
      [&](const std::string& identity, const v1::GetJwksRequest&,
          v1::GetJwksResponse* resp) -> absl::Status {
        KMS_RETURN_IF_ERROR(gate_.Admit(identity, authz::Operation::kVerifyJwt, ""));
        KMS_ASSIGN_OR_RETURN(jwt::JwksDocument jwks, jwt_.Jwks());
        resp->set_jwks_json(jwks.json);
        resp->set_max_age_seconds(jwks.max_age_seconds);
        return absl::OkStatus();
      });
}

}  // namespace kms::server
