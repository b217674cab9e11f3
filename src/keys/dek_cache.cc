#include "src/keys/dek_cache.h"

#include <algorithm>
#include <cmath>

namespace kms::keys {

namespace {

// Entries per shard: an even share of the bound (entries, or bytes at kEntryBytes each),
// plus, with several shards, 4 standard deviations of a uniform hash's imbalance
// (binomial: sqrt(share)), so that max_entries uniformly spread keys fit.
size_t PerShardMax(size_t max_entries, size_t max_bytes, size_t entry_bytes, size_t shards) {
  shards = std::max<size_t>(1, shards);
  size_t bound = std::max<size_t>(1, max_entries);
  if (max_bytes > 0) bound = std::min(bound, std::max<size_t>(1, max_bytes / entry_bytes));
  const size_t share = (bound + shards - 1) / shards;
  if (shards == 1) return share;
  return share + static_cast<size_t>(std::ceil(4 * std::sqrt(static_cast<double>(share))));
}

}  // namespace

DekCache::DekCache(const Clock& clock, Options options)
    : clock_(clock),
      options_(options),
      per_shard_max_(PerShardMax(options.max_entries, options.max_bytes, kEntryBytes,
                                 options.shards)) {
  const size_t n = std::max<size_t>(1, options_.shards);
  shards_.reserve(n);
  for (size_t i = 0; i < n; ++i) shards_.push_back(std::make_unique<Shard>());
}

DekCache::Shard& DekCache::ShardFor(const std::string& tenant_id) {
  return *shards_[std::hash<std::string>{}(tenant_id) % shards_.size()];
}

bool DekCache::Fresh(const Shard& shard, const DekEntry& e) const {
  return e.cache_seq.load(std::memory_order_relaxed) >= shard.fresh_from_seq &&
         clock_.Now() - e.loaded_at < options_.ttl;
}

absl::StatusOr<std::shared_ptr<const DekEntry>> DekCache::GetOrLoad(const std::string& tenant_id,
                                                                    uint32_t version,
                                                                    const Loader& loader) {
  Shard& shard = ShardFor(tenant_id);
  std::shared_ptr<const DekEntry> stale;
  {
    ReaderLock lock(&shard.mu);
    auto it = shard.tenants.find(tenant_id);
    if (it != shard.tenants.end()) {
      const TenantSlot& slot = it->second;
      std::shared_ptr<const DekEntry> hit;
      if (version == 0) {
        hit = slot.primary;
      } else if (auto v = slot.versions.find(version); v != slot.versions.end()) {
        hit = v->second;
      }
      if (hit && Fresh(shard, *hit)) {
        hits_.fetch_add(1, std::memory_order_relaxed);
        // Written only when clear: a hot entry's cache line is not dirtied per hit.
        if (!hit->referenced.load(std::memory_order_relaxed)) {
          hit->referenced.store(true, std::memory_order_relaxed);
        }
        return hit;
      }
      stale = std::move(hit);
    }
  }

  // Miss or expired: join the flight for this key, or start it.
  std::shared_ptr<Flight> flight;
  bool leader = false;
  {
    WriterLock lock(&shard.mu);
    auto key = std::make_pair(tenant_id, version);
    auto it = shard.flights.find(key);
    if (it != shard.flights.end()) {
      flight = it->second;
    } else {
      // Another flight may have completed between our read and this lock.
      auto t = shard.tenants.find(tenant_id);
      if (t != shard.tenants.end()) {
        std::shared_ptr<const DekEntry> hit =
            version == 0 ? t->second.primary
                         : (t->second.versions.count(version) ? t->second.versions.at(version)
                                                              : nullptr);
        if (hit && Fresh(shard, *hit)) {
          hits_.fetch_add(1, std::memory_order_relaxed);
          return hit;
        }
      }
      flight = std::make_shared<Flight>(shard.generation);
      shard.flights.emplace(key, flight);
      leader = true;
    }
  }

  misses_.fetch_add(1, std::memory_order_relaxed);
  if (!leader) {
    Flight& f = *flight;
    MutexLock lock(&f.mu);
    f.mu.Await(f.cv, [&f]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(f.mu) { return f.done; });
    return f.result;
  }

  absl::StatusOr<std::shared_ptr<const DekEntry>> result = loader();
  if (!result.ok() && absl::IsUnavailable(result.status()) && stale &&
      clock_.Now() - stale->loaded_at < options_.max_stale) {
    result = stale;  // degraded: the backend is down, the key is still ours to use
    stale_served_.fetch_add(1, std::memory_order_relaxed);
  }
  {
    WriterLock lock(&shard.mu);
    // An invalidation while we loaded (a shred, a rotation) makes what we read stale.
    if (result.ok() && *result != stale && shard.generation == flight->generation) {
      Insert(shard, version, *result);
    }
    // The backend answered that the stale key is no longer to be used (shredded,
    // retired, gone): drop it rather than keep it for the next outage.
    if (!result.ok() && !absl::IsUnavailable(result.status()) && stale) {
      DropLocked(shard, stale);
    }
    shard.flights.erase(std::make_pair(tenant_id, version));
  }
  {
    MutexLock lock(&flight->mu);
    flight->result = result;
    flight->done = true;
  }
  flight->cv.notify_all();
  return result;
}

void DekCache::Removed(const std::shared_ptr<const DekEntry>& entry) const {
  if (entry) entry->removed.store(true);
  if (options_.on_remove && entry) options_.on_remove(entry);
}

void DekCache::DropLocked(Shard& shard, const std::shared_ptr<const DekEntry>& entry) {
  auto t = shard.tenants.find(entry->tenant_id);
  if (t == shard.tenants.end()) return;
  TenantSlot& slot = t->second;
  if (slot.primary == entry) slot.primary.reset();
  auto v = slot.versions.find(entry->version);
  if (v == slot.versions.end() || v->second != entry) return;
  Removed(v->second);
  slot.versions.erase(v);
  --shard.entries;
  if (slot.versions.empty()) shard.tenants.erase(t);
}

void DekCache::Insert(Shard& shard, uint32_t requested_version,
                      std::shared_ptr<const DekEntry> entry) {
  entry->cache_seq.store(next_seq_.fetch_add(1, std::memory_order_relaxed),
                         std::memory_order_relaxed);
  const std::string tenant = entry->tenant_id;
  const uint32_t version = entry->version;
  {
    TenantSlot& slot = shard.tenants[tenant];
    auto it = slot.versions.find(version);
    bool added = true;
    if (it == slot.versions.end()) {
      slot.versions.emplace(version, entry);
      ++shard.entries;
    } else if (it->second != entry) {
      Removed(it->second);  // its ring node is dropped when the hand meets it
      // The primary alias follows the entry it named: else it would keep serving (and
      // counting encryptions on) an entry the cache no longer holds.
      if (slot.primary == it->second) slot.primary = entry;
      it->second = entry;
    } else {
      added = false;
    }
    if (requested_version == 0) slot.primary = entry;
    // Behind the hand: a new entry is examined last, after a full turn.
    if (added) shard.clock.insert(shard.hand, entry);
  }
  if (shard.clock.size() > 2 * shard.entries + 64) SweepClock(shard);
  // Eviction may erase other slots (or this one's other versions): no slot reference
  // is held across it, and the entry just inserted is never the one evicted.
  while (shard.entries > per_shard_max_ && EvictOneLocked(shard, tenant, version)) {
  }
}

bool DekCache::IsCached(const Shard& shard, const DekEntry& e) {
  auto t = shard.tenants.find(e.tenant_id);
  if (t == shard.tenants.end()) return false;
  auto v = t->second.versions.find(e.version);
  return v != t->second.versions.end() && v->second.get() == &e;
}

void DekCache::SweepClock(Shard& shard) {
  for (auto it = shard.clock.begin(); it != shard.clock.end();) {
    std::shared_ptr<const DekEntry> e = it->lock();
    if (e != nullptr && IsCached(shard, *e)) {
      ++it;
      continue;
    }
    if (it == shard.hand) ++shard.hand;
    it = shard.clock.erase(it);
  }
}

bool DekCache::EvictOneLocked(Shard& shard, const std::string& keep_tenant, uint32_t keep_version) {
  // CLOCK: each live node is passed at most twice (once to clear its bit), so this is
  // O(1) amortized per eviction; gone nodes are dropped on the way.
  for (size_t budget = 2 * shard.clock.size() + 2; budget > 0 && !shard.clock.empty(); --budget) {
    if (shard.hand == shard.clock.end()) shard.hand = shard.clock.begin();
    std::shared_ptr<const DekEntry> e = shard.hand->lock();
    if (e == nullptr || !IsCached(shard, *e)) {
      shard.hand = shard.clock.erase(shard.hand);
      continue;
    }
    if ((e->version == keep_version && e->tenant_id == keep_tenant) ||
        e->referenced.exchange(false, std::memory_order_relaxed)) {
      ++shard.hand;  // kept, or used since the hand last passed: a second chance
      continue;
    }
    shard.hand = shard.clock.erase(shard.hand);
    auto t = shard.tenants.find(e->tenant_id);
    TenantSlot& slot = t->second;
    if (slot.primary == e) slot.primary.reset();
    auto v = slot.versions.find(e->version);
    Removed(v->second);
    slot.versions.erase(v);
    --shard.entries;
    evictions_.fetch_add(1, std::memory_order_relaxed);
    if (slot.versions.empty()) shard.tenants.erase(t);
    return true;
  }
  return false;  // only the kept entry is left
}

void DekCache::InvalidateTenant(const std::string& tenant_id) {
  Shard& shard = ShardFor(tenant_id);
  WriterLock lock(&shard.mu);
  ++shard.generation;
  auto it = shard.tenants.find(tenant_id);
  if (it == shard.tenants.end()) return;
  for (const auto& [version, entry] : it->second.versions) Removed(entry);
  shard.entries -= it->second.versions.size();
  shard.tenants.erase(it);
}

void DekCache::ForEach(const std::function<void(const std::shared_ptr<const DekEntry>&)>& fn) const {
  for (const auto& shard : shards_) {
    ReaderLock lock(&shard->mu);
    for (const auto& [tenant, slot] : shard->tenants) {
      for (const auto& [version, entry] : slot.versions) fn(entry);
    }
  }
}

void DekCache::MarkAllStale() {
  for (auto& shard : shards_) {
    WriterLock lock(&shard->mu);
    ++shard->generation;
    shard->fresh_from_seq = next_seq_.load(std::memory_order_relaxed);
  }
}

void DekCache::Clear() {
  for (auto& shard : shards_) {
    WriterLock lock(&shard->mu);
    ++shard->generation;
    for (const auto& [tenant, slot] : shard->tenants) {
      for (const auto& [version, entry] : slot.versions) Removed(entry);
    }
    shard->tenants.clear();
    shard->entries = 0;
  }
}

size_t DekCache::size() const {
  size_t n = 0;
  for (const auto& shard : shards_) {
    ReaderLock lock(&shard->mu);
    n += shard->entries;
  }
  return n;
}

}  // namespace kms::keys
