// The periodic jobs of the key hierarchy and the JWT signing keys, and the key manager
// as the scheduler's invalidation sink. The rotation jobs (KEK, DEK age, re-wrap) will
// join these.
#pragma once

#include <chrono>
#include <memory>

#include "src/jwt/jwt_service.h"
#include "src/keys/key_manager.h"
#include "src/sched/job.h"
#include "src/sched/scheduler.h"

namespace kms::sched {

inline constexpr std::chrono::seconds kDekUsageFlushInterval{10};

// "jwt", every `interval` (the service's refresh_interval_seconds) on every replica:
// JwtService::Tick (load, probe, re-read, prune), which rotates only when this replica
// leads. A failed probe comes back as the job's error, with the lifecycle state.
// `jwt` must outlive the job.
std::unique_ptr<Job> MakeJwtTickJob(jwt::JwtService& jwt, std::chrono::milliseconds interval);

// "dek-usage", every `interval` on every replica: KeyManager::FlushEncryptionCounts (this
// replica's encryption counts into the store; a DEK past its budget is rotated). `keys`
// must outlive the job.
std::unique_ptr<Job> MakeDekUsageFlushJob(
    keys::KeyManager& keys, std::chrono::milliseconds interval = kDekUsageFlushInterval);

// Invalidations (bus events, epoch moves) dropped from the key manager's caches.
class KeyManagerSink final : public InvalidationSink {
 public:
  explicit KeyManagerSink(keys::KeyManager& keys) : keys_(keys) {}
  void ApplyInvalidation(const coord::InvalidationEvent& event) override {
    keys_.ApplyInvalidation(event);
  }

 private:
  keys::KeyManager& keys_;
};

}  // namespace kms::sched
