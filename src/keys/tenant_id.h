// Tenant ids: what a caller may name a tenant.
#pragma once

#include <string_view>

#include "kms/common/status.h"

namespace kms::keys {

inline constexpr size_t kMaxTenantIdLength = 64;

// A tenant id is 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit.
// INVALID_ARGUMENT otherwise (the message does not echo the id: it may be anything).
absl::Status ValidateTenantId(std::string_view tenant_id);

}  // namespace kms::keys
