// Tokens of the Vault door's cert auth (auth/cert/login): short-lived, bound to the
// client certificate that logged in, accepted by every replica.
//
// Format: a compact JWS signed by kmsd's ES256 signing keys (JwtService, shared by every
// replica through the store, sealed under the KEK ring) with header typ
// "kmsd-vault-token+jwt", so no verifier of access tokens takes it for one; payload
//   {"aud":"kmsd-vault","cnf":{"x5t#S256":<base64url SHA-256 of the certificate's DER>},
//    "exp":..,"iat":..,"iss":<configured issuer>,"sub":<identity>}
// (RFC 8705 §3.1 certificate-bound tokens). No secret of its own: nothing to configure,
// store or rotate apart from the JWT keys. A token is refused unless the request
// carries the very certificate it names.
//
// Thread-safe. Verified tokens are remembered (at most kMaxCachedTokens, until they
// expire) so a client's requests cost one ES256 verification per token, not per call.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "src/common/sync.h"
#include "src/jwt/jwt_service.h"

namespace kms::server::vault {

inline constexpr std::string_view kVaultTokenType = "kmsd-vault-token+jwt";
inline constexpr std::string_view kVaultTokenAudience = "kmsd-vault";

struct VaultToken {
  std::string token;
  std::string identity;
  int64_t issued_at = 0;   // Unix seconds
  int64_t expires_at = 0;  // Unix seconds
};

class VaultTokens {
 public:
  static constexpr size_t kMaxCachedTokens = 10000;

  // `jwt` and `clock` must outlive this.
  VaultTokens(const jwt::JwtService& jwt, const Clock& clock, int64_t ttl_seconds)
      : jwt_(jwt), clock_(clock), ttl_seconds_(ttl_seconds) {}

  // A token for `identity` bound to the certificate whose DER hashes to `cert_sha256`
  // (32 bytes). Errors as JwtService::SignDocument (UNAVAILABLE while keys load).
  absl::StatusOr<VaultToken> Issue(std::string_view identity, std::string_view cert_sha256) const;

  // The token's claims when it verifies, has not expired, and names `identity` and the
  // certificate `cert_sha256` the request came with; PERMISSION_DENIED otherwise
  // ("permission denied", as Vault answers a bad token), UNAVAILABLE while keys load.
  absl::StatusOr<VaultToken> Check(std::string_view token, std::string_view identity,
                                   std::string_view cert_sha256);

 private:
  struct Cached {
    std::string identity;
    std::string cert_sha256;
    int64_t issued_at = 0;
    int64_t expires_at = 0;
  };
  absl::StatusOr<Cached> Verify(std::string_view token) const;

  const jwt::JwtService& jwt_;
  const Clock& clock_;
  const int64_t ttl_seconds_;
  Mutex mu_;
  std::unordered_map<std::string, Cached> verified_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kms::server::vault
