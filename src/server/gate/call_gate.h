// CallGate: the one gate every door passes (gRPC services, HTTPS endpoints, and later the
// Vault, XKS and Kubernetes KMS doors) before a domain operation runs: the caller's
// identity, the policy's grant for the operation and tenant, and the identity's rate
// limit (global through Redis when configured, else per replica). Audit and metrics
// join here. It knows no transport: each door turns its credential into an identity
// (gate/identity.h) and asks the gate.
#pragma once

#include <string_view>

#include "kms/authz/authorizer.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "kms/metrics/metrics.h"

namespace kms::server {

// Thread-safe (the authorizer and limiter are).
class CallGate {
 public:
  // `limiter` may be null (no rate limits enforced). Both must outlive the gate.
  CallGate(const authz::Authorizer& authorizer, coord::RateLimiter* limiter)
      : authorizer_(authorizer), limiter_(limiter) {}

  // Operations that act on every tenant at once (listing tenants, rotating the KEK)
  // pass kEveryTenant: only a grant of all tenants ("*") allows them. Operations that
  // are about no tenant pass "".
  static constexpr std::string_view kEveryTenant = "*";

  // OK, or PERMISSION_DENIED (empty identity: the credential named none; or not
  // granted), or RESOURCE_EXHAUSTED ("rate limit exceeded; retry after N ms").
  absl::Status Admit(std::string_view identity, authz::Operation op,
                     std::string_view tenant_id) const;

  // Counts every request refused by the rate limit (kmsd_rate_limited_requests_total);
  // set before serving, may stay null.
  void set_rate_limited_counter(metrics::Counter* counter) { rate_limited_ = counter; }

 private:
  const authz::Authorizer& authorizer_;
  coord::RateLimiter* const limiter_;
  metrics::Counter* rate_limited_ = nullptr;
};

}  // namespace kms::server
