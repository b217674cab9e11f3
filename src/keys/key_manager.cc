#include "src/keys/key_manager.h"

#include <algorithm>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "src/common/big_endian.h"
#include "src/crypto/field_cipher.h"
#include "src/keys/tenant_id.h"
#include "src/keys/wrapped_dek.h"

namespace kms::keys {

static_assert(kCiphertextOverhead == crypto::kFieldOverhead);
static_assert(std::is_same_v<ContextPair, crypto::ContextPair>);

namespace {

absl::Status DecryptionFailed() { return absl::InvalidArgumentError("decryption failed"); }

absl::Status TenantNotFound() { return absl::NotFoundError("tenant not found"); }

absl::Status Shredded() {
  return absl::FailedPreconditionError("tenant has been shredded; its keys are destroyed");
}

}  // namespace

absl::Status RetiredDekVersionError(uint32_t version) {
  return absl::FailedPreconditionError(
      absl::StrCat("DEK version ", version,
                   " is retired (below the tenant's minimum decryption version)"));
}

KeyManager::KeyManager(KekRing* kek_ring, store::TenantKeyStore* store, const Clock* clock,
                       KeyManagerOptions options)
    : kek_ring_(kek_ring),
      store_(store),
      clock_(clock),
      options_(options),
      cache_(*clock, CacheOptions(options.cache)) {}

DekCache::Options KeyManager::CacheOptions(DekCache::Options options) {
  options.on_remove = [this](const std::shared_ptr<const DekEntry>& entry) {
    if (entry->encryptions.load(std::memory_order_relaxed) == 0) return;
    MutexLock lock(&pending_mu_);
    pending_counts_.push_back(entry);
  };
  return options;
}

absl::StatusOr<std::unique_ptr<KeyManager>> KeyManager::Create(KekRing* kek_ring,
                                                               store::TenantKeyStore* store,
                                                               const Clock* clock,
                                                               KeyManagerOptions options) {
  if (kek_ring->primary_version() == 0) {
    return absl::FailedPreconditionError("the KEK ring is not loaded");
  }
  return std::unique_ptr<KeyManager>(new KeyManager(kek_ring, store, clock, options));
}

absl::StatusOr<TenantInfo> KeyManager::CreateTenant(const TenantId& tenant) {
  return CreateTenantLocked(tenant.str());
}

absl::StatusOr<TenantInfo> KeyManager::CreateTenantLocked(const std::string& tenant_id) {
  const uint32_t kek = kek_ring_->primary_version();
  KMS_ASSIGN_OR_RETURN(SecretBytes dek, crypto::RandomSecret(kDekSize));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> wrapped, WrapDek(*kek_ring_, kek, tenant_id, 1, dek));
  const int64_t now = clock_->UnixSeconds();
  store::TenantRecord tenant{.id = tenant_id,
                             .state = store::TenantState::kActive,
                             .primary_dek_version = 1,
                             .min_decrypt_version = 1,
                             .created_at = now,
                             .row_version = 1};
  store::DekRecord first{.tenant_id = tenant_id,
                         .version = 1,
                         .kek_version = kek,
                         .wrapped = std::move(wrapped),
                         .state = store::DekState::kActive,
                         .created_at = now,
                         .encryptions = 0};
  KMS_RETURN_IF_ERROR(store_->CreateTenant(tenant, first));
  return TenantInfo{.tenant = tenant, .primary_dek_created_at = now};
}

absl::StatusOr<TenantInfo> KeyManager::GetTenant(const TenantId& tenant) {
  KMS_ASSIGN_OR_RETURN(store::TenantDek td, store_->GetTenantDek(tenant.str(), 0));
  return TenantInfo{.tenant = std::move(td.tenant), .primary_dek_created_at = td.dek.created_at};
}

absl::StatusOr<store::TenantPage> KeyManager::ListTenants(const std::string& after, int limit) {
  return store_->ListTenants(after, limit);
}

