// A compact JWS/JWT from outside (VerifyJwt): jwt::ParseCompact and jwt::VerifyCompact
// on arbitrary text, with the fixed key of jwt_fuzz_common.h for every kid, at
// kFuzzNow with 60 s leeway.
//
// A fuzzed signature almost never verifies, which would leave the claims checks after
// the signature unreached. So whatever ParseCompact accepts is also signed again with
// the fixed key and verified: that must not fail on the signature, and what verifies
// must be what was parsed.
#include <string>

#include "src/common/base64.h"
#include "src/jwt/jwt.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/jwt_fuzz_common.h"

namespace kms::fuzz {

int FuzzJwtToken(const uint8_t* data, size_t size) {
  const jwt::Es256PrivateKey& key = FuzzEs256Key();
  const jwt::KeyLookup lookup = [&key](std::string_view) { return &key.public_key(); };
  const std::string_view token(reinterpret_cast<const char*>(data), size);

  auto parsed = jwt::ParseCompact(token);
  auto verified = jwt::VerifyCompact(token, lookup, kFuzzNow, 60);
  if (!verified.ok()) {
    FUZZ_CHECK(verified.status().code() == absl::StatusCode::kUnauthenticated);
  }
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!verified.ok());
    return 0;
  }
  FUZZ_CHECK(parsed->signature.size() == jwt::kEs256SignatureSize);
  FUZZ_CHECK(token.substr(0, parsed->signing_input.size()) == parsed->signing_input);
  if (verified.ok()) {
    FUZZ_CHECK(verified->kid == parsed->kid && verified->claims_json == parsed->payload_json);
  }
  // A lookup that knows no key rejects everything.
  FUZZ_CHECK(!jwt::VerifyCompact(
                  token, [](std::string_view) { return nullptr; }, kFuzzNow, 60)
                  .ok());

  auto sig = key.Sign(AsBytes(parsed->signing_input));
  FUZZ_CHECK(sig.ok());
  const std::string resigned = parsed->signing_input + "." + Base64UrlEncode(*sig);
  auto reparsed = jwt::ParseCompact(resigned);
  FUZZ_CHECK(reparsed.ok() && reparsed->kid == parsed->kid &&
             reparsed->payload_json == parsed->payload_json);
  auto reverified = jwt::VerifyCompact(resigned, lookup, kFuzzNow, 60);
  if (reverified.ok()) {
    FUZZ_CHECK(reverified->kid == parsed->kid && reverified->claims_json == parsed->payload_json);
  } else {
    FUZZ_CHECK(reverified.status().code() == absl::StatusCode::kUnauthenticated);
    FUZZ_CHECK(reverified.status().message().find("bad signature") == std::string_view::npos);
  }
  return 0;
}

}  // namespace kms::fuzz
