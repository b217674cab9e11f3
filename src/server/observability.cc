#include "src/server/observability.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kms::server {

namespace {

using metrics::Labels;
using sched::RotatingKey;

// The age of a key created at `created` (0: unknown, reported as 0).
double Age(int64_t now, int64_t created) { return created == 0 ? 0.0 : static_cast<double>(now - created); }

}  // namespace

void RegisterHealthMetrics(metrics::Registry& r, const sched::HealthState& health,
                           const std::string& version) {
  r.AddGaugeFunction("kmsd_build_info", "Always 1; the labels name the running build.",
                     {{"version", version}}, [] { return 1.0; });
  // --- Health
  for (sched::Backend b : sched::kAllBackends) {
    if (b == sched::Backend::kRedis && health.Snapshot().Find(b) == nullptr) continue;
    r.AddGaugeFunction("kmsd_backend_up",
                       "1 when the backend answered its last health probe, else 0.",
                       {{"backend", std::string(sched::BackendName(b))}}, [&health, b] {
                         sched::HealthSnapshot snap = health.Snapshot();
                         const sched::BackendHealth* h = snap.Find(b);
                         return h != nullptr && h->up ? 1.0 : 0.0;
                       });
  }
  r.AddGaugeFunction("kmsd_ready", "1 when kmsd serves (keys loaded), else 0 (loading, stopping).",
                     {}, [&health] { return health.Snapshot().serving() ? 1.0 : 0.0; });
  r.AddGaugeFunction("kmsd_degraded",
                     "1 while serving from memory because the HSM or the store is down.", {},
                     [&health] { return health.Snapshot().degraded ? 1.0 : 0.0; });
  r.AddGaugeFunction("kmsd_degraded_seconds",
                     "Seconds spent in degraded mode so far (0 when not degraded).", {},
                     [&health] { return static_cast<double>(health.Snapshot().degraded_seconds()); });
}

