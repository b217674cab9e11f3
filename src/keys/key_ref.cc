#include "src/keys/key_ref.h"

#include "absl/strings/str_cat.h"

namespace kms::keys {

absl::Status ValidateKeyName(std::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("key_name is required");
  if (name.size() > kMaxKeyNameLength) {
    return absl::InvalidArgumentError("key_name is longer than 60 characters");
  }
  // The same alphabet as tenant ids; the length is what differs.
  absl::Status valid = ValidateTenantId(name);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        "key_name must be letters, digits, '.', '_' and '-', starting with a letter or digit");
  }
  return absl::OkStatus();
}

absl::StatusOr<KeyRef> KeyRef::ForTenant(std::string_view tenant_id) {
  KMS_ASSIGN_OR_RETURN(TenantId id, TenantId::Parse(tenant_id));
  return KeyRef(Kind::kTenant, std::string(tenant_id), std::move(id));
}

absl::StatusOr<KeyRef> KeyRef::ForNamedKey(std::string_view name) {
  KMS_RETURN_IF_ERROR(ValidateKeyName(name));
  return KeyRef(Kind::kNamedKey, std::string(name),
                TenantId(std::string(kNamedKeyPrefix) + std::string(name)));
}

absl::StatusOr<KeyRef> KeyRef::FromRequest(std::string_view tenant_id, std::string_view key_name) {
  if (!tenant_id.empty() && !key_name.empty()) {
    return absl::InvalidArgumentError("set tenant_id or key_name, not both");
  }
  if (!key_name.empty()) return ForNamedKey(key_name);
  if (tenant_id.empty()) return absl::InvalidArgumentError("tenant_id or key_name is required");
  return ForTenant(tenant_id);
}

absl::StatusOr<KeyRef> KeyRef::FromStorageId(std::string_view id) {
  if (id.starts_with(kNamedKeyPrefix)) return ForNamedKey(id.substr(kNamedKeyPrefix.size()));
  return ForTenant(id);
}

std::string KeyRef::Describe() const {
  return (is_named_key() ? "named key " : "tenant ") + name_;
}

TenantId KeyRef::IndexKeyId() const {
  return TenantId(std::string(kIndexKeyPrefix) + storage_id_.str());
}

bool IsReservedStorageId(std::string_view id) { return id.find(':') != std::string_view::npos; }

bool IsIndexKeyId(std::string_view id) { return id.starts_with(kIndexKeyPrefix); }

absl::StatusOr<TenantId> TenantId::ParseStored(std::string_view id) {
  std::string_view ref = id;
  if (ref.starts_with(kIndexKeyPrefix)) ref.remove_prefix(kIndexKeyPrefix.size());
  KMS_RETURN_IF_ERROR(KeyRef::FromStorageId(ref).status());
  return TenantId(std::string(id));
}

}  // namespace kms::keys
