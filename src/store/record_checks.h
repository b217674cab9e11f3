// What the SQL KeyStore backends (src/store/sqlite, src/store/postgres) share apart
// from SQL: checking a call's arguments before anything is written (the state names
// and their parsers are in the seam headers, include/kms/store), and the column lists
// both backends read and write in the same order.
//
// Argument checks return INVALID_ARGUMENT with a message that starts with the
// KeyStore operation ("CreateTenant: DEK version 0"), OK otherwise. Thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/strings/string_view.h"
#include "kms/common/status.h"
#include "kms/store/key_store.h"

namespace kms::store {

// Column lists, in the order the backends' row readers expect (same logical schema).
inline constexpr absl::string_view kKekColumns = "version, wrapped, state, created_at";
inline constexpr absl::string_view kTenantColumns =
    "id, state, primary_dek_version, min_decrypt_version, created_at, row_version";
inline constexpr absl::string_view kDekColumns =
    "tenant_id, version, kek_version, wrapped, state, created_at, encryptions";
inline constexpr absl::string_view kJwtKeyColumns =
    "kid, public_jwk, wrapped_private, kek_version, created_at, activate_at, retire_at, "
    "row_version";
inline constexpr absl::string_view kRotationJobColumns =
    "id, kind, state, from_kek_version, to_kek_version, phase, cursor_key, cursor_version, "
    "keys_done, keys_skipped, keys_total, error, created_at, updated_at, finished_at, "
    "row_version";

absl::Status CheckInsertKek(const KekRecord& kek);
absl::Status CheckCreateTenant(const TenantRecord& tenant, const DekRecord& first_dek);
absl::Status CheckListTenants(int limit);
absl::Status CheckRotateDek(std::string_view tenant_id, const DekRecord& new_dek);
absl::Status CheckAddEncryptions(uint64_t count);
absl::Status CheckSetMinDecryptVersion(uint32_t min_version);
// Why SetMinDecryptVersion's compare-and-set matched no row once the row_version and
// state were found right: FAILED_PRECONDITION above the primary, INVALID_ARGUMENT below
// the current minimum, INTERNAL otherwise.
absl::Status MinDecryptVersionRefused(absl::string_view op, std::string_view tenant_id,
                                      uint32_t min_version, int64_t primary, int64_t current_min);
absl::Status CheckInsertFirstJwtKey(const JwtKeyRecord& key);
absl::Status CheckRotateJwtKey(std::string_view current_kid, int64_t current_retire_at,
                               const JwtKeyRecord& next);
absl::Status CheckListDeksWrappedUnder(int limit);
absl::Status CheckUpdateDekWrappings(std::span<const DekRewrap> rewraps);
absl::Status CheckCreateTenants(std::span<const NewTenant> tenants);
absl::Status CheckCreateRotationJob(const RotationJobRecord& job);
absl::Status CheckListRotationJobs(int limit);
absl::Status CheckRotationJobProgress(absl::string_view op, const RotationJobProgress& progress);
absl::Status CheckFinishRotationJob(RotationJobState state, const RotationJobProgress& progress);
absl::Status CheckRetireKek(uint32_t version, int64_t retired_at);
absl::Status CheckListTenantsDue(int64_t default_period_seconds, int limit);
absl::Status CheckTenantRotationPeriod(std::string_view tenant_id, int64_t period_seconds);

// The refusals of RetireKek, worded once for both backends.
absl::Status KekNotFound(absl::string_view op, uint32_t version);
absl::Status KekNotActive(absl::string_view op, uint32_t version, std::string_view state);
absl::Status KekIsNewest(absl::string_view op, uint32_t version);
// OK when both counts are zero; else FAILED_PRECONDITION naming them.
absl::Status KekStillReferenced(absl::string_view op, uint32_t version, uint64_t deks,
                                uint64_t jwt_keys);

}  // namespace kms::store
