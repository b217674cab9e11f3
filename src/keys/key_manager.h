// KeyManager: tenants and their DEKs at work. A DEK per tenant sealed under the primary
// KEK of the KEK ring, and field encryption under a tenant's DEK.
//
// It owns the DEK cache and reaches KEKs only through the KekRing seam and storage only
// through the store seam, so it is tested with fakes as well as with SoftHSM2 + SQLite.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/secret.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "kms/keys/kek_ring.h"
#include "kms/store/tenant_key_store.h"
#include "src/common/sync.h"
#include "src/crypto/mac.h"
#include "src/keys/dek_cache.h"
#include "src/keys/encryption_context.h"
#include "src/keys/key_ref.h"
#include "src/keys/tenant_id.h"

namespace kms::keys {

struct KeyManagerOptions {
  DekCache::Options cache;
  bool auto_create_tenants = false;
  // Random 96-bit nonces allow at most 2^32 encryptions per key (NIST SP 800-38D); a
  // tenant's DEK is rotated once its count passes this, leaving room for the counts
  // other replicas have not flushed yet.
  uint64_t dek_encryption_budget = uint64_t{1} << 31;
  // Which counts a periodic flush writes (FlushEncryptionCounts). A DEK's unwritten
  // count is written once it reaches usage_flush_min_count, once usage_flush_max_age has
  // passed since it was last written (the first time: a point spread over that age from
  // the load, so that a burst of loads does not make one big flush), or once the DEK's
  // count with it reaches the budget; else it waits in memory (for a DEK that left the
  // cache, without the key, up to four times max_entries of them). At 100,000 tenants each encrypting now and then, a flush every 10 s
  // wrote nearly every DEK row every time (a page of the store each); this writes each
  // once per max age. What a crash can lose per DEK: below min_count plus what the
  // last flush interval counted (before: the last interval's). Against the 2^32 limit
  // of SP 800-38D that is nothing; the budget above leaves 2^31 of room. 0 and 0: every
  // count at every flush.
  uint64_t usage_flush_min_count = 1000;
  std::chrono::seconds usage_flush_max_age{300};
};

struct TenantInfo {
  store::TenantRecord tenant;
  int64_t primary_dek_created_at = 0;
};

struct EncryptResult {
  std::string ciphertext;  // field ciphertext v1 (src/crypto/field_cipher.h)
  uint32_t dek_version = 0;
};

struct DecryptResult {
  std::string plaintext;
  uint32_t dek_version = 0;
};

struct ReEncryptResult {
  std::string ciphertext;           // field ciphertext v1 under the primary DEK version
  uint32_t dek_version = 0;         // the primary version it is under now
  uint32_t source_dek_version = 0;  // the version it was under
};

// A raw AEAD ciphertext in pieces (src/crypto/raw_aead.h: the AWS XKS proxy API shape).
struct RawCiphertext {
  std::vector<uint8_t> iv;          // 12 bytes
  std::vector<uint8_t> ciphertext;  // as long as the plaintext
  std::vector<uint8_t> tag;         // 16 bytes
  std::vector<uint8_t> metadata;    // names the DEK version (raw_aead.h); at most 20 bytes
  uint32_t dek_version = 0;
  // SHA-256 of aad || metadata || iv || ciphertext || tag, when asked for (raw_aead.h).
  std::vector<uint8_t> integrity_value;
};

// The pieces of a raw AEAD ciphertext to open; views into the caller's bytes.
struct RawCiphertextView {
  std::span<const uint8_t> iv;
  std::span<const uint8_t> ciphertext;
  std::span<const uint8_t> tag;
  std::span<const uint8_t> metadata;
};

struct ShredResult {
  // Every DEK version of the tenant, ordered; all destroyed now.
  std::vector<uint32_t> destroyed_dek_versions;
  int64_t shredded_at = 0;  // Unix seconds: when this call destroyed them (see below)
  // The tenant was shredded before this call: nothing was destroyed now, and
  // shredded_at is the time of this call (the store keeps no shred time).
  bool already_shredded = false;
};

// The status of a ciphertext under a retired DEK version (below the tenant's minimum
// decryption version): FAILED_PRECONDITION "DEK version N is retired". Not the uniform
// "decryption failed": the caller's data is intact but the operator retired its key, and
// the caller must learn that (re-encrypt earlier, or restore the data from elsewhere).
// Decrypt, the batch RPCs and ReEncrypt all answer it.
absl::Status RetiredDekVersionError(uint32_t version);

// A data key (GenerateDataKey, DecryptDataKey): a fresh AES-256 key for the caller's own
// encryption, and its wrapped form, which is exactly a field ciphertext v1 (Encrypt's
// output) of the 32 key bytes under the key set's primary DEK with the caller's context.
// So DecryptDataKey is Decrypt plus a size check, and any door's Decrypt of the wrapped
// form yields the key.
inline constexpr size_t kDataKeySize = 32;
struct DataKey {
  SecretBytes plaintext;  // kDataKeySize bytes; empty for GenerateDataKeyWithoutPlaintext
  std::string wrapped;    // field ciphertext v1
  uint32_t dek_version = 0;
};

// A key set's blind-index keys (blind_index.h): the current version, and during a
// re-index window (after RotateBlindIndexKey, until FinishBlindIndexRotation) the
// previous one, whose indexes callers still hold. Entries carry mac_key.
struct BlindIndexKeys {
  std::shared_ptr<const DekEntry> current;
  std::shared_ptr<const DekEntry> previous;  // null outside a re-index window
};
struct BlindIndexVersions {
  uint32_t current = 0;
  uint32_t previous = 0;  // 0: no re-index window
};

struct HmacResult {
  std::vector<uint8_t> mac;
  uint32_t dek_version = 0;  // the key version whose HMAC key made it
};

// Counters, for status and for tests that count backend work.
struct KeyManagerStats {
  uint64_t dek_loads = 0;        // store reads + HSM unwraps on cache misses
  uint64_t dek_load_failures = 0;
  uint64_t encryptions = 0;
  uint64_t decryptions = 0;
  uint64_t decrypt_failures = 0;
  uint64_t reencryptions = 0;
};

class KeyManager {
 public:
  // The pointers must outlive the KeyManager; `kek_ring` is loaded already.
  static absl::StatusOr<std::unique_ptr<KeyManager>> Create(KekRing* kek_ring,
                                                            store::TenantKeyStore* store,
                                                            const Clock* clock,
                                                            KeyManagerOptions options);

