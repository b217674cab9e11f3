#include "src/store/record_checks.h"

#include <limits>

namespace kms::store {
namespace {

// Counters are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
bool FitsInt64(uint64_t n) { return n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()); }

}  // namespace

absl::StatusOr<KekState> ParseKekState(std::string_view name) {
  if (name == "active") return KekState::kActive;
  if (name == "retired") return KekState::kRetired;
  return absl::InternalError("store: unknown KEK state in database");
}

absl::StatusOr<TenantState> ParseTenantState(std::string_view name) {
  if (name == "active") return TenantState::kActive;
  if (name == "shredded") return TenantState::kShredded;
  return absl::InternalError("store: unknown tenant state in database");
}

absl::StatusOr<DekState> ParseDekState(std::string_view name) {
  if (name == "active") return DekState::kActive;
  if (name == "retired") return DekState::kRetired;
  if (name == "destroyed") return DekState::kDestroyed;
  return absl::InternalError("store: unknown DEK state in database");
}

absl::Status CheckInsertKek(const KekRecord& kek) {
  if (kek.version == 0) return absl::InvalidArgumentError("InsertKek: version 0");
  return absl::OkStatus();
}

absl::Status CheckCreateTenant(const TenantRecord& tenant, const DekRecord& first_dek) {
  if (tenant.id.empty()) return absl::InvalidArgumentError("CreateTenant: empty tenant id");
  if (!first_dek.tenant_id.empty() && first_dek.tenant_id != tenant.id) {
    return absl::InvalidArgumentError("CreateTenant: first DEK belongs to another tenant");
  }
  if (first_dek.version == 0) return absl::InvalidArgumentError("CreateTenant: DEK version 0");
  if (tenant.primary_dek_version != 0 && tenant.primary_dek_version != first_dek.version) {
    return absl::InvalidArgumentError(
        "CreateTenant: primary_dek_version differs from the first DEK's version");
  }
  if (!FitsInt64(first_dek.encryptions)) {
    return absl::InvalidArgumentError("CreateTenant: encryption count out of range");
  }
  return absl::OkStatus();
}

absl::Status CheckListTenants(int limit) {
  if (limit <= 0) return absl::InvalidArgumentError("ListTenants: limit must be positive");
  return absl::OkStatus();
}

absl::Status CheckRotateDek(std::string_view tenant_id, const DekRecord& new_dek) {
  if (new_dek.version == 0) return absl::InvalidArgumentError("RotateDek: DEK version 0");
  if (!new_dek.tenant_id.empty() && new_dek.tenant_id != tenant_id) {
    return absl::InvalidArgumentError("RotateDek: DEK belongs to another tenant");
  }
  if (!FitsInt64(new_dek.encryptions)) {
    return absl::InvalidArgumentError("RotateDek: encryption count out of range");
  }
  return absl::OkStatus();
}

absl::Status CheckAddEncryptions(uint64_t count) {
  if (!FitsInt64(count)) return absl::InvalidArgumentError("AddEncryptions: count out of range");
  return absl::OkStatus();
}

absl::Status CheckInsertFirstJwtKey(const JwtKeyRecord& key) {
  if (key.kid.empty()) return absl::InvalidArgumentError("InsertFirstJwtKey: empty kid");
  if (key.retire_at < 0) return absl::InvalidArgumentError("InsertFirstJwtKey: retire_at < 0");
  return absl::OkStatus();
}

absl::Status CheckRotateJwtKey(std::string_view current_kid, int64_t current_retire_at,
                               const JwtKeyRecord& next) {
  if (current_kid.empty() || next.kid.empty()) {
    return absl::InvalidArgumentError("RotateJwtKey: empty kid");
  }
  if (current_retire_at < 0 || next.retire_at < 0) {
    return absl::InvalidArgumentError("RotateJwtKey: retire_at < 0");
  }
  return absl::OkStatus();
}

}  // namespace kms::store