absl::StatusOr<std::shared_ptr<const DekEntry>> KeyManager::LoadDek(const std::string& tenant_id,
                                                                    uint32_t version) {
  dek_loads_.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<store::TenantDek> td = store_->GetTenantDek(tenant_id, version);
  if (!td.ok()) return td.status();
  if (td->tenant.state == store::TenantState::kShredded ||
      td->dek.state == store::DekState::kDestroyed) {
    return Shredded();
  }
  if (td->dek.state == store::DekState::kRetired ||
      td->dek.version < td->tenant.min_decrypt_version) {
    return RetiredDekVersionError(td->dek.version);
  }
  KMS_ASSIGN_OR_RETURN(SecretBytes dek,
                       UnwrapDek(*kek_ring_, tenant_id, td->dek.version, td->dek.wrapped));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<crypto::AesGcmKey> key, crypto::AesGcmKey::Create(dek));
  // The version's HMAC key (KeyManager::Hmac states the derivation).
  std::vector<uint8_t> hmac_info;
  AppendBytes(hmac_info, std::string_view("kmsd:hmac:v1"));
  AppendLengthPrefixed(hmac_info, tenant_id);
  AppendU32(hmac_info, td->dek.version);
  KMS_ASSIGN_OR_RETURN(SecretBytes hmac_key, crypto::HkdfSha256(dek.span(), hmac_info, 32));
  auto entry = std::make_shared<DekEntry>();
  entry->hmac_key = std::move(hmac_key);
  entry->tenant_id = tenant_id;
  entry->version = td->dek.version;
  entry->kek_version = td->dek.kek_version;
  entry->key = std::move(key);
  entry->loaded_at = clock_->Now();
  entry->counted = td->dek.encryptions;
  return std::shared_ptr<const DekEntry>(std::move(entry));
}

absl::StatusOr<std::shared_ptr<const DekEntry>> KeyManager::GetDek(const std::string& tenant_id,
                                                                   uint32_t version) {
  auto result = cache_.GetOrLoad(tenant_id, version, [&] { return LoadDek(tenant_id, version); });
  if (!result.ok()) dek_load_failures_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<EncryptResult> KeyManager::Encrypt(const TenantId& tenant,
                                                  const EncryptionContext& context,
                                                  std::span<const uint8_t> plaintext) {
  const std::string& tenant_id = tenant.str();
  absl::StatusOr<std::shared_ptr<const DekEntry>> entry = GetDek(tenant_id, 0);
  if (absl::IsNotFound(entry.status()) && options_.auto_create_tenants) {
    absl::StatusOr<TenantInfo> created = CreateTenantLocked(tenant_id);
    if (!created.ok() && !absl::IsAlreadyExists(created.status())) return created.status();
    entry = GetDek(tenant_id, 0);
  }
  if (absl::IsNotFound(entry.status())) return absl::NotFoundError("tenant not found");
  if (!entry.ok()) return entry.status();
  const DekEntry& dek = **entry;
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> aad,
                       crypto::FieldAad(tenant_id, dek.version, context.pairs()));
  EncryptResult result{.dek_version = dek.version};
  KMS_RETURN_IF_ERROR(crypto::SealField(*dek.key, dek.version, aad, plaintext, &result.ciphertext));
  dek.encryptions.fetch_add(1, std::memory_order_relaxed);
  encryptions_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<std::shared_ptr<const DekEntry>> KeyManager::DekForCiphertext(
    const std::string& tenant_id, uint32_t version) {
  absl::StatusOr<std::shared_ptr<const DekEntry>> entry = GetDek(tenant_id, version);
  if (absl::IsNotFound(entry.status())) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    // Unknown tenant, or a DEK version this tenant never had: tell them apart only by
    // the tenant's existence, which an authorized caller may know anyway.
    absl::StatusOr<store::TenantRecord> tenant = store_->GetTenant(tenant_id);
    if (absl::IsNotFound(tenant.status())) return TenantNotFound();
    return DecryptionFailed();
  }
  if (!entry.ok()) decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
  return entry;
}

