// The KeyStore seam: where wrapped keys and tenant state persist.
//
// Backends: src/store/sqlite (embedded default), src/store/postgres (cluster).
// Both pass the one contract suite in tests/integration/store_contract_test.
//
// Every state change is a compare-and-set on the version it started from, and bumps
// the store-wide epoch in the same transaction, so replicas that poll the epoch see
// every change, and two replicas can never both apply the same change.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kms/common/status.h"

namespace kms::store {

enum class KekState { kActive, kRetired };
enum class TenantState { kActive, kShredded };
enum class DekState { kActive, kRetired, kDestroyed };

std::string_view KekStateName(KekState s);       // "active", "retired"
std::string_view TenantStateName(TenantState s); // "active", "shredded"
std::string_view DekStateName(DekState s);       // "active", "retired", "destroyed"

struct KekRecord {
  uint32_t version = 0;
  std::vector<uint8_t> wrapped;  // HSM blob: wrapped under the master key
  KekState state = KekState::kActive;
  int64_t created_at = 0;  // Unix seconds
};

struct TenantRecord {
  std::string id;
  TenantState state = TenantState::kActive;
  uint32_t primary_dek_version = 0;
  uint32_t min_decrypt_version = 1;
  int64_t created_at = 0;
  // Incremented by every change to the tenant; the compare-and-set token.
  int64_t row_version = 1;
};

struct DekRecord {
  std::string tenant_id;
  uint32_t version = 0;
  uint32_t kek_version = 0;
  std::vector<uint8_t> wrapped;  // DEK blob (src/keys/wrapped_dek.h)
  DekState state = DekState::kActive;
  int64_t created_at = 0;
  uint64_t encryptions = 0;
};

// An ES256 JWT signing key (DESIGN §5). Its lifecycle state is derived from the
// timestamps, so every replica reaches the same state from the same row:
//   now < activate_at                 published in the JWKS, not yet signing
//   activate_at <= now, retire_at==0  signing (the newest such key signs)
//   retire_at != 0, now < retire_at   verifying only (overlap after a rotation)
//   retire_at != 0, now >= retire_at  retired: gone from the JWKS
struct JwtKeyRecord {
  std::string kid;
  std::string public_jwk;                // the JWK, JSON text (public part only)
  std::vector<uint8_t> wrapped_private;  // PKCS#8 DER private key sealed under the KEK
  uint32_t kek_version = 0;
  int64_t created_at = 0;
  int64_t activate_at = 0;
  int64_t retire_at = 0;  // 0: not scheduled
  int64_t row_version = 1;
};

struct TenantPage {
  std::vector<TenantRecord> tenants;
  std::string next_after;  // empty when this is the last page
};

// Thread-safe. Errors: NOT_FOUND, ALREADY_EXISTS (insert of an existing key),
// ABORTED (compare-and-set lost: someone else changed the row first),
// UNAVAILABLE (backend unreachable), INTERNAL (anything else).
class KeyStore {
 public:
  virtual ~KeyStore() = default;

  virtual std::string_view backend_name() const = 0;

  // --- KEKs
  virtual absl::StatusOr<std::vector<KekRecord>> ListKeks() = 0;
  // ALREADY_EXISTS when the version exists (another replica created it first).
  virtual absl::Status InsertKek(const KekRecord& kek) = 0;
  // ABORTED when the version is not in state `from`.
  virtual absl::Status UpdateKekState(uint32_t version, KekState from, KekState to) = 0;

  // --- Tenants and their DEKs
  // Inserts the tenant and its first DEK atomically. ALREADY_EXISTS when the id is taken.
  virtual absl::Status CreateTenant(const TenantRecord& tenant, const DekRecord& first_dek) = 0;
  virtual absl::StatusOr<TenantRecord> GetTenant(const std::string& tenant_id) = 0;
  // Tenants ordered by id, starting after `after` (empty: from the start).
  virtual absl::StatusOr<TenantPage> ListTenants(const std::string& after, int limit) = 0;
  virtual absl::StatusOr<uint64_t> CountTenants() = 0;

  // One read: the DEK `version` of a tenant together with the tenant row.
  // version 0 means the tenant's primary version. NOT_FOUND for an unknown tenant
  // or version.
  struct TenantDek {
    TenantRecord tenant;
    DekRecord dek;
  };
  virtual absl::StatusOr<TenantDek> GetTenantDek(const std::string& tenant_id, uint32_t version) = 0;
  virtual absl::StatusOr<std::vector<DekRecord>> ListDeks(const std::string& tenant_id) = 0;

  // Adds `new_dek` and makes it primary, if the tenant's row_version is still
  // `expected_row_version`; else ABORTED.
  virtual absl::Status RotateDek(const std::string& tenant_id, int64_t expected_row_version,
                                 const DekRecord& new_dek) = 0;
  // Sets the tenant's state (and, for kShredded, destroys every DEK blob), if the
  // row_version is still `expected_row_version`; else ABORTED.
  virtual absl::Status SetTenantState(const std::string& tenant_id, int64_t expected_row_version,
                                      TenantState state) = 0;
  // Adds to a DEK version's encryption count (batched by the caller).
  virtual absl::Status AddEncryptions(const std::string& tenant_id, uint32_t version,
                                      uint64_t count) = 0;

  // --- JWT signing keys
  // Every key, retired ones included, ordered by activate_at then kid.
  virtual absl::StatusOr<std::vector<JwtKeyRecord>> ListJwtKeys() = 0;
  // Inserts the very first key. ALREADY_EXISTS when any key exists (another replica
  // created one first).
  virtual absl::Status InsertFirstJwtKey(const JwtKeyRecord& key) = 0;
  // A rotation, atomically: sets retire_at of `current_kid` (if its row_version is
  // still `expected_row_version`, else ABORTED; NOT_FOUND when unknown) and inserts
  // `next`. Two replicas rotating at once: exactly one succeeds.
  virtual absl::Status RotateJwtKey(const std::string& current_kid, int64_t expected_row_version,
                                    int64_t current_retire_at, const JwtKeyRecord& next) = 0;
  // Re-wraps a key's private part (KEK rotation), compare-and-set on row_version.
  virtual absl::Status UpdateJwtKeyWrapping(const std::string& kid, int64_t expected_row_version,
                                            uint32_t kek_version,
                                            const std::vector<uint8_t>& wrapped_private) = 0;

  // --- Coherence
  // Incremented by every state change above.
  virtual absl::StatusOr<int64_t> GetEpoch() = 0;
  virtual absl::Status Ping() = 0;
};

}  // namespace kms::store
