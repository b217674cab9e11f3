// The claims a SignJwt caller sends: jwt::BuildClaims on arbitrary JSON text, then, for
// what it accepts, the full path a token takes: EncodeCompact with the fixed key,
// ParseCompact and VerifyCompact at the same instant. Accepted claims must be signed
// unchanged in value (I-JSON: a number, a string, a member is never rewritten) and within
// the size limit.
//
// Input layout: byte 0 picks the ttl (0 = default; 1..250 = that many seconds times 4,
// so some exceed the 900 s maximum; 251..255 = negative), byte 1 bit 0 configures an
// issuer ("https://kmsd.example"), the rest is the claims JSON.
#include <string>

#include "nlohmann/json.hpp"
#include "src/jwt/i_json.h"
#include "src/jwt/jwt.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/jwt_fuzz_common.h"

namespace kms::fuzz {

int FuzzJwtClaims(const uint8_t* data, size_t size) {
  const jwt::Es256PrivateKey& key = FuzzEs256Key();
  ByteReader in(data, size);
  const uint8_t ttl_byte = in.U8();
  const int64_t ttl = ttl_byte > 250 ? -int64_t{ttl_byte - 250} : int64_t{ttl_byte} * 4;
  jwt::ClaimsPolicy policy;
  if (in.U8() & 1) policy.issuer = "https://kmsd.example";
  const std::string_view claims = AsText(in.Rest());

  auto built = jwt::BuildClaims(claims, ttl, kFuzzNow, policy);
  if (!built.ok()) {
    FUZZ_CHECK(built.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  const int64_t effective_ttl = ttl == 0 ? policy.max_ttl_seconds : ttl;
  FUZZ_CHECK(ttl >= 0 && effective_ttl <= policy.max_ttl_seconds);
  FUZZ_CHECK(built->issued_at == kFuzzNow && built->expires_at == kFuzzNow + effective_ttl);

  // The payload carries exactly the iat and exp kmsd chose, and the issuer.
  auto payload = nlohmann::json::parse(built->payload_json, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(payload.is_object());
  FUZZ_CHECK(payload.contains("iat") && payload["iat"].is_number_integer() &&
             payload["iat"].get<int64_t>() == built->issued_at);
  FUZZ_CHECK(payload.contains("exp") && payload["exp"].is_number_integer() &&
             payload["exp"].get<int64_t>() == built->expires_at);
  if (!policy.issuer.empty()) {
    FUZZ_CHECK(payload.contains("iss") && payload["iss"] == policy.issuer);
  }

  // Signed exactly as given (I-JSON, never rewritten): the payload minus kmsd's own
  // members equals the claims as parsed, and the limit holds on the payload.
  FUZZ_CHECK(built->payload_json.size() <= policy.max_claims_bytes);
  auto given = nlohmann::json::parse(claims, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(given.is_object());
  nlohmann::json rest = payload;
  for (const char* own : {"iat", "exp", "iss"}) {
    if (!given.contains(own)) rest.erase(own);
  }
  FUZZ_CHECK(rest == given);
  FUZZ_CHECK(jwt::CheckIJson(built->payload_json, jwt::kMaxClaimsDepth).ok());

  auto token = jwt::EncodeCompact(key, built->payload_json);
  FUZZ_CHECK(token.ok());
  auto parsed = jwt::ParseCompact(*token);
  FUZZ_CHECK(parsed.ok() && parsed->kid == key.kid() &&
             parsed->payload_json == built->payload_json);
  const jwt::KeyLookup lookup = [&key](std::string_view kid) {
    return kid == key.kid() ? &key.public_key() : nullptr;
  };
  auto verified = jwt::VerifyCompact(*token, lookup, kFuzzNow, 0);
  if (verified.ok()) {
    FUZZ_CHECK(verified->expires_at == built->expires_at &&
               verified->claims_json == built->payload_json);
  } else {
    // The one legitimate refusal of a token kmsd just made: an nbf in the future.
    FUZZ_CHECK(verified.status().message() == "token rejected: not yet valid");
  }
  return 0;
}

}  // namespace kms::fuzz