OperationalMetrics RegisterKmsdMetrics(metrics::Registry& r, const MetricSources& s) {
  const Clock& clock = *s.clock;
  keys::KeyManager& keys = *s.keys;
  hsm::ResilientHsm& hsm = *s.hsm;
  jwt::JwtService& jwt = *s.jwt;
  const sched::KeyStateCache& key_state = *s.key_state;

  // --- Key ages and rotation
  auto jwt_signing_created = [&jwt]() -> int64_t {
    jwt::JwtServiceStatus st = jwt.Status();
    for (const jwt::JwtKeyStatus& k : st.keys) {
      if (k.kid == st.signing_kid) return k.created_at;
    }
    return 0;
  };
  auto created_at = [&key_state, jwt_signing_created](RotatingKey key) -> int64_t {
    switch (key) {
      case RotatingKey::kKek: return key_state.kek_primary_created_at();
      case RotatingKey::kDek: return key_state.dek_oldest_primary_created_at();
      case RotatingKey::kJwt: return jwt_signing_created();
    }
    return 0;
  };
  r.AddGaugeFunction("kmsd_kek_primary_age_seconds",
                     "Age of the primary KEK version (new DEKs and JWT keys are wrapped under it).",
                     {}, [&clock, created_at] { return Age(clock.UnixSeconds(), created_at(RotatingKey::kKek)); });
  r.AddGaugeFunction("kmsd_dek_primary_oldest_age_seconds",
                     "Age of the oldest primary DEK among active tenants (0: no tenant).", {},
                     [&clock, created_at] { return Age(clock.UnixSeconds(), created_at(RotatingKey::kDek)); });
  r.AddGaugeFunction("kmsd_jwt_signing_key_age_seconds",
                     "Age of the JWT key that signs now (since it was created).", {},
                     [&clock, created_at] { return Age(clock.UnixSeconds(), created_at(RotatingKey::kJwt)); });
  for (RotatingKey key : sched::kAllRotatingKeys) {
    const Labels labels = {{"key", std::string(sched::RotatingKeyName(key))}};
    auto due = [&clock, &key_state, &jwt, created_at, key]() -> double {
      if (key == RotatingKey::kJwt) {
        // The JWT service knows its next rotation (0 while one is in progress).
        const int64_t next = jwt.Status().next_rotation_at;
        return next == 0 ? 0.0 : static_cast<double>(next - clock.UnixSeconds());
      }
      const int64_t period = key_state.rotation_period(key);
      const int64_t created = created_at(key);
      if (period <= 0 || created == 0) return 0.0;
      return static_cast<double>(created + period - clock.UnixSeconds());
    };
    r.AddGaugeFunction("kmsd_key_rotation_due_seconds",
                       "Seconds until the key's scheduled rotation is due; negative once overdue.",
                       labels, due);
    r.AddGaugeFunction("kmsd_key_rotation_overdue",
                       "1 when the key is past its rotation period, else 0.", labels,
                       [due] { return due() < 0 ? 1.0 : 0.0; });
    r.AddGaugeFunction("kmsd_key_rotation_period_seconds",
                       "The rotation period in force for the key (0: no schedule).", labels,
                       [&key_state, key] {
                         return static_cast<double>(key_state.rotation_period(key));
                       });
  }
  r.AddGaugeFunction("kmsd_key_state_refreshed_timestamp_seconds",
                     "When the key ages were last read from the store (Unix seconds).", {},
                     [&key_state] { return static_cast<double>(key_state.last_refresh_unix()); });

  // --- JWT lifecycle
  for (jwt::KeyLifecycleState state : jwt::kAllKeyLifecycleStates) {
    r.AddGaugeFunction("kmsd_jwt_key_state",
                       "The JWT signing keys' lifecycle state: 1 for the current state, 0 for the others.",
                       {{"state", std::string(jwt::KeyLifecycleStateName(state))}},
                       [&jwt, state] { return jwt.Status().state == state ? 1.0 : 0.0; });
  }

  r.AddGaugeFunction("kmsd_key_max_age_seconds",
                     "KEY_MAX_AGE: how long keys may be served from memory while degraded.", {},
                     [v = s.key_max_age_seconds] { return static_cast<double>(v); });

  // --- DEK cache
  r.AddCounterFunction("kmsd_dek_cache_hits_total", "DEK lookups answered from the cache.", {},
                       [&keys] { return keys.cache().stats().hits; });
  r.AddCounterFunction("kmsd_dek_cache_misses_total",
                       "DEK lookups that had to load the DEK (store read and HSM unwrap).", {},
                       [&keys] { return keys.cache().stats().misses; });
  r.AddCounterFunction("kmsd_dek_cache_evictions_total",
                       "DEKs dropped from the cache to stay within dek_cache.max_entries.", {},
                       [&keys] { return keys.cache().stats().evictions; });
  r.AddCounterFunction("kmsd_dek_cache_stale_served_total",
                       "DEK loads that failed with a backend down and served the expired entry.",
                       {}, [&keys] { return keys.cache().stats().stale_served; });
  r.AddGaugeFunction("kmsd_dek_cache_entries", "DEK versions in the cache now.", {},
                     [&keys] { return static_cast<double>(keys.cached_deks()); });

  // --- HSM
  for (size_t i = 0; i < hsm::kHsmOperationCount; ++i) {
    const auto op = static_cast<hsm::HsmOperation>(i);
    const Labels labels = {{"operation", std::string(hsm::HsmOperationName(op))}};
    r.AddCounterFunction("kmsd_hsm_errors_total", "HSM operations that failed, by operation.",
                         labels, [&hsm, i] { return hsm.stats().errors_by_operation[i]; });
    r.AddCounterFunction(
        "kmsd_hsm_operations_total", "HSM operations attempted, by operation.", labels,
        [&hsm, op, i]() -> uint64_t {
          const hsm::HsmStats st = hsm.stats();
          const uint64_t failed = st.errors_by_operation[i];
          switch (op) {
            case hsm::HsmOperation::kSeal: return st.seals + failed;
            case hsm::HsmOperation::kOpen: return st.opens + failed;
            case hsm::HsmOperation::kLoadKek: return st.kek_loads + failed;
            case hsm::HsmOperation::kPing: return st.pings;
            case hsm::HsmOperation::kCreateKek: return st.kek_creates;
            case hsm::HsmOperation::kUnloadKek: return failed;  // successes are not counted
          }
          return failed;
        });
  }
  r.AddGaugeFunction("kmsd_hsm_sessions_in_use", "PKCS#11 sessions lent to an operation now.", {},
                     [&hsm] { return static_cast<double>(hsm.stats().sessions_in_use); });
  r.AddGaugeFunction("kmsd_hsm_sessions_max", "The PKCS#11 session pool's bound (hsm.max_sessions).",
                     {}, [&hsm] { return static_cast<double>(hsm.stats().sessions_max); });
  r.AddCounterFunction("kmsd_hsm_reinitializations_total",
                       "Times the HSM layer re-initialized the PKCS#11 module after a failure.", {},
                       [&hsm] { return hsm.reinitializations(); });
  r.AddGaugeFunction("kmsd_hsm_pin_rejected",
                     "1 while the token refuses the PIN (no login is retried until the PIN file "
                     "changes).",
                     {}, [&hsm] { return hsm.permanent_failure() ? 1.0 : 0.0; });

  // --- Re-wrap, audit, rate limits
  r.AddGaugeFunction("kmsd_rewrap_backlog",
                     "DEK versions still wrapped under a KEK version other than the primary.", {},
                     [&key_state] { return static_cast<double>(key_state.rewrap_backlog()); });
  OperationalMetrics out;
  out.rewrapped_keys = &r.AddCounter("kmsd_rewrapped_keys_total",
                                     "Keys the re-wrap job moved to the primary KEK version.");
  out.audit_backlog = &r.AddGauge("kmsd_audit_backlog", "Audit records queued and not yet stored.");
  out.audit_dropped = &r.AddCounter("kmsd_audit_dropped_total",
                                    "Audit records dropped because the queue was full.");
  out.rate_limited = &r.AddCounter("kmsd_rate_limited_requests_total",
                                   "Requests refused by an identity's rate limit.");
  return out;
}

}  // namespace kms::server
