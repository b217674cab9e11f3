// The JwtKeyStore seam: the ES256 JWT signing keys (DESIGN §5), their private keys
// sealed under a KEK version.
//
// Implemented by the one class per backend that implements every store seam
// (kms/store/key_store.h): src/store/sqlite, src/store/postgres. Checked by the contract
// suite in tests/integration/store (jwt_key_store_contract.cc).
//
// Thread-safe. Every change is one transaction that also increases the store epoch
// (StoreHealth::GetEpoch) and, for a changed row, its row_version; a rejected change
// changes nothing, the epoch included. Changes to a key are compare-and-set on the
// row_version the caller read: when someone else changed the key first, the call is
// ABORTED (re-read and decide again). Errors common to every method: UNAVAILABLE
// (backend unreachable, locked or out of resources: retry later), INTERNAL (anything
// else: a bug or a damaged database). Further codes are listed per method.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kms/common/status.h"

namespace kms::store {

// An ES256 JWT signing key. Its lifecycle state is derived from the timestamps, so
// every replica reaches the same state from the same row:
//   now < activate_at                 published in the JWKS, not yet signing
//   activate_at <= now, retire_at==0  signing (the newest such key signs)
//   retire_at != 0, now < retire_at   verifying only (overlap after a rotation)
//   retire_at != 0, now >= retire_at  retired: gone from the JWKS
struct JwtKeyRecord {
  std::string kid;
  std::string public_jwk;                // the JWK, JSON text (public part only)
  std::vector<uint8_t> wrapped_private;  // PKCS#8 DER private key sealed under the KEK
  uint32_t kek_version = 0;
  int64_t created_at = 0;   // Unix seconds, like the two below
  int64_t activate_at = 0;
  int64_t retire_at = 0;  // 0: not scheduled
  int64_t row_version = 1;
};

class JwtKeyStore {
 public:
  virtual ~JwtKeyStore() = default;

  // Every key, retired ones included, ordered by activate_at then kid (bytewise).
  virtual absl::StatusOr<std::vector<JwtKeyRecord>> ListJwtKeys() = 0;

  // Inserts the very first key, with row_version 1 (the record's is ignored).
  // ALREADY_EXISTS when any key exists (another replica created one first, whatever
  // its kid). INVALID_ARGUMENT (nothing written): an empty kid, retire_at < 0.
  virtual absl::Status InsertFirstJwtKey(const JwtKeyRecord& key) = 0;

  // A rotation, atomically: sets retire_at of `current_kid` if its row_version is still
  // `expected_row_version` (else ABORTED; NOT_FOUND when unknown), and inserts `next`
  // with row_version 1. ALREADY_EXISTS when next.kid exists (then the current key is
  // not changed either). Two replicas rotating from the same row: exactly one succeeds.
  // INVALID_ARGUMENT (nothing written): an empty kid, a retire_at < 0.
  virtual absl::Status RotateJwtKey(const std::string& current_kid, int64_t expected_row_version,
                                    int64_t current_retire_at, const JwtKeyRecord& next) = 0;

  // Re-wraps a key's private part (KEK rotation): sets kek_version and wrapped_private
  // if the row_version is still `expected_row_version` (else ABORTED; NOT_FOUND when
  // unknown).
  virtual absl::Status UpdateJwtKeyWrapping(const std::string& kid, int64_t expected_row_version,
                                            uint32_t kek_version,
                                            const std::vector<uint8_t>& wrapped_private) = 0;
};

}  // namespace kms::store
