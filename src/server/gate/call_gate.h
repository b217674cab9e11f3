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

// FAILED_PRECONDITION "the key does not allow <op>" when `usage` forbids `op` (encrypt,
// decrypt; reencrypt needs both); OK for every other operation.
absl::Status CheckKeyUsage(const authz::KeyUsage& usage, authz::Operation op);

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
  // granted), or FAILED_PRECONDITION when the identity is granted the operation but the
  // key does not allow it (the policy's per-key operations: an encrypt on a
  // decrypt-only key; checked only after the grant, so it tells nothing to strangers),
  // or RESOURCE_EXHAUSTED ("rate limit exceeded; retry after N ms").
  absl::Status Admit(std::string_view identity, authz::Operation op,
                     std::string_view tenant_id) const;

  // What the key may be used for (the policy's per-key operations), for doors that
  // describe a key (the XKS GetKeyMetadata keyUsage).
  authz::KeyUsage UsageOf(std::string_view tenant_id) const { return authorizer_.UsageOf(tenant_id); }

  // Counts every request refused by the rate limit (kmsd_rate_limited_requests_total);
  // set before serving, may stay null.
  void set_rate_limited_counter(metrics::Counter* counter) { rate_limited_ = counter; }

 private:
  const authz::Authorizer& authorizer_;
  coord::RateLimiter* const limiter_;
  metrics::Counter* rate_limited_ = nullptr;
};

}  // namespace kms::server
