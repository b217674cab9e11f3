// What the SQL KeyStore backends (src/store/sqlite, src/store/postgres) share apart
// from SQL: reading the state names they store, and checking a call's arguments
// before anything is written.
//
// Argument checks return INVALID_ARGUMENT with a message that starts with the
// KeyStore operation ("CreateTenant: DEK version 0"), OK otherwise. State parsers
// return INTERNAL for a name that KekStateName() & co. never write. Thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

#include "kms/common/status.h"
#include "kms/store/key_store.h"

namespace kms::store {

absl::StatusOr<KekState> ParseKekState(std::string_view name);
absl::StatusOr<TenantState> ParseTenantState(std::string_view name);
absl::StatusOr<DekState> ParseDekState(std::string_view name);

absl::Status CheckInsertKek(const KekRecord& kek);
absl::Status CheckCreateTenant(const TenantRecord& tenant, const DekRecord& first_dek);
absl::Status CheckListTenants(int limit);
absl::Status CheckRotateDek(std::string_view tenant_id, const DekRecord& new_dek);
absl::Status CheckAddEncryptions(uint64_t count);
absl::Status CheckInsertFirstJwtKey(const JwtKeyRecord& key);
absl::Status CheckRotateJwtKey(std::string_view current_kid, int64_t current_retire_at,
                               const JwtKeyRecord& next);

}  // namespace kms::store