  // --- Tenants (operators)
  // ALREADY_EXISTS when the tenant exists.
  absl::StatusOr<TenantInfo> CreateTenant(const TenantId& tenant);
  // Bulk creation (a platform migrating its tenants): a fresh DEK per tenant, wrapped
  // under the primary KEK as CreateTenant does, all stored in ONE store transaction
  // (TenantKeyStore::CreateTenants). One result per tenant, in input order: kCreated, or
  // kAlreadyExists for an id that was taken (left as it was, so a load can be run
  // again). INVALID_ARGUMENT for more than store::kMaxCreateTenantsBatch tenants or an
  // id listed twice; else the store's or the KEK ring's error, and then none is created.
  absl::StatusOr<std::vector<store::CreateTenantResult>> CreateTenants(
      std::span<const TenantId> tenants);
  // NOT_FOUND for an unknown tenant.
  absl::StatusOr<TenantInfo> GetTenant(const TenantId& tenant);
  absl::StatusOr<store::TenantPage> ListTenants(const std::string& after, int limit);

  // Makes a new DEK version the tenant's primary (older versions still decrypt).
  // ABORTED when another replica changed the tenant at the same time.
  absl::StatusOr<TenantInfo> RotateTenantDek(const TenantId& tenant);
  // Crypto-shredding: destroys every DEK of the tenant; its ciphertexts are gone for good.
  // Says which versions were destroyed (for the signed receipt). Shredding a shredded
  // tenant again is OK (already_shredded). NOT_FOUND for an unknown tenant; ABORTED when
  // the tenant changed meanwhile (nothing destroyed: retry).
  absl::StatusOr<ShredResult> ShredTenant(const TenantId& tenant);
  // Retires the tenant's DEK versions below `min_version`: their ciphertexts then fail
  // with RetiredDekVersionError, on this node at once (its cache drops the tenant) and
  // on the others at the invalidation bus's or the epoch poll's pace. A retirement is
  // never undone. INVALID_ARGUMENT when min_version is 0 or below the current minimum;
  // FAILED_PRECONDITION when it is above the primary version (rotate first) or the
  // tenant is shredded; NOT_FOUND for an unknown tenant; ABORTED on a concurrent change.
  absl::StatusOr<TenantInfo> SetMinDecryptVersion(const TenantId& tenant, uint32_t min_version);
  // Every DEK version of the tenant, ordered by version, with `wrapped` cleared (for
  // listing: state, age, KEK version, encryption count). NOT_FOUND for an unknown tenant.
  absl::StatusOr<std::vector<store::DekRecord>> ListDekVersions(const TenantId& tenant);
  // Adds the encryptions made since their last write to the store's per-DEK counts, in
  // one store transaction: those due by the options' usage flush policy, or every one
  // with `all` (at shutdown). Rotates any tenant whose primary DEK has passed its
  // budget. Run periodically. Returns how many tenants were rotated.
  absl::StatusOr<int> FlushEncryptionCounts(bool all = false);

