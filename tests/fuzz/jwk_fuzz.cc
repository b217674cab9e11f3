// A stored public JWK (jwt_keys.public_jwk, read back from the store; also what a JWKS
// carries): jwt::Es256PublicKey::FromJwk on arbitrary text.
// Invariants: a refusal is INVALID_ARGUMENT; an accepted key's kid is the RFC 7638
// thumbprint of its coordinates, and its own JWK text is accepted again with the same
// kid.
#include "src/jwt/es256.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

int FuzzJwk(const uint8_t* data, size_t size) {
  auto key = jwt::Es256PublicKey::FromJwk(AsText({data, size}));
  if (!key.ok()) {
    FUZZ_CHECK(key.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  auto again = jwt::Es256PublicKey::FromJwk((*key)->JwkJson());
  FUZZ_CHECK(again.ok() && (*again)->kid() == (*key)->kid());
  FUZZ_CHECK((*again)->JwkJson() == (*key)->JwkJson());
  return 0;
}

}  // namespace kms::fuzz
