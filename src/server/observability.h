// The series kmsd exposes on /metrics (docs/metrics.md lists each one), registered from
// the parts the wiring built. Every series is either a lock-free instrument updated where
// the event happens (RPCs in ServeUnary, rate-limit refusals in the CallGate) or a
// function read at scrape time from in-memory state (cache and HSM counters, health,
// key ages refreshed by the scheduler's "key-state" job): a scrape never waits on the
// HSM or the store.
#pragma once

#include <cstdint>
#include <string>

#include "kms/common/clock.h"
#include "kms/metrics/metrics.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/hsm/resilient_hsm.h"
#include "src/jwt/jwt_service.h"
#include "src/keys/key_manager.h"
#include "src/sched/health_state.h"
#include "src/sched/key_state.h"

namespace kms::server {

struct MetricSources {
  const Clock* clock = nullptr;
  keys::KeyManager* keys = nullptr;
  hsm::ResilientHsm* hsm = nullptr;
  jwt::JwtService* jwt = nullptr;
  const sched::KeyStateCache* key_state = nullptr;
  int64_t key_max_age_seconds = 0;  // KEY_MAX_AGE
  std::string version;
};

// Instruments other parts update, handed out by the wiring.
struct OperationalMetrics {
  // The audit log's queue of records not yet written, and records it had to drop.
  metrics::Gauge* audit_backlog = nullptr;
  metrics::Counter* audit_dropped = nullptr;
  // Keys the re-wrap job has moved to the primary KEK (rate() of it is the re-wrap rate).
  metrics::Counter* rewrapped_keys = nullptr;
  // Requests the CallGate refused for the rate limit.
  metrics::Counter* rate_limited = nullptr;
};

// The series that exist from the process start, loading included (kmsd_ready,
// kmsd_backend_up, kmsd_degraded*, kmsd_build_info): `health` must outlive the registry's use.
void RegisterHealthMetrics(metrics::Registry& registry, const sched::HealthState& health,
                           const std::string& version);

// Registers every other kmsd series on `registry`, once the parts are built. Every
// pointer of `sources` must be set and outlive the registry's use.
OperationalMetrics RegisterKmsdMetrics(metrics::Registry& registry, const MetricSources& sources);

}  // namespace kms::server