absl::StatusOr<DecryptResult> KeyManager::Decrypt(const TenantId& tenant,
                                                  const EncryptionContext& context,
                                                  std::span<const uint8_t> ciphertext) {
  const std::string& tenant_id = tenant.str();
  absl::StatusOr<crypto::FieldView> field = crypto::ParseField(ciphertext);
  if (!field.ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<const DekEntry> entry,
                       DekForCiphertext(tenant_id, field->dek_version));
  const DekEntry& dek = *entry;
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> aad,
                       crypto::FieldAad(tenant_id, dek.version, context.pairs()));
  DecryptResult result{.dek_version = dek.version};
  if (!crypto::OpenField(*dek.key, *field, aad, &result.plaintext).ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  decryptions_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<ReEncryptResult> KeyManager::ReEncrypt(const TenantId& tenant,
                                                      const EncryptionContext& context,
                                                      std::span<const uint8_t> ciphertext,
                                                      const EncryptionContext* new_context) {
  const std::string& tenant_id = tenant.str();
  absl::StatusOr<crypto::FieldView> field = crypto::ParseField(ciphertext);
  if (!field.ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<const DekEntry> source,
                       DekForCiphertext(tenant_id, field->dek_version));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> source_aad,
                       crypto::FieldAad(tenant_id, source->version, context.pairs()));
  // The plaintext lives only here, wiped when this returns.
  SecretBytes plaintext(crypto::FieldPlaintextSize(*field));
  if (!crypto::OpenField(*source->key, *field, source_aad, plaintext.mutable_span()).ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  absl::StatusOr<std::shared_ptr<const DekEntry>> primary = GetDek(tenant_id, 0);
  if (absl::IsNotFound(primary.status())) return TenantNotFound();
  if (!primary.ok()) return primary.status();
  const DekEntry& dek = **primary;
  const EncryptionContext& target = new_context != nullptr ? *new_context : context;
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> aad,
                       crypto::FieldAad(tenant_id, dek.version, target.pairs()));
  ReEncryptResult result{.dek_version = dek.version, .source_dek_version = source->version};
  KMS_RETURN_IF_ERROR(
      crypto::SealField(*dek.key, dek.version, aad, plaintext.span(), &result.ciphertext));
  dek.encryptions.fetch_add(1, std::memory_order_relaxed);  // towards the DEK's budget
  reencryptions_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<TenantInfo> KeyManager::SetMinDecryptVersion(const TenantId& tenant_ref,
                                                            uint32_t min_version) {
  const std::string& tenant_id = tenant_ref.str();
  absl::StatusOr<store::TenantDek> td = store_->GetTenantDek(tenant_id, 0);
  if (absl::IsNotFound(td.status())) return TenantNotFound();
  if (!td.ok()) return td.status();
  store::TenantRecord& tenant = td->tenant;
  if (tenant.state == store::TenantState::kShredded) return Shredded();
  if (min_version == 0 || min_version < tenant.min_decrypt_version) {
    return absl::InvalidArgumentError(
        absl::StrCat("minimum decryption version ", min_version, " is below the current minimum ",
                     tenant.min_decrypt_version, "; a retirement cannot be undone"));
  }
  if (min_version > tenant.primary_dek_version) {
    return absl::FailedPreconditionError(
        absl::StrCat("minimum decryption version ", min_version,
                     " is above the primary DEK version ", tenant.primary_dek_version,
                     "; rotate the tenant's DEK first"));
  }
  KMS_RETURN_IF_ERROR(store_->SetMinDecryptVersion(tenant_id, tenant.row_version, min_version));
  cache_.InvalidateTenant(tenant_id);
  Notify(coord::InvalidationEvent::Kind::kTenant, tenant_id);
  tenant.min_decrypt_version = min_version;
  tenant.row_version += 1;
  return TenantInfo{.tenant = std::move(tenant), .primary_dek_created_at = td->dek.created_at};
}

absl::StatusOr<std::vector<store::DekRecord>> KeyManager::ListDekVersions(const TenantId& tenant) {
  absl::StatusOr<std::vector<store::DekRecord>> deks = store_->ListDeks(tenant.str());
  if (absl::IsNotFound(deks.status())) return TenantNotFound();
  if (!deks.ok()) return deks.status();
  for (store::DekRecord& d : *deks) {
    d.wrapped.clear();
    d.wrapped.shrink_to_fit();
  }
  return deks;
}

absl::StatusOr<TenantInfo> KeyManager::RotateTenantDek(const TenantId& tenant_ref) {
  const std::string& tenant_id = tenant_ref.str();
  KMS_ASSIGN_OR_RETURN(store::TenantRecord tenant, store_->GetTenant(tenant_id));
  if (tenant.state == store::TenantState::kShredded) return Shredded();
  const uint32_t kek = kek_ring_->primary_version();
  const uint32_t version = tenant.primary_dek_version + 1;
  KMS_ASSIGN_OR_RETURN(SecretBytes dek, crypto::RandomSecret(kDekSize));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> wrapped, WrapDek(*kek_ring_, kek, tenant_id, version, dek));
  const int64_t now = clock_->UnixSeconds();
  store::DekRecord next{.tenant_id = tenant_id,
                        .version = version,
                        .kek_version = kek,
                        .wrapped = std::move(wrapped),
                        .state = store::DekState::kActive,
                        .created_at = now,
                        .encryptions = 0};
  KMS_RETURN_IF_ERROR(store_->RotateDek(tenant_id, tenant.row_version, next));
  cache_.InvalidateTenant(tenant_id);
  Notify(coord::InvalidationEvent::Kind::kTenant, tenant_id);
  tenant.primary_dek_version = version;
  tenant.row_version += 1;
  return TenantInfo{.tenant = tenant, .primary_dek_created_at = now};
}

