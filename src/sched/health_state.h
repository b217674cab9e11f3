// HealthState: the one source of kmsd's health (DESIGN §7), read by all three signals:
// HTTPS /readyz, grpc.health.v1 and AdminService.GetStatus (and the metrics).
//
// - Phase: kLoading from the process start until every key is loaded (a backend
//   unreachable at start keeps kmsd here, retrying); kServing from then on; kStopping
//   during shutdown. Only kServing is ready.
// - Backends (hsm, store, and redis when configured): up or down as the last periodic
//   probe found them (MakeHealthProbeJob, on the scheduler thread: a probe never runs
//   on a request thread, and a hung backend holds up only the scheduler).
// - Degraded: serving while the HSM or the store is down (cached keys are served from
//   memory). Redis down is not degraded: nothing is lost but the global rate limit and
//   the fast invalidations (the store poll carries them).
//
// Thread-safe; every read is a copy taken under a short lock, with no I/O.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "src/common/sync.h"
#include "src/sched/job.h"

namespace kms::sched {

enum class HealthPhase { kLoading, kServing, kStopping };
enum class Backend { kHsm = 0, kStore = 1, kRedis = 2 };
inline constexpr Backend kAllBackends[] = {Backend::kHsm, Backend::kStore, Backend::kRedis};
// "hsm", "store", "redis": the names in /readyz, GetStatus, the metrics' `backend` label
// and (prefixed "kmsd.") the grpc.health.v1 service names.
std::string_view BackendName(Backend backend);

struct BackendHealth {
  Backend backend = Backend::kHsm;
  std::string name;
  bool up = true;
  int64_t since_unix = 0;  // when it last changed state (0: never probed down)
  std::string detail;      // "ok", or the status code of the failed probe (no backend text)
};

struct HealthSnapshot {
  HealthPhase phase = HealthPhase::kLoading;
  std::string loading_detail;          // what start-up waits for, while loading
  std::vector<BackendHealth> backends;  // hsm, store, then redis when configured
  bool degraded = false;                // serving while the HSM or the store is down
  int64_t degraded_since_unix = 0;      // 0 when not degraded
  int64_t now_unix = 0;                 // when the snapshot was taken

  bool serving() const { return phase == HealthPhase::kServing; }
  // The seconds spent degraded so far (0 when not degraded).
  int64_t degraded_seconds() const { return degraded ? now_unix - degraded_since_unix : 0; }
  const BackendHealth* Find(Backend backend) const;
  // One line for /readyz and logs: "ready", "degraded: store down since ...",
  // "loading: ..." (each line ends in "\n"; the first word is the state).
  std::string Describe() const;
};

class HealthState {
 public:
  // `redis_configured`: whether a redis backend exists to report.
  HealthState(const Clock& clock, bool redis_configured);

  // Start-up: what kmsd waits for ("waiting for the HSM: UNAVAILABLE"); stays loading.
  void SetLoading(std::string detail);
  void SetServing();
  void SetStopping();
  // A probe's result: OK is up, anything else is down (the code is kept, not the text).
  void Report(Backend backend, const absl::Status& probe);

  HealthSnapshot Snapshot() const;

  // Called after every change of phase or of a backend's up/down (not on every probe),
  // with the new snapshot, on the thread that made the change; set before serving.
  void SetListener(std::function<void(const HealthSnapshot&)> listener);

 private:
  HealthSnapshot SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Changed() ABSL_LOCKS_EXCLUDED(mu_, listener_mu_);

  const Clock& clock_;
  // Held while the listener runs, so listeners see changes in order, the last one last.
  Mutex listener_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable Mutex mu_;
  HealthPhase phase_ ABSL_GUARDED_BY(mu_) = HealthPhase::kLoading;
  std::string loading_detail_ ABSL_GUARDED_BY(mu_) = "starting";
  std::vector<BackendHealth> backends_ ABSL_GUARDED_BY(mu_);
  int64_t degraded_since_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(const HealthSnapshot&)> listener_;  // set before serving
};

// "health-probe", every `interval` on every replica: runs each probe and reports it.
// `redis` may be empty (no Redis); it answers from the bus's own connection state.
// Returns UNAVAILABLE naming the backends that are down (the scheduler records it).
struct HealthProbes {
  std::function<absl::Status()> hsm;
  std::function<absl::Status()> store;
  std::function<absl::Status()> redis;
};
std::unique_ptr<Job> MakeHealthProbeJob(HealthState& health, HealthProbes probes,
                                        std::chrono::milliseconds interval);

}  // namespace kms::sched
