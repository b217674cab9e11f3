// The KekStore seam: the KEK versions, stored as blobs wrapped under the HSM master key
// (DESIGN §2), and which keys still reference each version.
//
// Implemented by the one class per backend that implements every store seam
// (kms/store/key_store.h): src/store/sqlite, src/store/postgres. Checked by the contract
// suite in tests/integration/store (kek_store_contract.cc).
//
// Thread-safe. Every change is one transaction that also increases the store epoch
// (StoreHealth::GetEpoch); a rejected change changes nothing, the epoch included.
// Errors common to every method: UNAVAILABLE (backend unreachable, locked or out of
// resources: retry later), INVALID_ARGUMENT (arguments refused before anything is
// written), INTERNAL (anything else: a bug or a damaged database). Further codes are
// listed per method.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "kms/common/status.h"

namespace kms::store {

enum class KekState { kActive, kRetired };

// The names stored in the database: "active", "retired".
inline std::string_view KekStateName(KekState s) {
  switch (s) {
    case KekState::kActive: return "active";
    case KekState::kRetired: return "retired";
  }
  return "unknown";
}

// The inverse of KekStateName. INTERNAL for any other name (a database written by
// something else).
inline absl::StatusOr<KekState> ParseKekState(std::string_view name) {
  if (name == "active") return KekState::kActive;
  if (name == "retired") return KekState::kRetired;
  return absl::InternalError("store: unknown KEK state in database");
}

struct KekRecord {
  uint32_t version = 0;          // > 0
  std::vector<uint8_t> wrapped;  // HSM blob: wrapped under the master key
  KekState state = KekState::kActive;
  int64_t created_at = 0;  // Unix seconds
};

// How many stored keys are wrapped under one KEK version.
struct KekUsage {
  uint32_t kek_version = 0;
  // DEK versions whose blob is wrapped under it: active and retired ones; destroyed
  // DEKs (shredded tenants) hold no blob and are not counted.
  uint64_t deks = 0;
  // JWT signing keys whose private key is sealed under it: every row, retired keys
  // included (their rows still hold the sealed key).
  uint64_t jwt_keys = 0;
};

class KekStore {
 public:
  virtual ~KekStore() = default;

  // Every KEK version, ordered by version.
  virtual absl::StatusOr<std::vector<KekRecord>> ListKeks() = 0;

  // ALREADY_EXISTS when the version exists (another replica created it first); the
  // stored record is then left as it was.
  virtual absl::Status InsertKek(const KekRecord& kek) = 0;

  // Compare-and-set on the state: moves `version` from `from` to `to`. ABORTED when the
  // version exists in another state than `from` (someone else changed it first),
  // NOT_FOUND when it does not exist. Does not look at references: a caller retiring a
  // version checks ListKekUsage first.
  virtual absl::Status UpdateKekState(uint32_t version, KekState from, KekState to) = 0;

  // One entry per KEK version that is stored or still referenced by a DEK or JWT key
  // (a referenced version that is not stored would be a damaged database, and is
  // listed so that it shows), ordered by version, with zero counts where nothing
  // references it. One consistent snapshot; what another replica changes afterwards is
  // not in it (a re-wrap job re-checks before it retires a version).
  virtual absl::StatusOr<std::vector<KekUsage>> ListKekUsage() = 0;

  // ListKekUsage without `kek_version`'s entry (pass the primary): the same entries and
  // counts for every other version. It reads only the keys wrapped under the other
  // versions (an index range), so it costs what it counts, nothing once a re-wrap has
  // moved every key to `kek_version`, however many keys the store holds (ListKekUsage
  // counts every DEK: a scan). For the periodic checks: the re-wrap backlog, a job to
  // resume.
  virtual absl::StatusOr<std::vector<KekUsage>> ListKekUsageExcept(uint32_t kek_version) = 0;

  // --- Retirement (DESIGN §6): after the re-wrap job has moved every key off a version

  // Moves `version` from active to retired, stamped `retired_at` (Unix seconds), in one
  // transaction with the count of what still references it: the count and the change
  // see the same data (SQLite: the write lock; PostgreSQL: the key tables are locked in
  // SHARE mode for the transaction, so no DEK or JWT key can be written under it
  // between the count and the change). FAILED_PRECONDITION naming the counts ("still
  // wraps D DEKs and J JWT keys") while anything references it, and for the newest
  // version (the primary is never retired); ABORTED when it is not active (retired
  // already); NOT_FOUND when it does not exist; INVALID_ARGUMENT for version 0 or a
  // negative retired_at. Moves the epoch (replicas then unload the version).
  virtual absl::Status RetireKek(uint32_t version, int64_t retired_at) = 0;

  // Destroys the stored blob of every retired version retired before `retired_before`
  // (Unix seconds) that nothing references, by deleting its row: once gone, nothing can
  // ever unwrap that KEK again. Returns the versions destroyed, ascending (empty when
  // none; the epoch moves only when a row was deleted). Versions are never reused: the
  // newest version is never retired, and new versions count up from it.
  virtual absl::StatusOr<std::vector<uint32_t>> DestroyRetiredKeks(int64_t retired_before) = 0;
};

}  // namespace kms::store