absl::StatusOr<ShredResult> KeyManager::ShredTenant(const TenantId& tenant_ref) {
  const std::string& tenant_id = tenant_ref.str();
  absl::StatusOr<store::TenantRecord> tenant = store_->GetTenant(tenant_id);
  if (absl::IsNotFound(tenant.status())) return TenantNotFound();
  if (!tenant.ok()) return tenant.status();
  // Read after the tenant row: a rotation in between moves the row_version, so the
  // compare-and-set below fails rather than destroy a version this list lacks.
  KMS_ASSIGN_OR_RETURN(std::vector<store::DekRecord> deks, store_->ListDeks(tenant_id));
  ShredResult result;
  result.shredded_at = clock_->UnixSeconds();
  for (const store::DekRecord& d : deks) result.destroyed_dek_versions.push_back(d.version);
  if (tenant->state == store::TenantState::kShredded) {
    result.already_shredded = true;
    return result;
  }
  KMS_RETURN_IF_ERROR(
      store_->SetTenantState(tenant_id, tenant->row_version, store::TenantState::kShredded));
  cache_.InvalidateTenant(tenant_id);
  Notify(coord::InvalidationEvent::Kind::kTenant, tenant_id);
  return result;
}

absl::StatusOr<int> KeyManager::FlushEncryptionCounts() {
  std::vector<std::shared_ptr<const DekEntry>> entries;
  {
    MutexLock lock(&pending_mu_);
    entries.swap(pending_counts_);
  }
  cache_.ForEach([&](const std::shared_ptr<const DekEntry>& e) {
    if (e->encryptions.load(std::memory_order_relaxed) > 0) entries.push_back(e);
  });
  absl::Status first_error;
  std::vector<std::string> over_budget;
  for (const auto& e : entries) {
    const uint64_t delta = e->encryptions.exchange(0);
    if (delta == 0) continue;
    absl::Status added = store_->AddEncryptions(e->tenant_id, e->version, delta);
    if (!added.ok()) {
      e->encryptions.fetch_add(delta);  // try again at the next flush
      {
        MutexLock lock(&pending_mu_);
        pending_counts_.push_back(e);  // in case it has left the cache meanwhile
      }
      if (first_error.ok()) first_error = added;
      continue;
    }
    if (e->counted.fetch_add(delta) + delta >= options_.dek_encryption_budget) {
      over_budget.push_back(e->tenant_id);
    }
  }
  int rotated = 0;
  for (const std::string& tenant : over_budget) {
    // Only the primary version needs rotating; another replica may have done it already.
    absl::StatusOr<store::TenantDek> td = store_->GetTenantDek(tenant, 0);
    if (!td.ok() || td->dek.encryptions < options_.dek_encryption_budget) continue;
    absl::StatusOr<TenantId> id = TenantId::Parse(tenant);  // ids in the cache were valid
    if (!id.ok()) continue;
    absl::StatusOr<TenantInfo> info = RotateTenantDek(*id);
    if (info.ok()) {
      ++rotated;
      spdlog::info("tenant {}: DEK version {} passed its encryption budget; rotated to {}", tenant,
                   td->dek.version, info->tenant.primary_dek_version);
    } else if (!absl::IsAborted(info.status())) {
      spdlog::warn("tenant {}: budget rotation failed: {}", tenant, std::string(info.status().message()));
    }
  }
  if (!first_error.ok()) return first_error;
  return rotated;
}

