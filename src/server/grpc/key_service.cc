#include "src/server/grpc/key_service.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "src/common/big_endian.h"
#include "src/common/crc32c.h"
#include "src/keys/blind_index.h"
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

// The canonical bytes of a context (key_service.proto, "Integrity fields").
std::string CanonicalContext(const google::protobuf::Map<std::string, std::string>& context) {
  std::vector<std::pair<std::string_view, std::string_view>> sorted;
  sorted.reserve(context.size());
  for (const auto& pair : context) sorted.emplace_back(pair.first, pair.second);
  std::sort(sorted.begin(), sorted.end());  // keys are unique in a map
  std::vector<uint8_t> out;
  AppendU32(out, static_cast<uint32_t>(sorted.size()));
  for (const auto& [key, value] : sorted) {
    AppendLengthPrefixed(out, key);
    AppendLengthPrefixed(out, value);
  }
  return std::string(out.begin(), out.end());
}

// INVALID_ARGUMENT when the caller's checksum is set and is not the data's.
absl::Status VerifyCrc32c(const std::optional<uint32_t>& expected, std::string_view data,
                          std::string_view field) {
  if (!expected.has_value() || Crc32c(data) == *expected) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(std::string(field), " does not match (the request was corrupted; nothing was done)"));
}

absl::Status VerifyContextCrc32c(const std::optional<uint32_t>& expected,
                                 const google::protobuf::Map<std::string, std::string>& context) {
  if (!expected.has_value()) return absl::OkStatus();
  return VerifyCrc32c(expected, CanonicalContext(context), "context_crc32c");
}

template <typename M>
RequestChecksums PlaintextChecksums(const M& m) {
  return {m.has_plaintext_crc32c() ? std::optional<uint32_t>(m.plaintext_crc32c()) : std::nullopt,
          m.has_context_crc32c() ? std::optional<uint32_t>(m.context_crc32c()) : std::nullopt};
}
template <typename M>
RequestChecksums CiphertextChecksums(const M& m) {
  return {m.has_ciphertext_crc32c() ? std::optional<uint32_t>(m.ciphertext_crc32c()) : std::nullopt,
          m.has_context_crc32c() ? std::optional<uint32_t>(m.context_crc32c()) : std::nullopt};
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
                                                     const std::string& tenant,
                                                     const std::string& key_name) const {
  KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, keys::KeyRef::FromRequest(tenant, key_name));
  KMS_RETURN_IF_ERROR(gate_.Admit(identity, op, ref.storage_id().str()));
  return ref.storage_id();
}

absl::StatusOr<keys::KeyRef> KeyServiceImpl::AdmitRef(const std::string& identity,
                                                      authz::Operation op,
                                                      const std::string& tenant,
                                                      const std::string& key_name) const {
  KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, keys::KeyRef::FromRequest(tenant, key_name));
  KMS_RETURN_IF_ERROR(gate_.Admit(identity, op, ref.storage_id().str()));
  return ref;
}

