// The TenantKeyStore seam: tenants and their versioned DEKs (stored wrapped under a KEK
// version), with the bulk re-wrap a KEK rotation needs.
//
// Implemented by the one class per backend that implements every store seam
// (kms/store/key_store.h): src/store/sqlite, src/store/postgres. Checked by the contract
// suite in tests/integration/store (tenant_key_store_contract.cc).
//
// Thread-safe. Every change is one transaction; unless a method says otherwise it also
// increases the store epoch (StoreHealth::GetEpoch). A rejected change changes nothing,
// the epoch included. Changes to a tenant are compare-and-set on the row_version the
// caller read: when someone else changed the tenant first, the call is ABORTED (re-read
// and decide again); two replicas can never both apply a change from the same version.
// Errors common to every method: UNAVAILABLE (backend unreachable, locked or out of
// resources: retry later), INVALID_ARGUMENT (arguments refused before anything is
// written), INTERNAL (anything else: a bug or a damaged database). Further codes are
// listed per method.
//
// Shredded tenants: shredding is final and keeps the rows. GetTenant, GetTenantDek and
// ListDeks return a shredded tenant with TenantState::kShredded and every DEK in
// DekState::kDestroyed with an empty `wrapped`, so callers tell "shredded" from "never
// existed" (NOT_FOUND). Changing a shredded tenant (other than shredding it again) is
// FAILED_PRECONDITION.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/status.h"

namespace kms::store {

enum class TenantState { kActive, kShredded };
enum class DekState { kActive, kRetired, kDestroyed };

// The names stored in the database: "active", "shredded".
inline std::string_view TenantStateName(TenantState s) {
  switch (s) {
    case TenantState::kActive: return "active";
    case TenantState::kShredded: return "shredded";
  }
  return "unknown";
}

// The names stored in the database: "active", "retired", "destroyed".
inline std::string_view DekStateName(DekState s) {
  switch (s) {
    case DekState::kActive: return "active";
    case DekState::kRetired: return "retired";
    case DekState::kDestroyed: return "destroyed";
  }
  return "unknown";
}

// The inverses of the names above. INTERNAL for any other name (a database written by
// something else).
inline absl::StatusOr<TenantState> ParseTenantState(std::string_view name) {
  if (name == "active") return TenantState::kActive;
  if (name == "shredded") return TenantState::kShredded;
  return absl::InternalError("store: unknown tenant state in database");
}
inline absl::StatusOr<DekState> ParseDekState(std::string_view name) {
  if (name == "active") return DekState::kActive;
  if (name == "retired") return DekState::kRetired;
  if (name == "destroyed") return DekState::kDestroyed;
  return absl::InternalError("store: unknown DEK state in database");
}

struct TenantRecord {
  std::string id;  // non-empty; any bytes (stored verbatim, ordered bytewise)
  TenantState state = TenantState::kActive;
  uint32_t primary_dek_version = 0;
  uint32_t min_decrypt_version = 1;
  int64_t created_at = 0;  // Unix seconds
  // Incremented by every change to the tenant; the compare-and-set token.
  int64_t row_version = 1;
};

struct DekRecord {
  std::string tenant_id;
  uint32_t version = 0;  // > 0
  uint32_t kek_version = 0;
  std::vector<uint8_t> wrapped;  // DEK blob (src/keys/wrapped_dek.h); empty when destroyed
  DekState state = DekState::kActive;
  int64_t created_at = 0;  // Unix seconds
  uint64_t encryptions = 0;
};

// A DEK row's key, and the order of ListDeksWrappedUnder: tenant id (bytewise), then
// version. The default value {"", 0} is before every row.
struct DekKey {
  std::string tenant_id;
  uint32_t version = 0;
};

// One DEK version's encryptions to add (TenantKeyStore::AddEncryptionsBatch).
struct EncryptionCount {
  std::string tenant_id;
  uint32_t version = 0;
  uint64_t count = 0;
};

struct TenantPage {
  std::vector<TenantRecord> tenants;
  std::string next_after;  // empty when this is the last page
};

struct DekPage {
  std::vector<DekRecord> deks;
  bool more = false;  // rows follow deks.back(): ask again from its key
};

// The DEK `version` of a tenant read together with the tenant row (one snapshot).
struct TenantDek {
  TenantRecord tenant;
  DekRecord dek;
};

// One DEK moved from one KEK version to another by a re-wrap.
struct DekRewrap {
  std::string tenant_id;
  uint32_t version = 0;
  uint32_t from_kek_version = 0;  // compare-and-set: still wrapped under this KEK version
  uint32_t to_kek_version = 0;
  std::vector<uint8_t> wrapped;  // the same DEK, wrapped under to_kek_version
};

enum class DekRewrapResult {
  kUpdated,   // the row now holds `wrapped` under to_kek_version
  kSkipped,   // the row exists but is no longer wrapped under from_kek_version, or is
              // destroyed (another replica re-wrapped it, or the tenant was shredded)
  kNotFound,  // no such tenant or DEK version
};

// A tenant whose primary DEK is due for rotation by age (ListTenantsDueForRotation).
struct DueTenant {
  std::string tenant_id;
  uint32_t primary_dek_version = 0;
  int64_t dek_created_at = 0;   // Unix seconds, of the primary DEK version
  int64_t period_seconds = 0;   // the period that applied: the tenant's own, else the default
  int64_t row_version = 0;
};

struct DueTenantPage {
  std::vector<DueTenant> tenants;
  bool more = false;  // due tenants may follow tenants.back(): ask again from its id
};

// The most rows one UpdateDekWrappings call takes.
inline constexpr size_t kMaxDekRewrapBatch = 1000;

// One tenant to create with its first DEK (TenantKeyStore::CreateTenants).
struct NewTenant {
  TenantRecord tenant;
  DekRecord first_dek;
};

enum class CreateTenantResult {
  kCreated,        // the tenant and its first DEK were inserted
  kAlreadyExists,  // the id was taken (in any state, shredded too): left as it was
};

// The most tenants one CreateTenants call takes.
inline constexpr size_t kMaxCreateTenantsBatch = 1000;

class TenantKeyStore {
 public:
  virtual ~TenantKeyStore() = default;

