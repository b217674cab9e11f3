// KeyStateCache: the ages of the keys that rotate (primary KEK, oldest primary tenant
// DEK) and the re-wrap backlog, read from the store by a periodic job so that a scrape
// never reads the store; and the rotation period of each kind of key, which the
// rotation jobs may set (today the wiring sets them from the configuration).
//
// Thread-safe: values are atomics, written by the refresh job, read by any thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "kms/common/status.h"
#include "kms/store/kek_store.h"
#include "kms/store/tenant_key_store.h"
#include "src/sched/job.h"

namespace kms::sched {

enum class RotatingKey { kKek = 0, kDek = 1, kJwt = 2 };
inline constexpr RotatingKey kAllRotatingKeys[] = {RotatingKey::kKek, RotatingKey::kDek,
                                                   RotatingKey::kJwt};
// "kek", "dek", "jwt": the metrics' `key` label.
std::string_view RotatingKeyName(RotatingKey key);

class KeyStateCache {
 public:
  // `primary_kek_version` says which KEK version is primary now (the ring's). The
  // references must outlive the cache.
  KeyStateCache(store::KekStore& keks, store::TenantKeyStore& tenants,
                std::function<uint32_t()> primary_kek_version);

  // Reads the store: the primary KEK's created_at, the oldest primary DEK's, and how many
  // DEKs (active and retired versions) are still wrapped under another KEK version than
  // the primary (the re-wrap backlog; JWT keys are left out: retired ones keep their
  // sealed key until pruned, which would read as a stalled re-wrap). On an error the previous values stay (the store is down: the
  // ages keep growing from what was read last) and the error is returned.
  absl::Status Refresh();

  // Unix seconds; 0 before the first successful refresh (or no active tenant, for DEKs).
  int64_t kek_primary_created_at() const { return kek_created_.load(); }
  int64_t dek_oldest_primary_created_at() const { return dek_created_.load(); }
  uint64_t rewrap_backlog() const { return rewrap_backlog_.load(); }
  int64_t last_refresh_unix() const { return refreshed_.load(); }

  // The rotation period of `key` in seconds (0: not rotated on a schedule).
  void SetRotationPeriod(RotatingKey key, int64_t seconds) {
    periods_[static_cast<size_t>(key)].store(seconds);
  }
  int64_t rotation_period(RotatingKey key) const {
    return periods_[static_cast<size_t>(key)].load();
  }

  // Set by Refresh from the clock it is given (for the metrics' staleness).
  void set_now_for_refresh(std::function<int64_t()> now) { now_ = std::move(now); }

 private:
  store::KekStore& keks_;
  store::TenantKeyStore& tenants_;
  const std::function<uint32_t()> primary_kek_version_;
  std::function<int64_t()> now_;
  std::atomic<int64_t> kek_created_{0};
  std::atomic<int64_t> dek_created_{0};
  std::atomic<uint64_t> rewrap_backlog_{0};
  std::atomic<int64_t> refreshed_{0};
  std::array<std::atomic<int64_t>, 3> periods_{};
};

inline constexpr std::chrono::seconds kKeyStateRefreshInterval{60};

// "key-state", every `interval` on every replica: KeyStateCache::Refresh.
std::unique_ptr<Job> MakeKeyStateRefreshJob(KeyStateCache& cache,
                                            std::chrono::milliseconds interval = kKeyStateRefreshInterval);

}  // namespace kms::sched
