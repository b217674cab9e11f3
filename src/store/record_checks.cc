#include "src/store/record_checks.h"

#include <limits>
#include <string>
#include <string_view>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "src/common/strings.h"

namespace kms::store {
namespace {

// Counters are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
bool FitsInt64(uint64_t n) { return n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()); }

// Both backends bind a value with an int length (SQLite, libpq).
constexpr size_t kMaxValueBytes = static_cast<size_t>(std::numeric_limits<int>::max());

}  // namespace

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

absl::Status CheckSetMinDecryptVersion(uint32_t min_version) {
  if (min_version == 0) {
    return absl::InvalidArgumentError("SetMinDecryptVersion: minimum version 0");
  }
  return absl::OkStatus();
}

absl::Status MinDecryptVersionRefused(absl::string_view op, std::string_view tenant_id,
                                      uint32_t min_version, int64_t primary, int64_t current_min) {
  if (min_version > primary) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": minimum version ", min_version, " is above the primary DEK version ",
                     primary, " of tenant ", Av(tenant_id)));
  }
  if (min_version < current_min) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": minimum version ", min_version, " is below the current minimum ",
                     current_min, " of tenant ", Av(tenant_id), " (a retirement is never undone)"));
  }
  return absl::InternalError(absl::StrCat(op, ": update matched no row"));
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

absl::Status CheckListDeksWrappedUnder(int limit) {
  if (limit <= 0) return absl::InvalidArgumentError("ListDeksWrappedUnder: limit must be positive");
  return absl::OkStatus();
}

absl::Status CheckUpdateDekWrappings(std::span<const DekRewrap> rewraps) {
  if (rewraps.size() > kMaxDekRewrapBatch) {
    return absl::InvalidArgumentError("UpdateDekWrappings: more than " +
                                      std::to_string(kMaxDekRewrapBatch) + " rows in one call");
  }
  for (const DekRewrap& r : rewraps) {
    if (r.tenant_id.empty() || r.version == 0 || r.to_kek_version == 0 || r.wrapped.empty()) {
      return absl::InvalidArgumentError(
          "UpdateDekWrappings: tenant id, version, to_kek_version and wrapped are required");
    }
    if (r.from_kek_version == r.to_kek_version) {
      return absl::InvalidArgumentError(
          "UpdateDekWrappings: from_kek_version equals to_kek_version");
    }
    if (r.wrapped.size() > kMaxValueBytes || r.tenant_id.size() > kMaxValueBytes) {
      return absl::InvalidArgumentError("UpdateDekWrappings: a value is larger than 2 GiB");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCreateTenants(std::span<const NewTenant> tenants) {
  if (tenants.size() > kMaxCreateTenantsBatch) {
    return absl::InvalidArgumentError(absl::StrCat("CreateTenants: more than ",
                                                   kMaxCreateTenantsBatch, " tenants in one call"));
  }
  std::unordered_set<std::string_view> ids;
  ids.reserve(tenants.size());
  for (const NewTenant& t : tenants) {
    absl::Status st = CheckCreateTenant(t.tenant, t.first_dek);
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("CreateTenants: ", st.message()));
    if (t.first_dek.wrapped.size() > kMaxValueBytes || t.tenant.id.size() > kMaxValueBytes) {
      return absl::InvalidArgumentError("CreateTenants: a value is larger than 2 GiB");
    }
    if (!ids.insert(t.tenant.id).second) {
      return absl::InvalidArgumentError("CreateTenants: a tenant id is listed twice");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCreateRotationJob(const RotationJobRecord& job) {
  if (job.from_kek_version == 0 || job.to_kek_version == 0) {
    return absl::InvalidArgumentError("CreateRotationJob: KEK version 0");
  }
  if (job.from_kek_version == job.to_kek_version) {
    return absl::InvalidArgumentError(
        "CreateRotationJob: from_kek_version equals to_kek_version");
  }
  if (job.created_at < 0) return absl::InvalidArgumentError("CreateRotationJob: created_at < 0");
  return CheckRotationJobProgress("CreateRotationJob", job.progress);
}

absl::Status CheckListRotationJobs(int limit) {
  if (limit <= 0) return absl::InvalidArgumentError("ListRotationJobs: limit must be positive");
  return absl::OkStatus();
}

absl::Status CheckRotationJobProgress(absl::string_view op, const RotationJobProgress& progress) {
  if (!FitsInt64(progress.done) || !FitsInt64(progress.skipped) || !FitsInt64(progress.total)) {
    return absl::InvalidArgumentError(std::string(op) + ": progress count out of range");
  }
  return absl::OkStatus();
}

absl::Status CheckFinishRotationJob(RotationJobState state, const RotationJobProgress& progress) {
  if (state == RotationJobState::kRunning) {
    return absl::InvalidArgumentError("FinishRotationJob: the final state must be done or failed");
  }
  return CheckRotationJobProgress("FinishRotationJob", progress);
}

absl::Status CheckRetireKek(uint32_t version, int64_t retired_at) {
  if (version == 0) return absl::InvalidArgumentError("RetireKek: KEK version 0");
  if (retired_at < 0) return absl::InvalidArgumentError("RetireKek: negative retired_at");
  return absl::OkStatus();
}

absl::Status CheckListTenantsDue(int64_t default_period_seconds, int limit) {
  if (limit <= 0) return absl::InvalidArgumentError("ListTenantsDueForRotation: limit must be > 0");
  if (default_period_seconds <= 0) {
    return absl::InvalidArgumentError("ListTenantsDueForRotation: default period must be > 0");
  }
  return absl::OkStatus();
}

absl::Status CheckTenantRotationPeriod(std::string_view tenant_id, int64_t period_seconds) {
  if (tenant_id.empty()) return absl::InvalidArgumentError("SetTenantRotationPeriod: empty tenant id");
  if (period_seconds < 0) {
    return absl::InvalidArgumentError("SetTenantRotationPeriod: negative period");
  }
  return absl::OkStatus();
}

absl::Status KekNotFound(absl::string_view op, uint32_t version) {
  return absl::NotFoundError(absl::StrCat(op, ": KEK version ", version, " not found"));
}

absl::Status KekNotActive(absl::string_view op, uint32_t version, std::string_view state) {
  return absl::AbortedError(absl::StrCat(op, ": KEK version ", version, " is ",
                                         absl::string_view(state.data(), state.size()),
                                         ", not active"));
}

absl::Status KekIsNewest(absl::string_view op, uint32_t version) {
  return absl::FailedPreconditionError(
      absl::StrCat(op, ": KEK version ", version, " is the newest (primary) version"));
}

absl::Status KekStillReferenced(absl::string_view op, uint32_t version, uint64_t deks,
                                uint64_t jwt_keys) {
  if (deks == 0 && jwt_keys == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(op, ": KEK version ", version, " still wraps ",
                                                    deks, " DEKs and ", jwt_keys, " JWT keys"));
}

}  // namespace kms::store
