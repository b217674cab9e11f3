// DekCache: unwrapped tenant DEKs, ready to encrypt, for a bounded time.
//
// Keyed by (tenant, version); version 0 is the alias "the tenant's primary version",
// which points at the same entry as its numbered key. Entries live for the TTL
// (default 1 h), then the next request reloads them. The cache is bounded in entries
// (`max_entries`, and `max_bytes` at an estimated kEntryBytes each) and evicts by
// recency: CLOCK per shard (a hit sets the entry's reference bit; the shard's hand
// clears set bits and evicts the first entry whose bit is clear), so lookups and
// evictions are O(1) (amortized) and a busy entry is not evicted for an idle one. An
// evicted entry's key is wiped as soon as the last request using it finishes (shared
// ownership).
//
// Single-flight: concurrent misses on one key run the loader once; the others wait
// for its result. A burst of requests for an uncached tenant therefore costs exactly
// one store read and one HSM unwrap.
//
// Degraded mode (DESIGN §7): when a reload fails with UNAVAILABLE and the expired
// entry is younger than `max_stale`, the stale entry is served instead. A cache-wide
// flush (MarkAllStale: an epoch change, a bus resubscribe) keeps every entry but marks
// it stale, so each is reloaded on its next use and, while the backend is down, served
// stale on the same terms: an outage never empties the cache. A reload that answers
// (the tenant was shredded, the version retired) drops the stale entry.
//
// Thread-safe. Reads take one shard's shared lock; nothing is held across a loader.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "src/common/sync.h"
#include "src/crypto/aes_gcm.h"

namespace kms::keys {

struct DekEntry {
  std::string tenant_id;
  uint32_t version = 0;
  uint32_t kek_version = 0;
  std::unique_ptr<crypto::AesGcmKey> key;
  // The DEK version's HMAC key, derived from the DEK when it is loaded
  // (KeyManager::Hmac documents the derivation). Wiped with the entry.
  SecretBytes hmac_key;
  std::chrono::steady_clock::time_point loaded_at;
  // Encryptions made with this entry and not yet added to the store's count.
  mutable std::atomic<uint64_t> encryptions{0};
  // The store's count when loaded, plus what this replica has flushed since.
  mutable std::atomic<uint64_t> counted{0};
  // When the usage flush writes `encryptions` even if few (KeyManagerOptions::
  // usage_flush_max_age): nanoseconds on the steady clock; 0: at the next flush.
  mutable std::atomic<int64_t> usage_due_ns{0};
  // Set by the cache when inserted (its insertion order): MarkAllStale compares it.
  mutable std::atomic<uint64_t> cache_seq{0};
  // The key set's minimum decryption version when loaded (a blind-index key set's
  // re-index window: versions from it to the primary are live).
  uint32_t min_version = 0;
  // A blind-index key's bytes, for HMAC (blind_index.h); null for a DEK.
  std::unique_ptr<SecretBytes> mac_key;
  // The cache's CLOCK reference bit: set by a hit, cleared by the eviction hand.
  mutable std::atomic<bool> referenced{false};
  // Set once the entry has left the cache (before Options::on_remove is called).
  mutable std::atomic<bool> removed{false};
};

class DekCache {
 public:
  struct Options {
    std::chrono::seconds ttl{3600};
    // The bound in numbered entries. Each shard holds max_entries / shards plus room for
    // the hash's imbalance (4 standard deviations), so a working set of max_entries
    // uniformly spread keys fits without evictions; the total may pass max_entries by
    // that room (~5% at 100,000 over 16 shards).
    size_t max_entries = 500000;
    // The bound in bytes, at kEntryBytes per entry (0: entries only).
    size_t max_bytes = 0;
    std::chrono::seconds max_stale{604800};
    size_t shards = 16;
    // Called (under a shard lock: keep it short) with every entry that leaves the cache:
    // evicted, invalidated, cleared or replaced. The key manager keeps their unflushed
    // encryption counts.
    std::function<void(const std::shared_ptr<const DekEntry>&)> on_remove;
  };
  using Loader = std::function<absl::StatusOr<std::shared_ptr<const DekEntry>>()>;
  // Estimated resident bytes per cached DEK (entry, key, index and recency nodes;
  // measured in docs/benchmarks.md), for Options::max_bytes.
  static constexpr size_t kEntryBytes = 640;

  DekCache(const Clock& clock, Options options);

