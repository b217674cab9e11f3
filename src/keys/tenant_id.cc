#include "src/keys/tenant_id.h"

namespace kms::keys {

namespace {
bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
}  // namespace

absl::Status ValidateTenantId(std::string_view tenant_id) {
  if (tenant_id.empty()) return absl::InvalidArgumentError("tenant_id is required");
  if (tenant_id.size() > kMaxTenantIdLength) {
    return absl::InvalidArgumentError("tenant_id is longer than 64 characters");
  }
  if (!IsAlnum(tenant_id[0])) {
    return absl::InvalidArgumentError("tenant_id must start with a letter or digit");
  }
  for (char c : tenant_id) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError("tenant_id may contain only letters, digits, '.', '_' and '-'");
    }
  }
  return absl::OkStatus();
}

}  // namespace kms::keys
