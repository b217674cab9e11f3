// What both SQL backends share for the AuditStore seam (include/kms/store/audit_store.h)
// apart from SQL: the column list and the argument checks. INVALID_ARGUMENT with a
// message a caller may read, OK otherwise. Thread-safe.
#pragma once

#include <span>

#include "absl/strings/string_view.h"
#include "kms/common/status.h"
#include "kms/store/audit_store.h"

namespace kms::store {

// Column order of the backends' audit row readers (same logical schema).
inline constexpr absl::string_view kAuditColumns =
    "id, node, seq, at_ms, kind, identity, operation, tenant, tenants, calls, key_versions, "
    "outcome, request_id, prev_hash, hash";
inline constexpr int kMaxAuditReadLimit = 10000;

absl::Status CheckAppendAudit(std::span<const AuditRecord> records);
absl::Status CheckAuditLimit(int limit);

}  // namespace kms::store
