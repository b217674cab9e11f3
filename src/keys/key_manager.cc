#include "src/keys/key_manager.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <optional>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "src/common/big_endian.h"
#include "src/crypto/field_cipher.h"
#include "src/keys/key_ref.h"
#include "src/crypto/raw_aead.h"
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

absl::StatusOr<store::NewTenant> KeyManager::NewTenantRows(const std::string& tenant_id,
                                                           uint32_t kek, int64_t now) {
  KMS_ASSIGN_OR_RETURN(SecretBytes dek, crypto::RandomSecret(kDekSize));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> wrapped, WrapDek(*kek_ring_, kek, tenant_id, 1, dek));
  return store::NewTenant{.tenant = {.id = tenant_id,
                                     .state = store::TenantState::kActive,
                                     .primary_dek_version = 1,
                                     .min_decrypt_version = 1,
                                     .created_at = now,
                                     .row_version = 1},
                          .first_dek = {.tenant_id = tenant_id,
                                        .version = 1,
                                        .kek_version = kek,
                                        .wrapped = std::move(wrapped),
                                        .state = store::DekState::kActive,
                                        .created_at = now,
                                        .encryptions = 0}};
}

absl::StatusOr<TenantInfo> KeyManager::CreateTenantLocked(const std::string& tenant_id) {
  const int64_t now = clock_->UnixSeconds();
  KMS_ASSIGN_OR_RETURN(store::NewTenant rows,
                       NewTenantRows(tenant_id, kek_ring_->primary_version(), now));
  KMS_RETURN_IF_ERROR(store_->CreateTenant(rows.tenant, rows.first_dek));
  return TenantInfo{.tenant = std::move(rows.tenant), .primary_dek_created_at = now};
}

absl::StatusOr<std::vector<store::CreateTenantResult>> KeyManager::CreateTenants(
    std::span<const TenantId> tenants) {
  if (tenants.size() > store::kMaxCreateTenantsBatch) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", store::kMaxCreateTenantsBatch,
                                                   " tenants in one call"));
  }
  const uint32_t kek = kek_ring_->primary_version();
  const int64_t now = clock_->UnixSeconds();
  std::vector<store::NewTenant> rows;
  rows.reserve(tenants.size());
  for (const TenantId& tenant : tenants) {
    KMS_ASSIGN_OR_RETURN(store::NewTenant row, NewTenantRows(tenant.str(), kek, now));
    rows.push_back(std::move(row));
  }
  return store_->CreateTenants(rows);
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
  // The first time-based usage write: spread over the max age by the key's hash.
  const int64_t max_age_ns = std::chrono::nanoseconds(options_.usage_flush_max_age).count();
  const int64_t spread =
      max_age_ns > 0
          ? static_cast<int64_t>(std::hash<std::string>{}(tenant_id) %
                                 static_cast<uint64_t>(max_age_ns))
          : 0;
  entry->usage_due_ns =
      std::chrono::nanoseconds(entry->loaded_at.time_since_epoch()).count() + spread;
  entry->counted = td->dek.encryptions;
  entry->min_version = td->tenant.min_decrypt_version;
  if (IsIndexKeyId(tenant_id)) entry->mac_key = std::make_unique<SecretBytes>(std::move(dek));
  return std::shared_ptr<const DekEntry>(std::move(entry));
}

absl::StatusOr<std::shared_ptr<const DekEntry>> KeyManager::GetDek(const std::string& tenant_id,
                                                                   uint32_t version) {
  auto result = cache_.GetOrLoad(tenant_id, version, [&] { return LoadDek(tenant_id, version); });
  if (!result.ok()) dek_load_failures_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<std::shared_ptr<const DekEntry>> KeyManager::PrimaryDekForEncrypt(
    const std::string& tenant_id) {
  absl::StatusOr<std::shared_ptr<const DekEntry>> entry = GetDek(tenant_id, 0);
  // Auto-creation is for tenants only: named and blind-index keys are made on purpose.
  if (absl::IsNotFound(entry.status()) && options_.auto_create_tenants &&
      !IsReservedStorageId(tenant_id)) {
    absl::StatusOr<TenantInfo> created = CreateTenantLocked(tenant_id);
    if (!created.ok() && !absl::IsAlreadyExists(created.status())) return created.status();
    entry = GetDek(tenant_id, 0);
  }
  if (absl::IsNotFound(entry.status())) return absl::NotFoundError("tenant not found");
  return entry;
}

absl::StatusOr<EncryptResult> KeyManager::Encrypt(const TenantId& tenant,
                                                  const EncryptionContext& context,
                                                  std::span<const uint8_t> plaintext) {
  const std::string& tenant_id = tenant.str();
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<const DekEntry> entry, PrimaryDekForEncrypt(tenant_id));
  const DekEntry& dek = *entry;
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
  KMS_ASSIGN_OR_RETURN(ShredResult result, ShredKeySet(tenant_ref.str()));
  // A key set's blind-index keys go with it (its indexes then link nothing); a repeated
  // shred finishes what a failed one left.
  if (!IsIndexKeyId(tenant_ref.str())) {
    absl::StatusOr<KeyRef> ref = KeyRef::FromStorageId(tenant_ref.str());
    if (ref.ok()) {
      absl::StatusOr<ShredResult> index = ShredKeySet(ref->IndexKeyId().str());
      if (!index.ok() && !absl::IsNotFound(index.status())) return index.status();
    }
  }
  return result;
}