  // --- Coherence between replicas
  // Called after every change this node makes, for the invalidation bus.
  void SetChangeListener(std::function<void(const coord::InvalidationEvent&)> listener);
  // Applies another replica's change (or a full flush after an epoch change); a KEK
  // change refreshes the KEK ring.
  void ApplyInvalidation(const coord::InvalidationEvent& event);

  // --- Data plane. `context` is bound as AAD (field_cipher.h).
  // NOT_FOUND for an unknown tenant (unless auto-create is on), FAILED_PRECONDITION
  // for a shredded one, INVALID_ARGUMENT for a duplicate context key, UNAVAILABLE when
  // the DEK is not cached and a backend is down.
  absl::StatusOr<EncryptResult> Encrypt(const TenantId& tenant, const EncryptionContext& context,
                                        std::span<const uint8_t> plaintext);
  // INVALID_ARGUMENT "decryption failed" for every ciphertext that does not decrypt
  // for this tenant and context: malformed, truncated, tampered, another tenant's,
  // another context's, an unknown DEK version. One uniform answer.
  // FAILED_PRECONDITION RetiredDekVersionError for a ciphertext under a retired version,
  // FAILED_PRECONDITION for a shredded tenant.
  absl::StatusOr<DecryptResult> Decrypt(const TenantId& tenant, const EncryptionContext& context,
                                        std::span<const uint8_t> ciphertext);
  // Opens `ciphertext` (made under `context`) and seals the plaintext again under the
  // tenant's primary DEK version with a fresh nonce, bound to `new_context` when given
  // (else to `context` again). A ciphertext already under the primary is re-sealed too.
  // The plaintext stays in a wiped buffer inside kmsd and is never returned. Errors as
  // Decrypt (the same uniform INVALID_ARGUMENT "decryption failed", NOT_FOUND for an
  // unknown tenant, RetiredDekVersionError) plus Encrypt's (INVALID_ARGUMENT for a
  // duplicate key in new_context, UNAVAILABLE).
  absl::StatusOr<ReEncryptResult> ReEncrypt(const TenantId& tenant, const EncryptionContext& context,
                                            std::span<const uint8_t> ciphertext,
                                            const EncryptionContext* new_context = nullptr);

  // --- Data keys. Errors as Encrypt / Decrypt; DecryptDataKey answers a ciphertext
  // that opens but is not kDataKeySize bytes with the same uniform INVALID_ARGUMENT
  // "decryption failed" (it is not a data key of this key set and context).
  absl::StatusOr<DataKey> GenerateDataKey(const TenantId& tenant, const EncryptionContext& context,
                                          bool with_plaintext = true);
  absl::StatusOr<DataKey> DecryptDataKey(const TenantId& tenant, const EncryptionContext& context,
                                         std::span<const uint8_t> wrapped);