void KeyManager::SetChangeListener(std::function<void(const coord::InvalidationEvent&)> listener) {
  listener_ = std::move(listener);
}

void KeyManager::Notify(coord::InvalidationEvent::Kind kind, const std::string& tenant_id) {
  if (listener_) listener_(coord::InvalidationEvent{.kind = kind, .tenant_id = tenant_id});
}

void KeyManager::ApplyInvalidation(const coord::InvalidationEvent& event) {
  switch (event.kind) {
    case coord::InvalidationEvent::Kind::kTenant:
      cache_.InvalidateTenant(event.tenant_id);
      break;
    case coord::InvalidationEvent::Kind::kKek:
    case coord::InvalidationEvent::Kind::kAll: {
      if (event.kind == coord::InvalidationEvent::Kind::kAll) cache_.Clear();
      absl::Status loaded = kek_ring_->Refresh();
      if (!loaded.ok()) {
        spdlog::warn("KEK ring refresh after an invalidation failed: {}",
                     std::string(loaded.message()));
      }
      break;
    }
    case coord::InvalidationEvent::Kind::kJwt:
      break;
  }
}

KeyManagerStats KeyManager::stats() const {
  return KeyManagerStats{.dek_loads = dek_loads_.load(),
                         .dek_load_failures = dek_load_failures_.load(),
                         .encryptions = encryptions_.load(),
                         .decryptions = decryptions_.load(),
                         .decrypt_failures = decrypt_failures_.load(),
                         .reencryptions = reencryptions_.load()};
}

absl::StatusOr<uint32_t> KeyManager::PrimaryDekVersion(const TenantId& tenant) {
  absl::StatusOr<std::shared_ptr<const DekEntry>> entry = GetDek(tenant.str(), 0);
  if (absl::IsNotFound(entry.status())) return TenantNotFound();
  if (!entry.ok()) return entry.status();
  return (*entry)->version;
}

absl::StatusOr<HmacResult> KeyManager::Hmac(const TenantId& tenant, uint32_t version,
                                            crypto::HashAlgorithm algorithm,
                                            std::span<const uint8_t> data) {
  const std::string& tenant_id = tenant.str();
  absl::StatusOr<std::shared_ptr<const DekEntry>> entry = GetDek(tenant_id, version);
  if (absl::IsNotFound(entry.status())) {
    if (version == 0 || absl::IsNotFound(store_->GetTenant(tenant_id).status())) {
      return TenantNotFound();
    }
    return absl::InvalidArgumentError("key version not found");
  }
  if (!entry.ok()) return entry.status();
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> mac,
                       crypto::Hmac(algorithm, (*entry)->hmac_key.span(), data));
  return HmacResult{.mac = std::move(mac), .dek_version = (*entry)->version};
}

absl::StatusOr<bool> KeyManager::VerifyHmac(const TenantId& tenant, uint32_t version,
                                            crypto::HashAlgorithm algorithm,
                                            std::span<const uint8_t> data,
                                            std::span<const uint8_t> mac) {
  if (version == 0) return absl::InvalidArgumentError("key version not found");
  KMS_ASSIGN_OR_RETURN(HmacResult expected, Hmac(tenant, version, algorithm, data));
  return crypto::ConstantTimeEquals(expected.mac, mac);
}

}  // namespace kms::keys
