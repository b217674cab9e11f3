// Compact JWS (RFC 7515 §7.1) JWTs (RFC 7519) signed with ES256, and the claims rules
// of the SignJwt contract.
//
// Token layout: BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(r || s), where
// the header is exactly {"alg":"ES256","typ":"JWT","kid":"<kid>"} and the payload is
// the claims object serialized by kmsd (members sorted by name, no whitespace, numbers in
// their shortest round-trip form: a faithful number keeps the digits it was given).
//
// Claims rules (BuildClaims), strict on purpose, so a caller can never make kmsd sign a
// token whose lifetime it did not choose:
//  - the input must be the I-JSON text (i_json.h, RFC 7493) of an object, nested at most
//    kMaxClaimsDepth deep: no duplicate names, no integer beyond 2^53, no number a
//    double does not hold faithfully, no invalid UTF-8, lone surrogate or noncharacter.
//    kmsd signs the claims it was given unchanged in value (never rounded or
//    rewritten: what it cannot represent faithfully it refuses), plus iat, exp and,
//    when absent, iss;
//  - the input, and the payload that is signed (iat, exp, iss added), are at most
//    max_claims_bytes long, so every token kmsd issues is within kMaxTokenBytes and
//    passes its own VerifyCompact (max_claims_bytes <= kMaxClaimsBytesLimit);
//  - "iat" and "exp" must NOT be present: kmsd sets iat = now and exp = iat + ttl;
//  - "nbf", if present, must be a number not after exp;
//  - "iss", if present, must be a string, and equal the configured issuer when one is
//    configured; when absent, the configured issuer (if any) is added;
//  - ttl 0 means the default TTL; a negative ttl or one above max_ttl_seconds is refused.
// Every violation is INVALID_ARGUMENT; messages name the claim, never echo values.
//
// Verification (VerifyCompact) accepts only what it must: at most kMaxTokenBytes, three
// base64url parts whose header and payload are I-JSON, a header object with
// "alg":"ES256" (so "none", HS256, ... are refused), a "typ", if present, of "JWT"
// (case-insensitively, RFC 7515 §4.1.9; so another document kmsd signs, a shred receipt
// with typ "kmsd-shred-receipt+jwt", is never taken for an access token), a "kid" (if
// present, a non-empty string; absent: "") for which the lookup has a key, no "crit" or "b64" member, a payload object with a numeric
// "exp". It checks the signature, then exp and nbf (and iat, if present, not in the
// future) with a leeway. Every rejection is UNAUTHENTICATED "token rejected: <reason>".
//
// Nothing here throws: nlohmann_json is used in its non-throwing forms, and the one
// call that may throw (dump) is caught. Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/status.h"
#include "src/jwt/es256.h"

namespace kms::jwt {

inline constexpr int kMaxClaimsDepth = 32;
inline constexpr size_t kMaxTokenBytes = 64 * 1024;
// The largest max_claims_bytes a policy may set: its token (base64url of header,
// payload and signature, about 4/3 of the bytes plus 200) stays within kMaxTokenBytes.
inline constexpr size_t kMaxClaimsBytesLimit = 32 * 1024;

struct ClaimsPolicy {
  std::string issuer;  // empty: none configured
  int64_t max_ttl_seconds = 900;
  int64_t default_ttl_seconds = 0;  // used for ttl 0; 0 here means max_ttl_seconds
  size_t max_claims_bytes = 8192;
};

struct BuiltClaims {
  std::string payload_json;
  int64_t issued_at = 0;
  int64_t expires_at = 0;
};

// Applies the claims rules above at time `now` (Unix seconds).
absl::StatusOr<BuiltClaims> BuildClaims(std::string_view claims_json, int64_t ttl_seconds,
                                        int64_t now, const ClaimsPolicy& policy);

// The typ of access tokens.
inline constexpr std::string_view kAccessTokenType = "JWT";

// The protected header for `kid`: {"alg":"ES256","typ":<typ>,"kid":<kid>}.
std::string HeaderJson(std::string_view kid, std::string_view typ = kAccessTokenType);

// Signs `payload_json` with `key` as a compact JWS with HeaderJson(key.kid(), typ).
absl::StatusOr<std::string> EncodeCompact(const Es256PrivateKey& key,
                                          std::string_view payload_json,
                                          std::string_view typ = kAccessTokenType);

// A token split and decoded, nothing verified yet. INVALID_ARGUMENT when it is not
// three base64url parts with JSON-object header and payload and a 64-byte signature,
// or when the header is not ES256 (kid, when present, a non-empty string).
struct ParsedJwt {
  std::string kid;  // empty when the header has none
  std::string typ;  // empty when the header has none (else a string)
  std::string header_json;
  std::string payload_json;
  std::string signing_input;  // ASCII(BASE64URL(header) "." BASE64URL(payload))
  std::vector<uint8_t> signature;
};
absl::StatusOr<ParsedJwt> ParseCompact(std::string_view token);

struct VerifiedJwt {
  std::string kid;
  std::string claims_json;  // the payload, as signed
  int64_t expires_at = 0;
};

// The public key for a kid, or null when unknown. Called once per verification.
using KeyLookup = std::function<const Es256PublicKey*(std::string_view kid)>;

// Parses and verifies `token` at time `now`, with `leeway_seconds` of clock skew on
// exp/nbf/iat. UNAUTHENTICATED for every rejection.
// `typ` is the header typ required: kAccessTokenType (absent also accepted) for access
// tokens; another kind of document kmsd signs (a Vault-door token) names its own, which
// must then be present and equal.
absl::StatusOr<VerifiedJwt> VerifyCompact(std::string_view token, const KeyLookup& lookup,
                                          int64_t now, int64_t leeway_seconds,
                                          std::string_view typ = kAccessTokenType);

}  // namespace kms::jwt