  // Kept so that `KeyStore::TenantDek` still names the record.
  using TenantDek = store::TenantDek;

  // Inserts the tenant (row_version 1, primary_dek_version = first_dek.version) and
  // its first DEK, atomically. ALREADY_EXISTS when the id is taken (the first tenant
  // and its DEK stay as they were). INVALID_ARGUMENT: empty id, DEK version 0, a
  // first_dek of another tenant, a non-zero tenant.primary_dek_version that differs
  // from first_dek.version.
  virtual absl::Status CreateTenant(const TenantRecord& tenant, const DekRecord& first_dek) = 0;

  // Bulk creation (a platform migrating its tenants): CreateTenant for each element, in
  // ONE transaction (one commit, one fsync, one epoch bump when any was created). An id
  // that is taken is not an error: it is left as it was and reported kAlreadyExists, so
  // a load interrupted by a crash can be run again. Returns one result per input
  // element, in input order. On an error nothing of the call is applied.
  // INVALID_ARGUMENT (nothing written): more than kMaxCreateTenantsBatch elements, an id
  // listed twice, or an element CreateTenant would refuse. An empty call is OK and
  // touches nothing.
  virtual absl::StatusOr<std::vector<CreateTenantResult>> CreateTenants(
      std::span<const NewTenant> tenants) = 0;

  // NOT_FOUND for an unknown tenant.
  virtual absl::StatusOr<TenantRecord> GetTenant(const std::string& tenant_id) = 0;

  // Tenants ordered by id (bytewise), starting after `after` (empty: from the start),
  // at most `limit` (> 0, else INVALID_ARGUMENT). A full last page has an empty
  // next_after: no empty page follows.
  virtual absl::StatusOr<TenantPage> ListTenants(const std::string& after, int limit) = 0;

  // Every tenant, shredded ones included.
  virtual absl::StatusOr<uint64_t> CountTenants() = 0;

  // The created_at of the oldest primary DEK among active tenants (Unix seconds), 0 when
  // there is no active tenant: the age the DEK rotation is due by. One aggregate query.
  virtual absl::StatusOr<int64_t> OldestPrimaryDekCreatedAt() = 0;

  // One read: the DEK `version` of a tenant together with the tenant row. Version 0
  // means the tenant's primary version. NOT_FOUND for an unknown tenant or version.
  virtual absl::StatusOr<TenantDek> GetTenantDek(const std::string& tenant_id,
                                                 uint32_t version) = 0;

  // Every DEK version of a tenant, ordered by version. NOT_FOUND for an unknown tenant.
  virtual absl::StatusOr<std::vector<DekRecord>> ListDeks(const std::string& tenant_id) = 0;

  // Adds `new_dek` and makes it primary, if the tenant's row_version is still
  // `expected_row_version` (else ABORTED); bumps the row_version. NOT_FOUND for an
  // unknown tenant; FAILED_PRECONDITION when the tenant is shredded or new_dek.version
  // is not above the current primary; ALREADY_EXISTS when the version exists.
  virtual absl::Status RotateDek(const std::string& tenant_id, int64_t expected_row_version,
                                 const DekRecord& new_dek) = 0;

  // Sets the tenant's state if the row_version is still `expected_row_version` (else
  // ABORTED); bumps the row_version. kShredded also destroys every DEK blob of the
  // tenant (state kDestroyed, `wrapped` emptied) in the same transaction. NOT_FOUND for
  // an unknown tenant; FAILED_PRECONDITION for leaving kShredded (shredding is final).
  virtual absl::Status SetTenantState(const std::string& tenant_id, int64_t expected_row_version,
                                      TenantState state) = 0;