  // --- Blind indexes. The key set's index keys (row ref.IndexKeyId()), made at the first
  // call for a key set that exists; served from the DEK cache like DEKs. NOT_FOUND for
  // an unknown key set ("named key not found" / "tenant not found"), FAILED_PRECONDITION
  // for a shredded one, UNAVAILABLE as Encrypt.
  absl::StatusOr<BlindIndexKeys> GetBlindIndexKeys(const KeyRef& ref);
  // An operator's rotation: a new index key version becomes current and the old one
  // stays live (indexes under both are returned) until FinishBlindIndexRotation, which
  // retires it. Never automatic. FAILED_PRECONDITION while a window is open (rotate)
  // or when none is (finish); ABORTED on a concurrent change.
  absl::StatusOr<BlindIndexVersions> RotateBlindIndexKey(const KeyRef& ref);
  absl::StatusOr<BlindIndexVersions> FinishBlindIndexRotation(const KeyRef& ref);

  // --- Status
  uint32_t primary_kek_version() const { return kek_ring_->primary_version(); }
  size_t cached_deks() const { return cache_.size(); }
  KeyManagerStats stats() const;
  DekCache& cache() { return cache_; }

  // --- Batches. One item of EncryptBatch; `context` null means an empty context.
  struct BatchItem {
    std::span<const uint8_t> plaintext;
    const EncryptionContext* context = nullptr;
  };
  // Encrypt for every item under the tenant's primary DEK, which is resolved once for
  // the batch (one cache lookup, one count update), with the batch's nonces drawn in
  // one CSPRNG call. out[i] receives item i's field ciphertext (written in place: the
  // caller passes e.g. the response's strings) and status[i] its own error
  // (INVALID_ARGUMENT for a duplicate context key). The returned status is the batch's:
  // Encrypt's tenant errors (NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE), with no
  // item encrypted. `out` and `status` must be items.size() long (else INVALID_ARGUMENT).
  absl::StatusOr<uint32_t> EncryptBatch(const TenantId& tenant, std::span<const BatchItem> items,
                                        std::span<std::string* const> out,
                                        std::span<absl::Status> status);
  // --- Versioned HMAC keys and the primary version (the Vault door's hmac/verify, its
  // key_version checks).
  // The tenant's primary DEK version, from the cache (a store read and an HSM unwrap on
  // a miss). Errors as Encrypt (no auto-create).
  absl::StatusOr<uint32_t> PrimaryDekVersion(const TenantId& tenant);
  // HMAC-<algorithm> of `data` under the HMAC key of DEK version `version` (0: the
  // primary). Each DEK version has its own HMAC key, never stored: derived when the DEK
  // is loaded as HKDF-SHA256 (RFC 5869) of the DEK bytes, empty salt,
  // info = "kmsd:hmac:v1" ‖ len32(tenant_id) ‖ tenant_id ‖ u32(dek_version), 32 bytes.
  // So it rotates, retires and is crypto-shredded with its DEK, and every replica
  // derives the same key. NOT_FOUND for an unknown tenant; INVALID_ARGUMENT
  // "key version not found" for a version the tenant never had; FAILED_PRECONDITION
  // RetiredDekVersionError / shredded; UNAVAILABLE as Encrypt.
  absl::StatusOr<HmacResult> Hmac(const TenantId& tenant, uint32_t version,
                                  crypto::HashAlgorithm algorithm, std::span<const uint8_t> data);
  // Whether `mac` is the HMAC of `data` under version `version` (compared in constant
  // time). Errors as Hmac.
  absl::StatusOr<bool> VerifyHmac(const TenantId& tenant, uint32_t version,
                                  crypto::HashAlgorithm algorithm, std::span<const uint8_t> data,
                                  std::span<const uint8_t> mac);