absl::Status KeyServiceImpl::EncryptOne(const keys::TenantId& tenant, const std::string& plaintext,
                                        const google::protobuf::Map<std::string, std::string>& context,
                                        v1::EncryptResponse* out, const RequestChecksums& crc) {
  KMS_RETURN_IF_ERROR(ValidatePlaintext(plaintext, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(context, limits_));
  KMS_RETURN_IF_ERROR(VerifyCrc32c(crc.data, plaintext, "plaintext_crc32c"));
  KMS_RETURN_IF_ERROR(VerifyContextCrc32c(crc.context, context));
  KMS_ASSIGN_OR_RETURN(keys::EncryptResult result, keys_.Encrypt(tenant, ctx, Bytes(plaintext)));
  out->set_ciphertext(std::move(result.ciphertext));
  out->set_dek_version(result.dek_version);
  out->set_ciphertext_crc32c(Crc32c(out->ciphertext()));
  out->set_verified_plaintext_crc32c(crc.data.has_value());
  out->set_verified_context_crc32c(crc.context.has_value());
  return absl::OkStatus();
}

absl::Status KeyServiceImpl::DecryptOne(const keys::TenantId& tenant, const std::string& ciphertext,
                                        const google::protobuf::Map<std::string, std::string>& context,
                                        v1::DecryptResponse* out, const RequestChecksums& crc) {
  KMS_RETURN_IF_ERROR(ValidateCiphertext(ciphertext, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(context, limits_));
  KMS_RETURN_IF_ERROR(VerifyCrc32c(crc.data, ciphertext, "ciphertext_crc32c"));
  KMS_RETURN_IF_ERROR(VerifyContextCrc32c(crc.context, context));
  KMS_ASSIGN_OR_RETURN(keys::DecryptResult result, keys_.Decrypt(tenant, ctx, Bytes(ciphertext)));
  out->set_plaintext_crc32c(Crc32c(result.plaintext));
  out->set_plaintext(std::move(result.plaintext));
  out->set_dek_version(result.dek_version);
  out->set_verified_ciphertext_crc32c(crc.data.has_value());
  out->set_verified_context_crc32c(crc.context.has_value());
  return absl::OkStatus();
}

absl::Status KeyServiceImpl::ReEncryptOne(
    const keys::TenantId& tenant, const std::string& ciphertext,
    const google::protobuf::Map<std::string, std::string>& context, bool replace_context,
    const google::protobuf::Map<std::string, std::string>& new_context,
    v1::ReEncryptResponse* out, const RequestChecksums& crc) {
  KMS_RETURN_IF_ERROR(ValidateCiphertext(ciphertext, limits_));
  KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(context, limits_));
  KMS_RETURN_IF_ERROR(VerifyCrc32c(crc.data, ciphertext, "ciphertext_crc32c"));
  KMS_RETURN_IF_ERROR(VerifyContextCrc32c(crc.context, context));
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
  out->set_ciphertext_crc32c(Crc32c(out->ciphertext()));
  out->set_verified_ciphertext_crc32c(crc.data.has_value());
  out->set_verified_context_crc32c(crc.context.has_value());
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KeyServiceImpl::Encrypt(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<EncryptRequest, EncryptResponse>(
      ctx, in, out, request_limits_.item, "Encrypt",
      [&](const std::string& identity, const EncryptRequest& req, EncryptResponse* resp) {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kEncrypt, req.tenant_id(),
                                   req.key_name()));
        return EncryptOne(tenant, req.plaintext(), req.context(), resp, PlaintextChecksums(req));
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::Decrypt(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<DecryptRequest, DecryptResponse>(
      ctx, in, out, request_limits_.item, "Decrypt",
      [&](const std::string& identity, const DecryptRequest& req, DecryptResponse* resp) {
        KMS_ASSIGN_OR_RETURN(keys::TenantId tenant,
                             Admit(identity, authz::Operation::kDecrypt, req.tenant_id(),
                                   req.key_name()));
        return DecryptOne(tenant, req.ciphertext(), req.context(), resp, CiphertextChecksums(req));
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
                             Admit(identity, authz::Operation::kEncrypt, req.tenant_id(),
                                   req.key_name()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        // Items are checked here and encrypted in one KeyManager call (the DEK resolved
        // once, nonces drawn at once), straight into the response's strings.
        const size_t n = static_cast<size_t>(req.items_size());
        resp->mutable_results()->Reserve(req.items_size());
        std::vector<keys::EncryptionContext> contexts(n);
        std::vector<keys::KeyManager::BatchItem> items;
        std::vector<std::string*> outs;
        items.reserve(n);
        outs.reserve(n);
        std::vector<v1::EncryptBatchResult*> results(n);
        for (size_t i = 0; i < n; ++i) {
          const v1::EncryptBatchItem& item = req.items(static_cast<int>(i));
          results[i] = resp->add_results();
          const RequestChecksums crc = PlaintextChecksums(item);
          absl::Status valid = ValidatePlaintext(item.plaintext(), limits_);
          if (valid.ok()) {
            absl::StatusOr<keys::EncryptionContext> parsed = ValidateContext(item.context(), limits_);
            if (parsed.ok()) contexts[i] = *std::move(parsed);
            valid = parsed.status();
          }
          if (valid.ok()) valid = VerifyCrc32c(crc.data, item.plaintext(), "plaintext_crc32c");
          if (valid.ok()) valid = VerifyContextCrc32c(crc.context, item.context());
          if (!valid.ok()) {
            SetItemError(results[i], valid, "EncryptBatch");
            continue;
          }
          v1::EncryptResponse* ok = results[i]->mutable_ok();
          ok->set_verified_plaintext_crc32c(crc.data.has_value());
          ok->set_verified_context_crc32c(crc.context.has_value());
          items.push_back({Bytes(item.plaintext()), &contexts[i]});
          outs.push_back(ok->mutable_ciphertext());
        }
        std::vector<absl::Status> item_status(items.size());
        absl::StatusOr<uint32_t> version = keys_.EncryptBatch(tenant, items, outs, item_status);
        size_t k = 0;
        for (size_t i = 0; i < n; ++i) {
          if (!results[i]->has_ok()) continue;  // refused above
          const absl::Status& st = version.ok() ? item_status[k] : version.status();
          ++k;
          if (st.ok()) {
            v1::EncryptResponse* ok = results[i]->mutable_ok();
            ok->set_dek_version(*version);
            ok->set_ciphertext_crc32c(Crc32c(ok->ciphertext()));
          } else {
            SetItemError(results[i], st, "EncryptBatch");
          }
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
                             Admit(identity, authz::Operation::kDecrypt, req.tenant_id(),
                                   req.key_name()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        resp->mutable_results()->Reserve(req.items_size());
        for (const v1::DecryptBatchItem& item : req.items()) {
          v1::DecryptBatchResult* result = resp->add_results();
          absl::Status item_status =
              DecryptOne(tenant, item.ciphertext(), item.context(), result->mutable_ok(),
                         CiphertextChecksums(item));
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
                             Admit(identity, authz::Operation::kReEncrypt, req.tenant_id(),
                                   req.key_name()));
        return ReEncryptOne(tenant, req.ciphertext(), req.context(), req.replace_context(),
                            req.new_context(), resp, CiphertextChecksums(req));
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
                             Admit(identity, authz::Operation::kReEncrypt, req.tenant_id(),
                                   req.key_name()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        resp->mutable_results()->Reserve(req.items_size());
        for (const v1::ReEncryptBatchItem& item : req.items()) {
          v1::ReEncryptBatchResult* result = resp->add_results();
          absl::Status item_status =
              ReEncryptOne(tenant, item.ciphertext(), item.context(), item.replace_context(),
                           item.new_context(), result->mutable_ok(), CiphertextChecksums(item));
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

namespace {

// KeyManager answers an unknown key set with "tenant not found"; a named key's caller
// should read what it asked for.
absl::Status ForKeySet(const std::string& key_name, absl::Status status) {
  if (!key_name.empty() && absl::IsNotFound(status)) {
    return absl::NotFoundError("named key not found");
  }
  return status;
}

std::string AsString(const SecretBytes& secret) {
  return std::string(reinterpret_cast<const char*>(secret.data()), secret.size());
}

}  // namespace

grpc::ServerUnaryReactor* KeyServiceImpl::GenerateDataKey(grpc::CallbackServerContext* ctx,
                                                          const grpc::ByteBuffer* in,
                                                          grpc::ByteBuffer* out) {
  return ServeUnary<v1::GenerateDataKeyRequest, v1::GenerateDataKeyResponse>(
      ctx, in, out, request_limits_.item, "GenerateDataKey",
      [&](const std::string& identity, const v1::GenerateDataKeyRequest& req,
          v1::GenerateDataKeyResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId key, Admit(identity, authz::Operation::kGenerateDataKey,
                                                       req.tenant_id(), req.key_name()));
        KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(req.context(), limits_));
        const std::optional<uint32_t> context_crc =
            req.has_context_crc32c() ? std::optional<uint32_t>(req.context_crc32c()) : std::nullopt;
        KMS_RETURN_IF_ERROR(VerifyContextCrc32c(context_crc, req.context()));
        absl::StatusOr<keys::DataKey> data_key = keys_.GenerateDataKey(key, ctx);
        if (!data_key.ok()) return ForKeySet(req.key_name(), data_key.status());
        // The response's copy is wiped by ServeUnary once it is serialized (unary.h).
        resp->set_plaintext(AsString(data_key->plaintext));
        resp->set_plaintext_crc32c(Crc32c(data_key->plaintext.span()));
        resp->set_wrapped_key(std::move(data_key->wrapped));
        resp->set_wrapped_key_crc32c(Crc32c(resp->wrapped_key()));
        resp->set_verified_context_crc32c(context_crc.has_value());
        resp->set_dek_version(data_key->dek_version);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::GenerateDataKeyWithoutPlaintext(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in, grpc::ByteBuffer* out) {
  return ServeUnary<v1::GenerateDataKeyWithoutPlaintextRequest,
                    v1::GenerateDataKeyWithoutPlaintextResponse>(
      ctx, in, out, request_limits_.item, "GenerateDataKeyWithoutPlaintext",
      [&](const std::string& identity, const v1::GenerateDataKeyWithoutPlaintextRequest& req,
          v1::GenerateDataKeyWithoutPlaintextResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(
            keys::TenantId key,
            Admit(identity, authz::Operation::kGenerateDataKeyWithoutPlaintext, req.tenant_id(),
                  req.key_name()));
        KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(req.context(), limits_));
        const std::optional<uint32_t> context_crc =
            req.has_context_crc32c() ? std::optional<uint32_t>(req.context_crc32c()) : std::nullopt;
        KMS_RETURN_IF_ERROR(VerifyContextCrc32c(context_crc, req.context()));
        absl::StatusOr<keys::DataKey> data_key =
            keys_.GenerateDataKey(key, ctx, /*with_plaintext=*/false);
        if (!data_key.ok()) return ForKeySet(req.key_name(), data_key.status());
        resp->set_wrapped_key(std::move(data_key->wrapped));
        resp->set_wrapped_key_crc32c(Crc32c(resp->wrapped_key()));
        resp->set_verified_context_crc32c(context_crc.has_value());
        resp->set_dek_version(data_key->dek_version);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::DecryptDataKey(grpc::CallbackServerContext* ctx,
                                                         const grpc::ByteBuffer* in,
                                                         grpc::ByteBuffer* out) {
  return ServeUnary<v1::DecryptDataKeyRequest, v1::DecryptDataKeyResponse>(
      ctx, in, out, request_limits_.item, "DecryptDataKey",
      [&](const std::string& identity, const v1::DecryptDataKeyRequest& req,
          v1::DecryptDataKeyResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::TenantId key, Admit(identity, authz::Operation::kDecryptDataKey,
                                                       req.tenant_id(), req.key_name()));
        KMS_RETURN_IF_ERROR(ValidateCiphertext(req.wrapped_key(), limits_));
        KMS_ASSIGN_OR_RETURN(keys::EncryptionContext ctx, ValidateContext(req.context(), limits_));
        const std::optional<uint32_t> wrapped_crc =
            req.has_wrapped_key_crc32c() ? std::optional<uint32_t>(req.wrapped_key_crc32c())
                                         : std::nullopt;
        const std::optional<uint32_t> context_crc =
            req.has_context_crc32c() ? std::optional<uint32_t>(req.context_crc32c()) : std::nullopt;
        KMS_RETURN_IF_ERROR(VerifyCrc32c(wrapped_crc, req.wrapped_key(), "wrapped_key_crc32c"));
        KMS_RETURN_IF_ERROR(VerifyContextCrc32c(context_crc, req.context()));
        absl::StatusOr<keys::DataKey> data_key =
            keys_.DecryptDataKey(key, ctx, Bytes(req.wrapped_key()));
        if (!data_key.ok()) return ForKeySet(req.key_name(), data_key.status());
        resp->set_plaintext(AsString(data_key->plaintext));
        resp->set_plaintext_crc32c(Crc32c(data_key->plaintext.span()));
        resp->set_verified_wrapped_key_crc32c(wrapped_crc.has_value());
        resp->set_verified_context_crc32c(context_crc.has_value());
        resp->set_dek_version(data_key->dek_version);
        return absl::OkStatus();
      });
}

absl::Status KeyServiceImpl::BlindIndexOne(const keys::BlindIndexKeys& index_keys,
                                           const std::string& normalization,
                                           const std::string& value,
                                           v1::ComputeBlindIndexResponse* out) {
  KMS_RETURN_IF_ERROR(ValidatePlaintext(value, limits_));
  KMS_ASSIGN_OR_RETURN(std::string normalized, keys::NormalizeForIndex(normalization, value));
  auto fill = [&](const keys::DekEntry& key, v1::BlindIndexValue* v) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(keys::BlindIndex index,
                         keys::ComputeBlindIndex(*key.mac_key, normalization, normalized));
    v->set_index(std::string(index.begin(), index.end()));
    v->set_index_key_version(key.version);
    return absl::OkStatus();
  };
  absl::Status status = fill(*index_keys.current, out->mutable_current());
  if (status.ok() && index_keys.previous != nullptr) {
    status = fill(*index_keys.previous, out->mutable_previous());
  }
  CleanseString(&normalized);
  return status;
}

grpc::ServerUnaryReactor* KeyServiceImpl::ComputeBlindIndex(grpc::CallbackServerContext* ctx,
                                                            const grpc::ByteBuffer* in,
                                                            grpc::ByteBuffer* out) {
  return ServeUnary<v1::ComputeBlindIndexRequest, v1::ComputeBlindIndexResponse>(
      ctx, in, out, request_limits_.item, "ComputeBlindIndex",
      [&](const std::string& identity, const v1::ComputeBlindIndexRequest& req,
          v1::ComputeBlindIndexResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitRef(identity,
                                                        authz::Operation::kComputeBlindIndex,
                                                        req.tenant_id(), req.key_name()));
        // The value is checked before any key is made or loaded.
        KMS_RETURN_IF_ERROR(ValidatePlaintext(req.value(), limits_));
        KMS_RETURN_IF_ERROR(keys::NormalizeForIndex(req.normalization(), req.value()).status());
        KMS_ASSIGN_OR_RETURN(keys::BlindIndexKeys index_keys, keys_.GetBlindIndexKeys(ref));
        return BlindIndexOne(index_keys, req.normalization(), req.value(), resp);
      });
}

grpc::ServerUnaryReactor* KeyServiceImpl::ComputeBlindIndexBatch(grpc::CallbackServerContext* ctx,
                                                                 const grpc::ByteBuffer* in,
                                                                 grpc::ByteBuffer* out) {
  return ServeUnary<v1::ComputeBlindIndexBatchRequest, v1::ComputeBlindIndexBatchResponse>(
      ctx, in, out, request_limits_.batch, "ComputeBlindIndexBatch",
      [&](const std::string& identity, const v1::ComputeBlindIndexBatchRequest& req,
          v1::ComputeBlindIndexBatchResponse* resp) -> absl::Status {
        KMS_ASSIGN_OR_RETURN(keys::KeyRef ref, AdmitRef(identity,
                                                        authz::Operation::kComputeBlindIndex,
                                                        req.tenant_id(), req.key_name()));
        KMS_RETURN_IF_ERROR(ValidateBatchSize(req.items_size(), limits_));
        KMS_ASSIGN_OR_RETURN(keys::BlindIndexKeys index_keys, keys_.GetBlindIndexKeys(ref));
        resp->mutable_results()->Reserve(req.items_size());
        for (const v1::ComputeBlindIndexBatchItem& item : req.items()) {
          v1::ComputeBlindIndexBatchResult* result = resp->add_results();
          absl::Status item_status =
              BlindIndexOne(index_keys, item.normalization(), item.value(), result->mutable_ok());
          if (!item_status.ok()) SetItemError(result, item_status, "ComputeBlindIndexBatch");
        }
        return absl::OkStatus();
      });
}

}  // namespace kms::server
