// Tenant ids: what a caller may name a tenant, as a value type validated once at the
// edge (a door) and carried down as is.
//
// A TenantId is also the id of any key set kmsd keeps as a tenant row in the store
// (one DEK version sequence, wrapped under the KEK ring). Besides callers' tenants
// there are two reserved namespaces, which a caller's tenant id can never enter
// (tenant ids have no ':'), minted only by KeyRef (key_ref.h):
//   "key:NAME"  a named platform key ("key:backup"), created by operators;
//   "bidx:REF"  the blind-index key set of a tenant or named key ("bidx:acme",
//               "bidx:key:backup"), versioned apart from REF's DEKs.
#pragma once

#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::keys {

inline constexpr size_t kMaxTenantIdLength = 64;

// A tenant id is 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit.
// INVALID_ARGUMENT otherwise (the message does not echo the id: it may be anything).
absl::Status ValidateTenantId(std::string_view tenant_id);

class KeyRef;

// A tenant id that passed ValidateTenantId, or a reserved id minted by KeyRef: a
// TenantId cannot hold anything else.
class TenantId {
 public:
  // A caller's tenant id. INVALID_ARGUMENT as ValidateTenantId (reserved ids included).
  static absl::StatusOr<TenantId> Parse(std::string_view id) {
    KMS_RETURN_IF_ERROR(ValidateTenantId(id));
    return TenantId(std::string(id));
  }
  // An id read back from the store: a tenant id or a reserved id ("key:NAME",
  // "bidx:..."). INVALID_ARGUMENT for anything else.
  static absl::StatusOr<TenantId> ParseStored(std::string_view id);

  const std::string& str() const { return id_; }
  bool operator==(const TenantId& other) const { return id_ == other.id_; }

 private:
  friend class KeyRef;
  explicit TenantId(std::string id) : id_(std::move(id)) {}
  std::string id_;
};

}  // namespace kms::keys