 private:
  KeyManager(KekRing* kek_ring, store::TenantKeyStore* store, const Clock* clock,
             KeyManagerOptions options);
  absl::StatusOr<std::shared_ptr<const DekEntry>> GetDek(const std::string& tenant_id,
                                                         uint32_t version);
  absl::StatusOr<std::shared_ptr<const DekEntry>> LoadDek(const std::string& tenant_id,
                                                          uint32_t version);
  absl::StatusOr<TenantInfo> CreateTenantLocked(const std::string& tenant_id);
  // A new tenant's rows: version 1 of a fresh DEK, wrapped under KEK `kek`.
  absl::StatusOr<store::NewTenant> NewTenantRows(const std::string& tenant_id, uint32_t kek,
                                                 int64_t now);
  // The tenant's primary DEK for encrypting, creating the tenant when auto-create is on.
  absl::StatusOr<std::shared_ptr<const DekEntry>> PrimaryDekForEncrypt(const std::string& tenant_id);
  // The DEK a parsed ciphertext names, with Decrypt's error mapping (counts failures).
  absl::StatusOr<std::shared_ptr<const DekEntry>> DekForCiphertext(const std::string& tenant_id,
                                                                   uint32_t version);

  void Notify(coord::InvalidationEvent::Kind kind, const std::string& tenant_id);
  absl::StatusOr<ShredResult> ShredKeySet(const std::string& tenant_id);
  DekCache::Options CacheOptions(DekCache::Options options);

  std::function<void(const coord::InvalidationEvent&)> listener_;  // set before serving
  KekRing* const kek_ring_;
  store::TenantKeyStore* const store_;
  const Clock* const clock_;
  const KeyManagerOptions options_;
  // Entries that left the cache with encryptions not yet flushed to the store.
  Mutex pending_mu_;  // taken inside the cache's shard locks (on_remove), never around them
  std::vector<std::shared_ptr<const DekEntry>> pending_counts_ ABSL_GUARDED_BY(pending_mu_);
  // Counts of DEKs that left the cache and are not due yet by the usage flush policy,
  // kept without the key: (tenant id, version) -> count, and when it is due (steady
  // clock ns). At most kMaxHeldUsage, or four times the cache's max_entries if fewer:
  // past that, all are written.
  struct HeldUsage {
    uint64_t count = 0;
    int64_t due_ns = 0;
    uint64_t counted = 0;  // the store's count as the entry last knew it (for the budget)
  };
  std::map<std::pair<std::string, uint32_t>, HeldUsage> held_usage_ ABSL_GUARDED_BY(pending_mu_);
  static constexpr size_t kMaxHeldUsage = 1'000'000;
  DekCache cache_;

  std::atomic<uint64_t> dek_loads_{0};
  std::atomic<uint64_t> dek_load_failures_{0};
  std::atomic<uint64_t> encryptions_{0};
  std::atomic<uint64_t> decryptions_{0};
  std::atomic<uint64_t> decrypt_failures_{0};
  std::atomic<uint64_t> reencryptions_{0};

 public:
  // --- Raw AEAD (src/crypto/raw_aead.h), for doors whose protocol wants AES-GCM output
  // in pieces over the caller's AAD (the AWS XKS proxy API). Same DEKs, cache, budget
  // and errors as Encrypt/Decrypt; the metadata carries the DEK version, so rotation and
  // retirement work as for field ciphertexts.
  //
  // Seals under the tenant's primary DEK version. With `integrity_value`, also computes
  // the integrity value and then opens the result once more before returning it (the
  // specification's Appendix C order), INTERNAL if that fails. INVALID_ARGUMENT when
  // `aad` is over crypto::kMaxRawAadBytes; NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE
  // as Encrypt.
  absl::StatusOr<RawCiphertext> RawEncrypt(const TenantId& tenant, std::span<const uint8_t> aad,
                                           std::span<const uint8_t> plaintext,
                                           bool integrity_value = false);
  // Opens a raw ciphertext made by RawEncrypt for this tenant and `aad`. The uniform
  // INVALID_ARGUMENT "decryption failed" for anything that does not open (metadata that
  // is not kmsd's or names a version the tenant never had, a changed AAD, IV, tag or
  // ciphertext); RetiredDekVersionError, NOT_FOUND, FAILED_PRECONDITION as Decrypt.
  absl::StatusOr<DecryptResult> RawDecrypt(const TenantId& tenant, std::span<const uint8_t> aad,
                                           const RawCiphertextView& in);
};

}  // namespace kms::keys
