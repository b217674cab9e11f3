// Scheduled rotation, the resumable KEK re-wrap and KEK retirement (DESIGN §6).
//
// RotationService is what the two rotation jobs of the scheduler run, and what the
// admin RPCs (RotateKek, GetRotationJob) call:
//
// - Check() ("rotation-check", leader only, every check_interval): when the HSM and the
//   store answer, rotates the primary KEK once it is kek_period old (then starts a
//   re-wrap job); rotates the primary DEK of at most dek_rotations_per_check tenants
//   whose DEK is older than their period (the tenant's own, else dek_period), found by a
//   paged store query that resumes where the previous check stopped (so 100,000 tenants
//   due at once are spread over checks, in tenant-id order); starts a re-wrap job when
//   keys are still under an older KEK and none runs (a crash between rotation and job,
//   a straggler); retires old KEK versions nothing references (RetireKek: the count and
//   the change in one transaction) once retire_grace has passed since the newest KEK
//   was made; destroys retired KEK blobs after retired_kek_keep_days. While a backend is
//   down it does nothing and returns UNAVAILABLE: the job status shows it failing since
//   then, and Status() shows what is overdue.
// - RunRewrap() ("kek-rewrap", leader only, short interval, triggered by StartKekRotation):
//   resumes the running job from its checkpoint (RotationJobStore), re-wraps batch after
//   batch through every RewrapTarget (throttled to rewrap_rate_per_second), checkpoints
//   after each batch, and returns after `slice` so the scheduler's other work goes on;
//   the next run continues. When every target is through, a final check counts what is
//   still below the new KEK version; anything left (written meanwhile by a replica that
//   had not seen the rotation) starts another pass from the beginning; a full pass that
//   moves nothing while keys remain fails the job with the count. A finished job retires
//   the old versions (above). A checkpoint that loses its compare-and-set means another
//   replica took the job over: this one stops.
//
// The JWT key's scheduled rotation stays with JwtService::Tick (the "jwt" job); Status()
// reports its due time alongside.
//
// Thread-safe: the scheduler's thread runs Check/RunRewrap; RPC threads call
// StartKekRotation, GetJob and Status. Time comes from the injected Clock; the throttle
// waits through the injected `sleep`.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "kms/metrics/metrics.h"
#include "kms/store/key_store.h"
#include "src/common/sync.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/sched/job.h"
#include "src/sched/rewrap_target.h"

namespace kms::sched {

inline constexpr int64_t kDefaultRotationPeriodSeconds = 7'776'000;  // 90 days

struct RotationOptions {
  std::chrono::seconds check_interval{60};
  int64_t kek_period_seconds = kDefaultRotationPeriodSeconds;
  int64_t dek_period_seconds = kDefaultRotationPeriodSeconds;
  int dek_rotations_per_check = 500;
  // Keys re-wrapped per second at most; 0: unthrottled.
  int64_t rewrap_rate_per_second = 2000;
  int rewrap_batch_size = 500;
  // Reseal calls in flight at once within a batch (HSM sessions in use).
  int rewrap_parallelism = 2;
  // How long one RunRewrap() works before it returns to the scheduler.
  std::chrono::milliseconds rewrap_slice{2000};
  // At most this many batches per RunRewrap() (0: no limit). For tests.
  int rewrap_max_batches_per_run = 0;
  // An old KEK is retired no sooner than this after the newest KEK was made, so that
  // every replica has seen the new primary (epoch poll) before the old one goes.
  std::chrono::seconds retire_grace{30};
  int64_t retired_kek_keep_days = 30;
  std::function<void(std::chrono::milliseconds)> sleep;  // empty: std::this_thread
};

// One rotation kind's due time, for GetStatus and the metrics.
struct RotationKindStatus {
  std::string kind;  // "kek", "dek", "jwt"
  // Seconds until the next rotation is due; <= 0: due/overdue by that much. For "dek":
  // the most overdue tenant seen by the last check (0 when none was due).
  int64_t due_in_seconds = 0;
  bool known = false;        // false until a check could read the store
  uint64_t pending = 0;      // "dek": tenants the last check found due (and rotated)
  int64_t skipped_since_unix = 0;  // checks skipped (backend down) since; 0: not skipping
  std::string last_error;    // why the last check skipped (sanitized)
};

struct RotationStatus {
  std::vector<RotationKindStatus> kinds;  // kek, dek, jwt
  int64_t running_job_id = 0;             // 0: none (as last seen by this replica)
};

// --- The targets of the re-wrap job

// DEK versions (TenantKeyStore): walks each KEK version below the target in ascending
// order, DEKs in (tenant, version) order; cursor key "<kek_version>:<tenant_id>",
// cursor version = the DEK version.
class DekRewrapTarget final : public RewrapTarget {
 public:
  // The pointers must outlive the target.
  DekRewrapTarget(keys::KekRing* ring, store::KekStore* keks, store::TenantKeyStore* tenants,
                  int parallelism);
  std::string_view name() const override { return "deks"; }
  absl::StatusOr<uint64_t> CountBelow(uint32_t to_kek_version) override;
  absl::StatusOr<RewrapBatchResult> RewrapBatch(uint32_t to_kek_version, const RewrapCursor& after,
                                                int limit) override;