  // Returns the cached entry for (tenant, version), or runs `loader` once for all
  // concurrent callers. For version 0 the loaded entry is also cached under its own
  // version number.
  absl::StatusOr<std::shared_ptr<const DekEntry>> GetOrLoad(const std::string& tenant_id,
                                                            uint32_t version, const Loader& loader);

  void InvalidateTenant(const std::string& tenant_id);
  // Every entry cached now must be reloaded before it is used fresh again; until then it
  // is served only when the reload fails UNAVAILABLE (and it is younger than max_stale).
  // Loads in flight are not cached (as after an invalidation).
  void MarkAllStale();
  // Calls `fn` with every numbered entry (under each shard's shared lock: keep it short).
  void ForEach(const std::function<void(const std::shared_ptr<const DekEntry>&)>& fn) const;
  void Clear();
  size_t size() const;  // numbered entries

  // Counters since construction, for the metrics (relaxed atomics: no lock).
  struct Stats {
    uint64_t hits = 0;          // answered from a fresh entry
    uint64_t misses = 0;        // went to a load (ran it or waited for it)
    uint64_t evictions = 0;     // entries dropped to stay within max_entries
    uint64_t stale_served = 0;  // loads that failed UNAVAILABLE and served the stale entry
  };
  Stats stats() const {
    return Stats{hits_.load(std::memory_order_relaxed), misses_.load(std::memory_order_relaxed),
                 evictions_.load(std::memory_order_relaxed),
                 stale_served_.load(std::memory_order_relaxed)};
  }

 private:
  struct Flight {
    explicit Flight(uint64_t g) : generation(g) {}
    Mutex mu;
    std::condition_variable cv;  // signalled once, when done
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<std::shared_ptr<const DekEntry>> result ABSL_GUARDED_BY(mu) =
        absl::UnknownError("pending");
    const uint64_t generation;  // the shard's generation when the load started
  };
  struct TenantSlot {
    std::map<uint32_t, std::shared_ptr<const DekEntry>> versions;  // numbered versions
    std::shared_ptr<const DekEntry> primary;                       // alias of version 0
  };
  struct Shard {
    mutable SharedMutex mu;
    std::unordered_map<std::string, TenantSlot> tenants ABSL_GUARDED_BY(mu);
    std::map<std::pair<std::string, uint32_t>, std::shared_ptr<Flight>> flights
        ABSL_GUARDED_BY(mu);
    size_t entries ABSL_GUARDED_BY(mu) = 0;
    // CLOCK ring of the numbered entries, in insertion order; `hand` is the next to
    // examine. Entries removed by invalidation or replacement stay here until the hand
    // (or a sweep once they outnumber the live ones) finds them gone: weak pointers,
    // so they hold no key.
    std::list<std::weak_ptr<const DekEntry>> clock ABSL_GUARDED_BY(mu);
    std::list<std::weak_ptr<const DekEntry>>::iterator hand ABSL_GUARDED_BY(mu) = clock.end();
    // Bumped by every invalidation, so a load that started before one is not cached.
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;
    // Entries inserted before this sequence number are stale (MarkAllStale).
    uint64_t fresh_from_seq ABSL_GUARDED_BY(mu) = 0;
  };

  Shard& ShardFor(const std::string& tenant_id);
  bool Fresh(const Shard& shard, const DekEntry& e) const ABSL_SHARED_LOCKS_REQUIRED(shard.mu);
  void Insert(Shard& shard, uint32_t requested_version, std::shared_ptr<const DekEntry> entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Evicts the least recently used entry (CLOCK) other than (keep_tenant, keep_version);
  // false if none.
  bool EvictOneLocked(Shard& shard, const std::string& keep_tenant, uint32_t keep_version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void Removed(const std::shared_ptr<const DekEntry>& entry) const;
  // Removes `entry` if it is still the cached one.
  void DropLocked(Shard& shard, const std::shared_ptr<const DekEntry>& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Whether `e` is still the cached entry for its (tenant, version).
  static bool IsCached(const Shard& shard, const DekEntry& e) ABSL_SHARED_LOCKS_REQUIRED(shard.mu);
  // Drops ring nodes whose entry has left the cache.
  static void SweepClock(Shard& shard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);

  const Clock& clock_;
  const Options options_;
  const size_t per_shard_max_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> stale_served_{0};
  std::atomic<uint64_t> next_seq_{1};
};

}  // namespace kms::keys
