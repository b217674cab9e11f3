#include "src/store/audit_checks.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace kms::store {

absl::Status CheckAppendAudit(std::span<const AuditRecord> records) {
  constexpr uint64_t kMaxCount = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const AuditRecord& r : records) {
    if (r.node.empty()) return absl::InvalidArgumentError("audit record without a node");
    if (r.seq < 1) return absl::InvalidArgumentError("audit record sequence must be positive");
    if (r.kind != "admin" && r.kind != "data") {
      return absl::InvalidArgumentError("audit record kind must be admin or data");
    }
    if (r.calls < 1 || r.calls > kMaxCount || r.tenants > kMaxCount) {
      return absl::InvalidArgumentError("audit record call or tenant count out of range");
    }
    if (r.prev_hash.size() != 32 || r.hash.size() != 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("audit record ", r.node, "/", r.seq, " hashes must be 32 bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAuditLimit(int limit) {
  if (limit < 1 || limit > kMaxAuditReadLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("audit read limit must be between 1 and ", kMaxAuditReadLimit));
  }
  return absl::OkStatus();
}

}  // namespace kms::store
