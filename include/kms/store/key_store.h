// The key store: where wrapped keys, tenant state and rotation progress persist.
//
// One seam per aggregate, each with its contract in its own header:
//   kek_store.h          KekStore          KEK versions and their usage counts
//   tenant_key_store.h   TenantKeyStore    tenants, their DEKs, the bulk re-wrap
//   jwt_key_store.h      JwtKeyStore       JWT signing keys
//   rotation_job_store.h RotationJobStore  checkpoints of resumable rotation jobs
//   store_health.h       StoreHealth       the store epoch, Ping, backend name
// A consumer depends on the seams it uses. KeyStore is all of them at once: one class
// per backend implements it (src/store/sqlite: embedded default; src/store/postgres:
// cluster), and the wiring (src/server) owns that one object and hands out the seams.
// Both backends pass the one contract suite in tests/integration/store, split the same
// way (<seam>_contract.cc), instantiated per backend in <backend>_contract_test.cc.
//
// Shared by every seam: thread-safe; every change is one transaction, and a
// compare-and-set on the version (row_version or state) it started from, so two
// replicas can never both apply the same change: the loser gets ABORTED, and changes
// nothing. Every key-state change increases the store epoch in the same transaction,
// so replicas that poll it see every change (StoreHealth says what does not move it).
// Codes: NOT_FOUND (unknown key), ALREADY_EXISTS (an insert of an existing key),
// ABORTED (compare-and-set lost: someone else changed the row first),
// FAILED_PRECONDITION (a change the row's state forbids, e.g. of a shredded tenant),
// INVALID_ARGUMENT (arguments refused before anything is written), UNAVAILABLE
// (backend unreachable, locked or out of resources: retry later), INTERNAL (anything
// else). Messages never hold blob contents. Messages of the codes callers may read
// (NOT_FOUND, ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION) name the keys and not the
// store function ("tenant acme not found"): doors pass them through as they are. Backend
// failures (UNAVAILABLE, INTERNAL) also name the operation, for the log only.
#pragma once

#include "kms/store/jwt_key_store.h"
#include "kms/store/kek_store.h"
#include "kms/store/rotation_job_store.h"
#include "kms/store/store_health.h"
#include "kms/store/tenant_key_store.h"

namespace kms::store {

class KeyStore : public KekStore,
                 public TenantKeyStore,
                 public JwtKeyStore,
                 public RotationJobStore,
                 public StoreHealth {
 public:
  ~KeyStore() override = default;
};

}  // namespace kms::store