 private:
  keys::KekRing* const ring_;
  store::KekStore* const keks_;
  store::TenantKeyStore* const tenants_;
  const int parallelism_;
};

// JWT private keys (JwtService::RewrapKeys: a handful of keys, one batch).
class JwtRewrapTarget final : public RewrapTarget {
 public:
  JwtRewrapTarget(jwt::JwtService* jwt, store::KekStore* keks) : jwt_(jwt), keks_(keks) {}
  std::string_view name() const override { return "jwt_keys"; }
  absl::StatusOr<uint64_t> CountBelow(uint32_t to_kek_version) override;
  absl::StatusOr<RewrapBatchResult> RewrapBatch(uint32_t to_kek_version, const RewrapCursor& after,
                                                int limit) override;

 private:
  jwt::JwtService* const jwt_;
  store::KekStore* const keks_;
};

class RotationService {
 public:
  // Every reference must outlive the service. `jwt` may be null (no JWT status).
  RotationService(const Clock& clock, store::KeyStore& store, keys::HsmKekRing& ring,
                  keys::KeyManager& keys, jwt::JwtService* jwt,
                  std::vector<std::unique_ptr<RewrapTarget>> targets, RotationOptions options);

  // Called after a job was created (the scheduler's Trigger("kek-rewrap")) and after a
  // KEK was retired (publish kKek to the other replicas). Set before the start.
  void SetOnJobCreated(std::function<void()> f) { on_job_created_ = std::move(f); }
  // Counts every key the re-wrap job moves (the metrics' re-wrap rate). Set before Start.
  void SetRewrappedCounter(metrics::Counter* counter) { rewrapped_ = counter; }
  void SetPublish(std::function<void(const coord::InvalidationEvent&)> f) {
    publish_ = std::move(f);
  }

  // A KEK rotation (manual or scheduled): makes the next KEK version primary and creates
  // the re-wrap job for it. FAILED_PRECONDITION while the HSM or the store is down
  // ("degraded"), ABORTED while a re-wrap job runs (two rotations at once) or another
  // replica rotated at the same moment.
  absl::StatusOr<store::RotationJobRecord> StartKekRotation();

  // The job `id`, or the newest one when id == 0 (NOT_FOUND when there is none).
  absl::StatusOr<store::RotationJobRecord> GetJob(int64_t id);

  // The job bodies (above).
  absl::Status Check();
  absl::Status RunRewrap();

  RotationStatus Status() const;
  const RotationOptions& options() const { return options_; }

 private:
  absl::Status Degraded() const;  // FAILED_PRECONDITION naming the backend that is down
  absl::StatusOr<store::RotationJobRecord> CreateJob(uint32_t from, uint32_t to);
  // Retires every active version below the primary that nothing references, once the
  // grace has passed; then destroys retired blobs past their keep time.
  absl::Status RetireAndDestroy();
  absl::Status RotateDueTenants(int64_t now);
  void Sleep(std::chrono::milliseconds d) const;

  const Clock& clock_;
  store::KeyStore& store_;
  keys::HsmKekRing& ring_;
  keys::KeyManager& keys_;
  jwt::JwtService* const jwt_;
  const std::vector<std::unique_ptr<RewrapTarget>> targets_;
  const RotationOptions options_;
  std::function<void()> on_job_created_;
  metrics::Counter* rewrapped_ = nullptr;
  std::function<void(const coord::InvalidationEvent&)> publish_;

  Mutex start_mu_;  // serializes StartKekRotation on this replica

  // Used only by the scheduler's thread (Check, RunRewrap).
  std::string dek_cursor_;
  int64_t pass_done_ = 0;
  uint64_t pass_failed_ = 0;
  int64_t pass_job_ = 0;
  bool pass_from_start_ = false;
  int64_t retire_due_at_ = 0;  // Unix seconds: retire old KEKs then (0: nothing waits)

  mutable Mutex status_mu_;
  int64_t kek_primary_created_at_ ABSL_GUARDED_BY(status_mu_) = 0;
  bool kek_known_ ABSL_GUARDED_BY(status_mu_) = false;
  int64_t dek_most_overdue_ ABSL_GUARDED_BY(status_mu_) = 0;
  uint64_t dek_pending_ ABSL_GUARDED_BY(status_mu_) = 0;
  bool dek_known_ ABSL_GUARDED_BY(status_mu_) = false;
  int64_t skipped_since_ ABSL_GUARDED_BY(status_mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(status_mu_);
  int64_t running_job_ ABSL_GUARDED_BY(status_mu_) = 0;
};

// "rotation-check", leader only, every options().check_interval.
std::unique_ptr<Job> MakeRotationCheckJob(RotationService& rotation);
// "kek-rewrap", leader only, every `interval` (short: it resumes a running job).
inline constexpr std::chrono::milliseconds kRewrapJobInterval{1000};
std::unique_ptr<Job> MakeKekRewrapJob(RotationService& rotation,
                                      std::chrono::milliseconds interval = kRewrapJobInterval);

// The name of the re-wrap job, for Scheduler::Trigger.
inline constexpr std::string_view kKekRewrapJobName = "kek-rewrap";

}  // namespace kms::sched
