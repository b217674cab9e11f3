// KeyRef: which key set a request means, a tenant's or a named platform key's.
//
// Callers name a tenant ("acme"; its DEKs encrypt its PII) or a named key ("backup",
// "clickhouse-disk": platform keys that operators create and rotate like a tenant, for
// data keys). Both are stored as tenant rows; a named key's row id is "key:NAME", in a
// namespace no tenant id can enter (tenant ids have no ':'), so the two never collide
// and everything built for tenants (DEK versions, rotation by age, the KEK re-wrap
// job, retirement, crypto-shredding, receipts) applies to named keys unchanged.
//
// The policy names a named key by its row id: "key:backup" exactly, or "key:*" for
// every named key ("*" grants every tenant and every named key; a prefix pattern such
// as "k*" never reaches into the "key:" namespace, see src/authz/policy.h).
//
// Every key set has a blind-index key set of its own, "bidx:" + its row id
// (IndexKeyId), never addressed by callers directly.
#pragma once

#include <string>
#include <string_view>

#include "kms/common/status.h"
#include "src/keys/tenant_id.h"

namespace kms::keys {

inline constexpr std::string_view kNamedKeyPrefix = "key:";
inline constexpr std::string_view kIndexKeyPrefix = "bidx:";
// "key:" + 60 characters fits the 64 a store row id has for tenants.
inline constexpr size_t kMaxKeyNameLength = 60;

// A key name is 1-60 characters of [A-Za-z0-9._-], starting with a letter or digit.
// INVALID_ARGUMENT otherwise (the message does not echo the name).
absl::Status ValidateKeyName(std::string_view name);

// Immutable value type.
class KeyRef {
 public:
  enum class Kind { kTenant, kNamedKey };

  // INVALID_ARGUMENT as ValidateTenantId.
  static absl::StatusOr<KeyRef> ForTenant(std::string_view tenant_id);
  // INVALID_ARGUMENT as ValidateKeyName.
  static absl::StatusOr<KeyRef> ForNamedKey(std::string_view name);
  // The wire's pair of fields (tenant_id, key_name): exactly one must be set.
  // INVALID_ARGUMENT when both or neither are, or the one set is invalid.
  static absl::StatusOr<KeyRef> FromRequest(std::string_view tenant_id, std::string_view key_name);
  // A store row id: a tenant id or "key:NAME". INVALID_ARGUMENT for anything else (a
  // blind-index key set's id included: those are never a KeyRef).
  static absl::StatusOr<KeyRef> FromStorageId(std::string_view id);

  Kind kind() const { return kind_; }
  bool is_named_key() const { return kind_ == Kind::kNamedKey; }
  // The tenant id or the key name, as the caller spelled it.
  const std::string& name() const { return name_; }
  // The row the key set is stored as ("acme", "key:backup"); also the policy resource.
  const TenantId& storage_id() const { return storage_id_; }
  // "tenant acme" / "named key backup", for logs.
  std::string Describe() const;
  // The row of this key set's blind-index keys: "bidx:" + storage id.
  TenantId IndexKeyId() const;

  bool operator==(const KeyRef& other) const { return storage_id_ == other.storage_id_; }

 private:
  KeyRef(Kind kind, std::string name, TenantId storage_id)
      : kind_(kind), name_(std::move(name)), storage_id_(std::move(storage_id)) {}
  Kind kind_;
  std::string name_;
  TenantId storage_id_;
};

// True for a row id in a reserved namespace (a named key or a blind-index key set):
// not a tenant, so tenant listings leave it out.
bool IsReservedStorageId(std::string_view id);
// True for a blind-index key set's row id ("bidx:..."): never rotated by age.
bool IsIndexKeyId(std::string_view id);

}  // namespace kms::keys
