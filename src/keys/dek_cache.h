// DekCache: unwrapped tenant DEKs, ready to encrypt, for a bounded time.
//
// Keyed by (tenant, version); version 0 is the alias "the tenant's primary version",
// which points at the same entry as its numbered key. Entries live for the TTL
// (default 1 h), then the next request reloads them; the cache holds at most
// `max_entries` numbered entries and evicts the oldest first. An evicted entry's key
// schedule is wiped as soon as the last request using it finishes (shared ownership).
//
// Single-flight: concurrent misses on one key run the loader once; the others wait
// for its result. A burst of requests for an uncached tenant therefore costs exactly
// one store read and one HSM unwrap.
//
// Degraded mode (DESIGN §7): when a reload fails with UNAVAILABLE and the expired
// entry is younger than `max_stale`, the stale entry is served instead.
//
// Thread-safe. Reads take one shard's shared lock; nothing is held across a loader.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
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
};

class DekCache {
 public:
  struct Options {
    std::chrono::seconds ttl{3600};
    size_t max_entries = 100000;
    std::chrono::seconds max_stale{604800};
    size_t shards = 16;
    // Called (under a shard lock: keep it short) with every entry that leaves the cache:
    // evicted, invalidated, cleared or replaced. The key manager keeps their unflushed
    // encryption counts.
    std::function<void(const std::shared_ptr<const DekEntry>&)> on_remove;
  };
  using Loader = std::function<absl::StatusOr<std::shared_ptr<const DekEntry>>()>;

  DekCache(const Clock& clock, Options options);

  // Returns the cached entry for (tenant, version), or runs `loader` once for all
  // concurrent callers. For version 0 the loaded entry is also cached under its own
  // version number.
  absl::StatusOr<std::shared_ptr<const DekEntry>> GetOrLoad(const std::string& tenant_id,
                                                            uint32_t version, const Loader& loader);

  void InvalidateTenant(const std::string& tenant_id);
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
    // Bumped by every invalidation, so a load that started before one is not cached.
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  };

  Shard& ShardFor(const std::string& tenant_id);
  bool Fresh(const DekEntry& e) const;
  void Insert(Shard& shard, uint32_t requested_version, std::shared_ptr<const DekEntry> entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Evicts the oldest entry other than (keep_tenant, keep_version); false if none.
  bool EvictOneLocked(Shard& shard, const std::string& keep_tenant, uint32_t keep_version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  void Removed(const std::shared_ptr<const DekEntry>& entry) const;

  const Clock& clock_;
  const Options options_;
  const size_t per_shard_max_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> stale_served_{0};
};

}  // namespace kms::keys