absl::StatusOr<ShredResult> KeyManager::ShredKeySet(const std::string& tenant_id) {
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

absl::StatusOr<int> KeyManager::FlushEncryptionCounts(bool all) {
  const int64_t now_ns = std::chrono::nanoseconds(clock_->Now().time_since_epoch()).count();
  const int64_t max_age_ns = std::chrono::nanoseconds(options_.usage_flush_max_age).count();
  // What this flush writes: cached entries (entry set) and held counts of entries that
  // left the cache (entry null).
  struct Item {
    std::shared_ptr<const DekEntry> entry;
    std::string tenant_id;
    uint32_t version = 0;
    uint64_t delta = 0;
    uint64_t counted = 0;  // held counts: the store's count as the entry last knew it
  };
  std::vector<Item> items;
  {
    MutexLock lock(&pending_mu_);
    // Entries that left the cache: their counts move to held_usage_ (the key goes with
    // the entry) and follow the same policy from there.
    for (const auto& e : pending_counts_) {
      const uint64_t delta = e->encryptions.exchange(0);
      if (delta == 0) continue;
      HeldUsage& h = held_usage_[{e->tenant_id, e->version}];
      const int64_t due = e->usage_due_ns.load(std::memory_order_relaxed);
      h.due_ns = h.count == 0 ? due : std::min(h.due_ns, due);
      h.count += delta;
      h.counted = std::max(h.counted, e->counted.load(std::memory_order_relaxed));
      if (h.counted + h.count >= options_.dek_encryption_budget) h.due_ns = 0;
    }
    pending_counts_.clear();
    // Bounded (~150 B each, against ~740 B per cached DEK): a working set up to four
    // times the cache bound is held, at most kMaxHeldUsage; past that, all are written.
    const size_t max_entries = std::max<size_t>(options_.cache.max_entries, 1);
    const size_t held_bound = max_entries > kMaxHeldUsage / 4 ? kMaxHeldUsage : 4 * max_entries;
    const bool too_many = held_usage_.size() > held_bound;
    for (auto it = held_usage_.begin(); it != held_usage_.end();) {
      const HeldUsage& h = it->second;
      if (all || too_many || h.count >= options_.usage_flush_min_count || now_ns >= h.due_ns) {
        items.push_back({nullptr, it->first.first, it->first.second, h.count, h.counted});
        it = held_usage_.erase(it);
      } else {
        ++it;
      }
    }
  }
  cache_.ForEach([&](const std::shared_ptr<const DekEntry>& e) {
    const uint64_t pending = e->encryptions.load(std::memory_order_relaxed);
    if (pending == 0) return;
    // The usage flush policy (KeyManagerOptions): many, old, or near the budget.
    if (all || pending >= options_.usage_flush_min_count ||
        now_ns >= e->usage_due_ns.load(std::memory_order_relaxed) ||
        e->counted.load(std::memory_order_relaxed) + pending >= options_.dek_encryption_budget) {
      const uint64_t delta = e->encryptions.exchange(0);
      if (delta != 0) items.push_back({e, e->tenant_id, e->version, delta});
    }
  });
  // Every delta in one store call: one transaction, one commit (one fsync) per flush
  // however many DEKs were active, instead of one each.
  std::vector<store::EncryptionCount> counts;
  counts.reserve(items.size());
  for (const Item& item : items) counts.push_back({item.tenant_id, item.version, item.delta});
  absl::Status first_error;
  std::vector<bool> added(items.size(), false);
  absl::Status batch = store_->AddEncryptionsBatch(counts);
  if (batch.ok()) {
    added.assign(items.size(), true);
  } else if (absl::IsNotFound(batch)) {
    // A DEK row the batch names is gone (not expected: rows are never deleted); count
    // the others one by one rather than hold them all back.
    for (size_t i = 0; i < items.size(); ++i) {
      absl::Status one = store_->AddEncryptions(counts[i].tenant_id, counts[i].version, counts[i].count);
      added[i] = one.ok() || absl::IsNotFound(one);
      if (!one.ok() && first_error.ok()) first_error = one;
    }
  } else {
    first_error = batch;
  }
  std::vector<std::string> over_budget;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& item = items[i];
    if (!added[i]) {
      // Try again at the next flush (due at once).
      MutexLock lock(&pending_mu_);
      if (item.entry == nullptr) {
        HeldUsage& h = held_usage_[{item.tenant_id, item.version}];
        h.count += item.delta;
        h.due_ns = 0;
        h.counted = std::max(h.counted, item.counted);
      } else {
        item.entry->encryptions.fetch_add(item.delta);
        item.entry->usage_due_ns.store(0, std::memory_order_relaxed);
        // An entry that left the cache meanwhile may have gone with its count at zero
        // (on_remove skips it then): hold it here. One still cached keeps its count (and
        // its budget check) on the entry; `removed` is set before on_remove runs, so
        // one of the two sees the other (a second listing adds nothing: exchange(0)).
        if (item.entry->removed.load()) pending_counts_.push_back(item.entry);
      }
      continue;
    }
    if (item.entry == nullptr) {
      // Left the cache: its reload reads the store's count; the budget still applies.
      if (item.counted + item.delta >= options_.dek_encryption_budget) {
        over_budget.push_back(item.tenant_id);
      }
      continue;
    }
    const auto& e = item.entry;
    e->usage_due_ns.store(now_ns + max_age_ns, std::memory_order_relaxed);
    if (e->counted.fetch_add(item.delta) + item.delta >= options_.dek_encryption_budget) {
      over_budget.push_back(e->tenant_id);
    }
  }
  int rotated = 0;
  for (const std::string& tenant : over_budget) {
    // Only the primary version needs rotating; another replica may have done it already.
    absl::StatusOr<store::TenantDek> td = store_->GetTenantDek(tenant, 0);
    if (!td.ok() || td->dek.encryptions < options_.dek_encryption_budget) continue;
    absl::StatusOr<TenantId> id = TenantId::ParseStored(tenant);  // ids in the cache were valid
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
      // Not a drop: while the store is down nothing could be reloaded (issue 9). Stale
      // entries are reloaded on their next use and served stale only while it fails.
      if (event.kind == coord::InvalidationEvent::Kind::kAll) cache_.MarkAllStale();
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

absl::StatusOr<DataKey> KeyManager::GenerateDataKey(const TenantId& tenant,
                                                    const EncryptionContext& context,
                                                    bool with_plaintext) {
  KMS_ASSIGN_OR_RETURN(SecretBytes key, crypto::RandomSecret(kDataKeySize));
  KMS_ASSIGN_OR_RETURN(EncryptResult sealed, Encrypt(tenant, context, key.span()));
  DataKey result{.wrapped = std::move(sealed.ciphertext), .dek_version = sealed.dek_version};
  if (with_plaintext) result.plaintext = std::move(key);
  return result;
}

absl::StatusOr<DataKey> KeyManager::DecryptDataKey(const TenantId& tenant,
                                                   const EncryptionContext& context,
                                                   std::span<const uint8_t> wrapped) {
  const std::string& tenant_id = tenant.str();
  absl::StatusOr<crypto::FieldView> field = crypto::ParseField(wrapped);
  if (!field.ok() || crypto::FieldPlaintextSize(*field) != kDataKeySize) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<const DekEntry> entry,
                       DekForCiphertext(tenant_id, field->dek_version));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> aad,
                       crypto::FieldAad(tenant_id, entry->version, context.pairs()));
  DataKey result{.plaintext = SecretBytes(kDataKeySize), .dek_version = entry->version};
  if (!crypto::OpenField(*entry->key, *field, aad, result.plaintext.mutable_span()).ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  result.wrapped.assign(reinterpret_cast<const char*>(wrapped.data()), wrapped.size());
  decryptions_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

namespace {
// Index keys rotate only by an operator's hand: a period no check ever reaches (100
// years), so the scheduled rotation never lists them (rotation.cc also skips them).
constexpr int64_t kIndexKeyRotationPeriod = int64_t{100} * 365 * 86400;

absl::Status IndexKeySetNotFound(const KeyRef& ref) {
  return absl::NotFoundError(ref.is_named_key() ? "named key not found" : "tenant not found");
}
}  // namespace

absl::StatusOr<BlindIndexKeys> KeyManager::GetBlindIndexKeys(const KeyRef& ref) {
  const TenantId index_id = ref.IndexKeyId();
  absl::StatusOr<std::shared_ptr<const DekEntry>> current = GetDek(index_id.str(), 0);
  if (absl::IsNotFound(current.status())) {
    // The first index of this key set: make its index key, if the key set exists.
    absl::StatusOr<store::TenantRecord> owner = store_->GetTenant(ref.storage_id().str());
    if (absl::IsNotFound(owner.status())) return IndexKeySetNotFound(ref);
    if (!owner.ok()) return owner.status();
    if (owner->state == store::TenantState::kShredded) return Shredded();
    absl::StatusOr<TenantInfo> created = CreateTenantLocked(index_id.str());
    if (created.ok()) {
      absl::Status period = store_->SetTenantRotationPeriod(index_id.str(), kIndexKeyRotationPeriod);
      if (!period.ok()) spdlog::warn("blind-index key of {}: {}", ref.Describe(), period.ToString());
      spdlog::info("blind-index key created for {}", ref.Describe());
    } else if (!absl::IsAlreadyExists(created.status())) {
      return created.status();
    }
    current = GetDek(index_id.str(), 0);
  }
  if (!current.ok()) return current.status();
  BlindIndexKeys keys{.current = *current};
  // The re-index window: the version below the primary stays live until finished.
  if ((*current)->min_version != 0 && (*current)->min_version < (*current)->version) {
    KMS_ASSIGN_OR_RETURN(keys.previous, GetDek(index_id.str(), (*current)->min_version));
  }
  return keys;
}

absl::StatusOr<BlindIndexVersions> KeyManager::RotateBlindIndexKey(const KeyRef& ref) {
  KMS_ASSIGN_OR_RETURN(BlindIndexKeys keys, GetBlindIndexKeys(ref));
  const TenantId index_id = ref.IndexKeyId();
  KMS_ASSIGN_OR_RETURN(store::TenantRecord index, store_->GetTenant(index_id.str()));
  if (index.min_decrypt_version < index.primary_dek_version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a re-index window is open (index key versions ", index.min_decrypt_version, " and ",
        index.primary_dek_version, "); finish it before rotating again"));
  }
  KMS_ASSIGN_OR_RETURN(TenantInfo info, RotateTenantDek(index_id));
  return BlindIndexVersions{.current = info.tenant.primary_dek_version,
                            .previous = index.primary_dek_version};
}

absl::StatusOr<BlindIndexVersions> KeyManager::FinishBlindIndexRotation(const KeyRef& ref) {
  const TenantId index_id = ref.IndexKeyId();
  absl::StatusOr<store::TenantRecord> index = store_->GetTenant(index_id.str());
  if (absl::IsNotFound(index.status())) {
    return absl::FailedPreconditionError("no re-index window is open");
  }
  if (!index.ok()) return index.status();
  if (index->min_decrypt_version >= index->primary_dek_version) {
    return absl::FailedPreconditionError("no re-index window is open");
  }
  KMS_ASSIGN_OR_RETURN(TenantInfo info, SetMinDecryptVersion(index_id, index->primary_dek_version));
  return BlindIndexVersions{.current = info.tenant.primary_dek_version, .previous = 0};
}

KeyManagerStats KeyManager::stats() const {
  return KeyManagerStats{.dek_loads = dek_loads_.load(),
                         .dek_load_failures = dek_load_failures_.load(),
                         .encryptions = encryptions_.load(),
                         .decryptions = decryptions_.load(),
                         .decrypt_failures = decrypt_failures_.load(),
                         .reencryptions = reencryptions_.load()};
}

absl::StatusOr<uint32_t> KeyManager::EncryptBatch(const TenantId& tenant,
                                                  std::span<const BatchItem> items,
                                                  std::span<std::string* const> out,
                                                  std::span<absl::Status> status) {
  if (out.size() != items.size() || status.size() != items.size()) {
    return absl::InvalidArgumentError("EncryptBatch: one output and one status per item");
  }
  const std::string& tenant_id = tenant.str();
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<const DekEntry> entry, PrimaryDekForEncrypt(tenant_id));
  const DekEntry& dek = *entry;
  // Every nonce of the batch in one CSPRNG call; wiped after (they are public, but no
  // buffer of them outlives the batch).
  std::vector<uint8_t> nonces(items.size() * crypto::kAesGcmNonceSize);
  KMS_RETURN_IF_ERROR(crypto::NonceBytesBulk(nonces));
  // The AAD of an empty context is the same for every item: built once.
  std::optional<std::vector<uint8_t>> empty_aad;
  uint64_t sealed = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& item = items[i];
    absl::StatusOr<std::vector<uint8_t>> own_aad;
    const std::vector<uint8_t>* aad = nullptr;
    if (item.context == nullptr || item.context->size() == 0) {
      if (!empty_aad.has_value()) {
        KMS_ASSIGN_OR_RETURN(empty_aad, crypto::FieldAad(tenant_id, dek.version, {}));
      }
      aad = &*empty_aad;
    } else {
      own_aad = crypto::FieldAad(tenant_id, dek.version, item.context->pairs());
      if (!own_aad.ok()) {
        status[i] = own_aad.status();
        continue;
      }
      aad = &*own_aad;
    }
    status[i] = crypto::SealFieldWithNonce(
        *dek.key, dek.version, *aad,
        std::span<const uint8_t, crypto::kAesGcmNonceSize>(
            nonces.data() + i * crypto::kAesGcmNonceSize, crypto::kAesGcmNonceSize),
        item.plaintext, out[i]);
    if (status[i].ok()) ++sealed;
  }
  OPENSSL_cleanse(nonces.data(), nonces.size());
  dek.encryptions.fetch_add(sealed, std::memory_order_relaxed);
  encryptions_.fetch_add(sealed, std::memory_order_relaxed);
  return dek.version;
}

