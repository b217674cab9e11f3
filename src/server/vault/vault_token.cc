#include "src/server/vault/vault_token.h"

#include <span>

#include "nlohmann/json.hpp"
#include "src/common/base64.h"

namespace kms::server::vault {
namespace {

absl::Status Denied() { return absl::PermissionDeniedError("permission denied"); }

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

absl::StatusOr<VaultToken> VaultTokens::Issue(std::string_view identity,
                                              std::string_view cert_sha256) const {
  if (identity.empty() || cert_sha256.size() != 32) return Denied();
  nlohmann::json claims = {{"sub", std::string(identity)},
                           {"aud", std::string(kVaultTokenAudience)},
                           {"cnf", {{"x5t#S256", Base64UrlEncode(Bytes(cert_sha256))}}}};
  std::string text;
  try {
    text = claims.dump();
  } catch (const nlohmann::json::exception&) {  // an identity that is not UTF-8
    return Denied();
  }
  KMS_ASSIGN_OR_RETURN(jwt::SignedJwt signed_token,
                       jwt_.SignDocument(kVaultTokenType, text, ttl_seconds_));
  return VaultToken{.token = std::move(signed_token.jwt),
                    .identity = std::string(identity),
                    .issued_at = signed_token.issued_at,
                    .expires_at = signed_token.expires_at};
}

absl::StatusOr<VaultTokens::Cached> VaultTokens::Verify(std::string_view token) const {
  absl::StatusOr<jwt::VerifiedJwt> verified = jwt_.VerifyDocument(kVaultTokenType, token);
  if (absl::IsUnavailable(verified.status())) return verified.status();
  if (!verified.ok()) return Denied();
  nlohmann::json claims = nlohmann::json::parse(verified->claims_json, nullptr, false);
  if (!claims.is_object()) return Denied();
  auto sub = claims.find("sub");
  auto aud = claims.find("aud");
  auto cnf = claims.find("cnf");
  auto iat = claims.find("iat");
  if (sub == claims.end() || !sub->is_string() || aud == claims.end() || !aud->is_string() ||
      aud->get<std::string>() != kVaultTokenAudience || cnf == claims.end() || !cnf->is_object()) {
    return Denied();
  }
  auto x5t = cnf->find("x5t#S256");
  if (x5t == cnf->end() || !x5t->is_string()) return Denied();
  absl::StatusOr<std::vector<uint8_t>> fingerprint = Base64UrlDecode(x5t->get<std::string>());
  if (!fingerprint.ok() || fingerprint->size() != 32) return Denied();
  Cached out;
  out.identity = sub->get<std::string>();
  out.cert_sha256.assign(fingerprint->begin(), fingerprint->end());
  out.issued_at = (iat != claims.end() && iat->is_number_integer()) ? iat->get<int64_t>() : 0;
  out.expires_at = verified->expires_at;
  return out;
}

absl::StatusOr<VaultToken> VaultTokens::Check(std::string_view token, std::string_view identity,
                                              std::string_view cert_sha256) {
  if (token.empty() || token.size() > jwt::kMaxTokenBytes || identity.empty() ||
      cert_sha256.size() != 32) {
    return Denied();
  }
  const int64_t now = clock_.UnixSeconds();
  std::string key(token);
  Cached claims;
  bool cached = false;
  {
    MutexLock lock(&mu_);
    auto it = verified_.find(key);
    if (it != verified_.end()) {
      if (it->second.expires_at <= now) {
        verified_.erase(it);
        return Denied();
      }
      claims = it->second;
      cached = true;
    }
  }
  if (!cached) {
    KMS_ASSIGN_OR_RETURN(claims, Verify(token));
    MutexLock lock(&mu_);
    if (verified_.size() >= kMaxCachedTokens) verified_.clear();  // bounded; re-verified later
    verified_.emplace(key, claims);
  }
  // The certificate of this request must be the one the token was issued to.
  if (claims.cert_sha256 != cert_sha256 || claims.identity != identity || claims.expires_at <= now) {
    return Denied();
  }
  return VaultToken{.token = std::move(key),
                    .identity = claims.identity,
                    .issued_at = claims.issued_at,
                    .expires_at = claims.expires_at};
}

}  // namespace kms::server::vault