  // Retires the tenant's DEK versions below `min_version` (the minimum decryption
  // version), if the row_version is still `expected_row_version` (else ABORTED): sets
  // min_decrypt_version, bumps the row_version, and moves every active DEK version
  // below it to DekState::kRetired, in one transaction. Retired rows keep their blob
  // (a retirement is a decryption policy, not a shred; the KEK re-wrap still moves
  // them). Setting the current minimum again is allowed and retires nothing new.
  // INVALID_ARGUMENT: min_version 0 (nothing read), or below the current minimum (a
  // retirement is never undone). FAILED_PRECONDITION: min_version above the primary
  // version, or a shredded tenant. NOT_FOUND for an unknown tenant.
  virtual absl::Status SetMinDecryptVersion(const std::string& tenant_id,
                                            int64_t expected_row_version,
                                            uint32_t min_version) = 0;

  // Adds to a DEK version's encryption count (batched by the caller). A usage counter,
  // not a state change: moves neither the epoch (counter flushes would drop every
  // replica's cache) nor the tenant's row_version (a rotation racing a flush would lose
  // its compare-and-set). NOT_FOUND for an unknown tenant or version.
  virtual absl::Status AddEncryptions(const std::string& tenant_id, uint32_t version,
                                      uint64_t count) = 0;
  // AddEncryptions for many DEK versions in ONE transaction (the periodic flush: one
  // commit, one fsync, however many tenants were active). All or nothing: NOT_FOUND
  // when any (tenant, version) is unknown, INVALID_ARGUMENT when any count is out of
  // range, and then no count moves. A version listed twice gets both counts. An empty
  // batch is OK and touches nothing.
  virtual absl::Status AddEncryptionsBatch(std::span<const EncryptionCount> counts) = 0;

  // --- For the KEK re-wrap job (resumable: the cursor is a DekKey)

  // DEK rows still wrapped under `kek_version` (active and retired ones; destroyed rows
  // hold no blob and are never listed), in key order (DekKey) strictly after `after`,
  // at most `limit` (> 0, else INVALID_ARGUMENT). An unknown version lists nothing.
  virtual absl::StatusOr<DekPage> ListDeksWrappedUnder(uint32_t kek_version,
                                                       const DekKey& after, int limit) = 0;

  // Re-wraps DEKs in bulk, one compare-and-set per row: a row is updated only while it
  // is still wrapped under its from_kek_version and not destroyed, so a concurrent
  // tenant rotation (which adds rows, under the new KEK), a shred (which destroys rows)
  // or another replica's re-wrap of the same row is never overwritten, and running the
  // same batch again is harmless. Returns one result per input row, in input order.
  // The whole call is one transaction: on an error nothing of it is applied.
  // INVALID_ARGUMENT (nothing written) for more than kMaxDekRewrapBatch rows, or a row
  // with an empty tenant id, version 0, to_kek_version 0 or equal to from_kek_version,
  // or an empty `wrapped`.
  // Deliberately no epoch bump and no row_version bump: a re-wrap changes no key, so
  // every replica's cache of unwrapped DEKs stays valid (a bump per batch would flush
  // every cache in the cluster again and again during a re-wrap), and a tenant
  // rotation racing it does not lose its compare-and-set. Retiring the old KEK
  // afterwards (KekStore::UpdateKekState) bumps the epoch.
  virtual absl::StatusOr<std::vector<DekRewrapResult>> UpdateDekWrappings(
      std::span<const DekRewrap> rewraps) = 0;

  // --- For the scheduled DEK rotation (by age)

  // Active tenants whose primary DEK was created at or before `now` minus their period
  // (the tenant's own rotation period when set, else `default_period_seconds`), ordered
  // by id (bytewise) strictly after `after`, at most `limit` (> 0). The store does the
  // filtering (one indexed walk of the tenants after `after`), so a caller pages through
  // 100,000 tenants without reading them. INVALID_ARGUMENT for limit <= 0 or a
  // default period <= 0.
  virtual absl::StatusOr<DueTenantPage> ListTenantsDueForRotation(int64_t now,
                                                                  int64_t default_period_seconds,
                                                                  const std::string& after,
                                                                  int limit) = 0;

  // Sets a tenant's own DEK rotation period in seconds (0: back to the default; the
  // Vault-compatible API's auto_rotate_period). A setting, not a key change: moves
  // neither the epoch nor the row_version. NOT_FOUND for an unknown tenant,
  // FAILED_PRECONDITION for a shredded one, INVALID_ARGUMENT for a negative period.
  virtual absl::Status SetTenantRotationPeriod(const std::string& tenant_id,
                                               int64_t period_seconds) = 0;

  // The tenant's own rotation period (0: none set, the default applies). NOT_FOUND for
  // an unknown tenant.
  virtual absl::StatusOr<int64_t> GetTenantRotationPeriod(const std::string& tenant_id) = 0;
};

}  // namespace kms::store