absl::StatusOr<RawCiphertext> KeyManager::RawEncrypt(const TenantId& tenant,
                                                     std::span<const uint8_t> aad,
                                                     std::span<const uint8_t> plaintext,
                                                     bool integrity_value) {
  const std::string& tenant_id = tenant.str();
  if (aad.size() > crypto::kMaxRawAadBytes) {
    return absl::InvalidArgumentError("additional authenticated data is too long");
  }
  absl::StatusOr<std::shared_ptr<const DekEntry>> entry = GetDek(tenant_id, 0);
  if (absl::IsNotFound(entry.status())) return TenantNotFound();
  if (!entry.ok()) return entry.status();
  const DekEntry& dek = **entry;
  RawCiphertext out{.metadata = crypto::RawMetadata(dek.version), .dek_version = dek.version};
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> gcm_aad, crypto::RawAad(aad, out.metadata));
  KMS_ASSIGN_OR_RETURN(crypto::RawSealed sealed, crypto::RawSeal(*dek.key, gcm_aad, plaintext));
  dek.encryptions.fetch_add(1, std::memory_order_relaxed);
  encryptions_.fetch_add(1, std::memory_order_relaxed);
  if (integrity_value) {
    // Appendix C: the value first, then a decryption of exactly what is returned.
    const crypto::Sha256Digest cdiv = crypto::RawIntegrityValue(aad, out.metadata, sealed);
    out.integrity_value.assign(cdiv.begin(), cdiv.end());
    SecretBytes check(plaintext.size());
    if (!crypto::RawOpen(*dek.key, gcm_aad, sealed.iv, sealed.ciphertext, sealed.tag,
                         check.mutable_span())
             .ok() ||
        !crypto::ConstantTimeEquals(check.span(), plaintext)) {
      return absl::InternalError("a raw ciphertext did not decrypt right after encryption");
    }
  }
  out.iv = std::move(sealed.iv);
  out.ciphertext = std::move(sealed.ciphertext);
  out.tag = std::move(sealed.tag);
  return out;
}

absl::StatusOr<DecryptResult> KeyManager::RawDecrypt(const TenantId& tenant,
                                                     std::span<const uint8_t> aad,
                                                     const RawCiphertextView& in) {
  const std::string& tenant_id = tenant.str();
  absl::StatusOr<uint32_t> version = crypto::ParseRawMetadata(in.metadata);
  absl::StatusOr<std::vector<uint8_t>> gcm_aad = crypto::RawAad(aad, in.metadata);
  if (!version.ok() || !gcm_aad.ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<const DekEntry> entry, DekForCiphertext(tenant_id, *version));
  DecryptResult result{.dek_version = entry->version};
  result.plaintext.resize(in.ciphertext.size());
  if (!crypto::RawOpen(*entry->key, *gcm_aad, in.iv, in.ciphertext, in.tag,
                       std::span<uint8_t>(reinterpret_cast<uint8_t*>(result.plaintext.data()),
                                          result.plaintext.size()))
           .ok()) {
    decrypt_failures_.fetch_add(1, std::memory_order_relaxed);
    return DecryptionFailed();
  }
  decryptions_.fetch_add(1, std::memory_order_relaxed);
  return result;
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
