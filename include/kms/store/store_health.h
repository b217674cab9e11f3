// The StoreHealth seam: the store-wide epoch and liveness of the key store.
//
// Implemented by the one class per backend that implements every store seam
// (kms/store/key_store.h): src/store/sqlite, src/store/postgres. Checked by the contract
// suite in tests/integration/store (store_health_contract.cc).
//
// The epoch is how replicas notice each other's key changes without talking: every
// change of key state (KEKs, tenants and their DEKs, JWT keys) increases it in the same
// transaction as the change, so a replica that sees the epoch move drops what it cached.
// What does NOT move it, on purpose: usage counters (TenantKeyStore::AddEncryptions),
// bulk re-wraps (TenantKeyStore::UpdateDekWrappings: the keys do not change) and
// rotation-job checkpoints (RotationJobStore). Reads never move it.
//
// Thread-safe. Errors: UNAVAILABLE (backend unreachable, locked or out of resources:
// retry later), INTERNAL (anything else: a bug or a damaged database).
#pragma once

#include <cstdint>
#include <string_view>

#include "kms/common/status.h"

namespace kms::store {

class StoreHealth {
 public:
  virtual ~StoreHealth() = default;

  // "sqlite" or "postgres": for status pages and logs.
  virtual std::string_view backend_name() const = 0;

  // The store-wide epoch (>= 0). Increases with every key-state change (above); equal
  // values read at two times mean no such change happened in between.
  virtual absl::StatusOr<int64_t> GetEpoch() = 0;

  // OK when the backend answers a read of one of our tables (not just a cached
  // connection).
  virtual absl::Status Ping() = 0;
};

}  // namespace kms::store
