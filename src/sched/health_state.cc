#include "src/sched/health_state.h"

#include "src/keys/backend_executor.h"

#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kms::sched {

namespace {

std::string Rfc3339(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool CountsForDegraded(Backend b) { return b == Backend::kHsm || b == Backend::kStore; }

}  // namespace

std::string_view BackendName(Backend backend) {
  switch (backend) {
    case Backend::kHsm: return "hsm";
    case Backend::kStore: return "store";
    case Backend::kRedis: return "redis";
  }
  return "unknown";
}

const BackendHealth* HealthSnapshot::Find(Backend backend) const {
  for (const BackendHealth& b : backends) {
    if (b.backend == backend) return &b;
  }
  return nullptr;
}

std::string HealthSnapshot::Describe() const {
  switch (phase) {
    case HealthPhase::kLoading: return absl::StrCat("loading: ", loading_detail, "\n");
    case HealthPhase::kStopping: return "stopping\n";
    case HealthPhase::kServing: break;
  }
  std::vector<std::string> down;
  for (const BackendHealth& b : backends) {
    if (!b.up) down.push_back(absl::StrCat(b.name, " down since ", Rfc3339(b.since_unix), " (", b.detail, ")"));
  }
  if (degraded) {
    return absl::StrCat("degraded: ", absl::StrJoin(down, ", "),
                        "; serving cached keys from memory\n");
  }
  if (!down.empty()) return absl::StrCat("ready; ", absl::StrJoin(down, ", "), "\n");
  return "ready\n";
}

HealthState::HealthState(const Clock& clock, bool redis_configured) : clock_(clock) {
  for (Backend b : kAllBackends) {
    if (b == Backend::kRedis && !redis_configured) continue;
    backends_.push_back(BackendHealth{.backend = b, .name = std::string(BackendName(b)), .detail = "ok"});
  }
}

void HealthState::SetLoading(std::string detail) {
  {
    MutexLock lock(&mu_);
    if (phase_ == HealthPhase::kLoading && loading_detail_ == detail) return;
    phase_ = HealthPhase::kLoading;
    loading_detail_ = std::move(detail);
  }
  Changed();
}

void HealthState::SetServing() {
  {
    MutexLock lock(&mu_);
    phase_ = HealthPhase::kServing;
    loading_detail_.clear();
  }
  Changed();
}

void HealthState::SetStopping() {
  {
    MutexLock lock(&mu_);
    phase_ = HealthPhase::kStopping;
  }
  Changed();
}

void HealthState::Report(Backend backend, const absl::Status& probe) {
  {
    MutexLock lock(&mu_);
    const int64_t now = clock_.UnixSeconds();
    bool changed = false;
    for (BackendHealth& b : backends_) {
      if (b.backend != backend) continue;
      // A call that got no answer by its deadline: "hung", not merely down.
      const std::string detail =
          probe.ok() ? "ok"
                     : absl::StrCat(absl::StatusCodeToString(probe.code()),
                                    keys::IsHung(probe) ? " (hung)" : "");
      if (b.up != probe.ok()) {
        b.up = probe.ok();
        b.since_unix = now;
        changed = true;
      }
      b.detail = detail;
    }
    if (!changed) return;
    bool degraded = false;
    for (const BackendHealth& b : backends_) degraded |= CountsForDegraded(b.backend) && !b.up;
    if (degraded && degraded_since_ == 0) degraded_since_ = now;
    if (!degraded) degraded_since_ = 0;
  }
  Changed();
}

HealthSnapshot HealthState::SnapshotLocked() const {
  HealthSnapshot s;
  s.phase = phase_;
  s.loading_detail = loading_detail_;
  s.backends = backends_;
  s.now_unix = clock_.UnixSeconds();
  s.degraded = phase_ == HealthPhase::kServing && degraded_since_ != 0;
  s.degraded_since_unix = s.degraded ? degraded_since_ : 0;
  return s;
}

HealthSnapshot HealthState::Snapshot() const {
  MutexLock lock(&mu_);
  return SnapshotLocked();
}

void HealthState::SetListener(std::function<void(const HealthSnapshot&)> listener) {
  listener_ = std::move(listener);
}

void HealthState::Changed() {
  if (!listener_) return;
  MutexLock lock(&listener_mu_);
  listener_(Snapshot());
}

std::unique_ptr<Job> MakeHealthProbeJob(HealthState& health, HealthProbes probes,
                                        std::chrono::milliseconds interval) {
  return MakeJob("health-probe", interval, /*leader_only=*/false,
                 [&health, probes = std::move(probes)](const JobContext&) -> absl::Status {
                   std::vector<std::string> down;
                   auto probe = [&](Backend b, const std::function<absl::Status()>& fn) {
                     if (!fn) return;
                     absl::Status s = fn();
                     health.Report(b, s);
                     if (!s.ok()) down.push_back(std::string(BackendName(b)));
                   };
                   probe(Backend::kHsm, probes.hsm);
                   probe(Backend::kStore, probes.store);
                   probe(Backend::kRedis, probes.redis);
                   if (down.empty()) return absl::OkStatus();
                   return absl::UnavailableError(absl::StrCat("down: ", absl::StrJoin(down, ", ")));
                 });
}

}  // namespace kms::sched
