// KeyManager: the key hierarchy at work. KEKs under the HSM master key, a DEK per
// tenant under the primary KEK, and field encryption under a tenant's DEK.
//
// It owns the DEK cache and talks to the HSM and the store only through their seams,
// so it is tested with fakes as well as with SoftHSM2 + SQLite.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "kms/hsm/hsm.h"
#include "kms/store/key_store.h"
#include "src/common/sync.h"
#include "src/crypto/field_cipher.h"
#include "src/keys/dek_cache.h"

namespace kms::keys {

struct KeyManagerOptions {
  DekCache::Options cache;
  bool auto_create_tenants = false;
  // Random 96-bit nonces allow at most 2^32 encryptions per key (NIST SP 800-38D); a
  // tenant's DEK is rotated once its count passes this, leaving room for the counts
  // other replicas have not flushed yet.
  uint64_t dek_encryption_budget = uint64_t{1} << 31;
};

struct TenantInfo {
  store::TenantRecord tenant;
  int64_t primary_dek_created_at = 0;
};

struct KekInfo {
  uint32_t version = 0;
  store::KekState state = store::KekState::kActive;
  int64_t created_at = 0;
  std::string mechanism;
};

// Counters, for status and for tests that count backend work.
struct KeyManagerStats {
  uint64_t dek_loads = 0;        // store reads + HSM unwraps on cache misses
  uint64_t dek_load_failures = 0;
  uint64_t encryptions = 0;
  uint64_t decryptions = 0;
  uint64_t decrypt_failures = 0;
};

class KeyManager {
 public:
  // Loads every active KEK into the HSM, creating KEK version 1 on first start.
  // The pointers must outlive the KeyManager.
  static absl::StatusOr<std::unique_ptr<KeyManager>> Create(hsm::Hsm* hsm, store::KeyStore* store,
                                                            const Clock* clock,
                                                            KeyManagerOptions options);

  // --- Tenants (operators)
  // ALREADY_EXISTS when the tenant exists; INVALID_ARGUMENT for a malformed id.
  absl::StatusOr<TenantInfo> CreateTenant(const std::string& tenant_id);
  absl::StatusOr<TenantInfo> GetTenant(const std::string& tenant_id);
  absl::StatusOr<store::TenantPage> ListTenants(const std::string& after, int limit);

  // Makes a new DEK version the tenant's primary (older versions still decrypt).
  // ABORTED when another replica changed the tenant at the same time.
  absl::StatusOr<TenantInfo> RotateTenantDek(const std::string& tenant_id);
  // Crypto-shredding: destroys every DEK of the tenant; its ciphertexts are gone for good.
  absl::Status ShredTenant(const std::string& tenant_id);
  // Creates the next KEK version in the HSM and makes it primary for new DEKs.
  // Existing DEKs stay wrapped under their KEK version, which stays loaded.
  absl::StatusOr<uint32_t> RotateKek();

  // Adds the encryptions made since the last flush to the store's per-DEK counts, and
  // rotates any tenant whose primary DEK has passed its budget. Run periodically.
  // Returns how many tenants were rotated.
  absl::StatusOr<int> FlushEncryptionCounts();

  // Loads `kek_version` into the HSM when this node does not have it yet (a KEK created
  // by another replica since we started). DATA_LOSS when the store has no such active KEK.
  absl::Status EnsureKekLoaded(uint32_t kek_version);

  // --- Coherence between replicas
  // Called after every change this node makes, for the invalidation bus.
  void SetChangeListener(std::function<void(const coord::InvalidationEvent&)> listener);
  // Applies another replica's change (or a full flush after an epoch change).
  void ApplyInvalidation(const coord::InvalidationEvent& event);

  // --- Data plane. `context` is bound as AAD (field_cipher.h).
  // Replaces *ciphertext with the field ciphertext v1 and sets *dek_version.
  // NOT_FOUND for an unknown tenant (unless auto-create is on), FAILED_PRECONDITION
  // for a shredded one, UNAVAILABLE when the DEK is not cached and a backend is down.
  absl::Status Encrypt(const std::string& tenant_id, std::span<const crypto::ContextPair> context,
                       std::span<const uint8_t> plaintext, std::string* ciphertext,
                       uint32_t* dek_version);
  // INVALID_ARGUMENT "decryption failed" for every ciphertext that does not decrypt
  // for this tenant and context: malformed, truncated, tampered, another tenant's,
  // another context's, an unknown DEK version. One uniform answer.
  absl::Status Decrypt(const std::string& tenant_id, std::span<const crypto::ContextPair> context,
                       std::span<const uint8_t> ciphertext, std::string* plaintext,
                       uint32_t* dek_version);

  // --- Status
  absl::StatusOr<std::vector<KekInfo>> ListKeks();
  uint32_t primary_kek_version() const { return primary_kek_.load(); }
  size_t cached_deks() const { return cache_.size(); }
  KeyManagerStats stats() const;
  DekCache& cache() { return cache_; }

 private:
  KeyManager(hsm::Hsm* hsm, store::KeyStore* store, const Clock* clock, KeyManagerOptions options);
  absl::Status LoadKeks();
  absl::StatusOr<std::shared_ptr<const DekEntry>> GetDek(const std::string& tenant_id,
                                                         uint32_t version);
  absl::StatusOr<std::shared_ptr<const DekEntry>> LoadDek(const std::string& tenant_id,
                                                          uint32_t version);
  absl::StatusOr<TenantInfo> CreateTenantLocked(const std::string& tenant_id);

  void Notify(coord::InvalidationEvent::Kind kind, const std::string& tenant_id);
  DekCache::Options CacheOptions(DekCache::Options options);

  std::function<void(const coord::InvalidationEvent&)> listener_;  // set before serving
  hsm::Hsm* const hsm_;
  store::KeyStore* const store_;
  const Clock* const clock_;
  const KeyManagerOptions options_;
  // Entries that left the cache with encryptions not yet flushed to the store.
  Mutex pending_mu_;  // taken inside the cache's shard locks (on_remove), never around them
  std::vector<std::shared_ptr<const DekEntry>> pending_counts_ ABSL_GUARDED_BY(pending_mu_);
  DekCache cache_;
  std::atomic<uint32_t> primary_kek_{0};
  Mutex kek_mu_;  // serializes KEK (re)loading; never held on the data path

  std::atomic<uint64_t> dek_loads_{0};
  std::atomic<uint64_t> dek_load_failures_{0};
  std::atomic<uint64_t> encryptions_{0};
  std::atomic<uint64_t> decryptions_{0};
  std::atomic<uint64_t> decrypt_failures_{0};
};

}  // namespace kms::keys
