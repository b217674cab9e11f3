// Tenant ids: what a caller may name a tenant, as a value type validated once at the
// edge (a door) and carried down as is.
#pragma once

#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::keys {

inline constexpr size_t kMaxTenantIdLength = 64;

// A tenant id is 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit.
// INVALID_ARGUMENT otherwise (the message does not echo the id: it may be anything).
absl::Status ValidateTenantId(std::string_view tenant_id);

// A tenant id that passed ValidateTenantId: a TenantId cannot hold anything else.
class TenantId {
 public:
  // INVALID_ARGUMENT as ValidateTenantId.
  static absl::StatusOr<TenantId> Parse(std::string_view id) {
    KMS_RETURN_IF_ERROR(ValidateTenantId(id));
    return TenantId(std::string(id));
  }

  const std::string& str() const { return id_; }
  bool operator==(const TenantId& other) const { return id_ == other.id_; }

 private:
  explicit TenantId(std::string id) : id_(std::move(id)) {}
  std::string id_;
};

}  // namespace kms::keys
