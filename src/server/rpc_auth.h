// CallGate: what every RPC passes before it does anything — the caller's certificate
// identity, the policy's grant for the operation and tenant, and the identity's rate
// limit (global through Redis when configured, else per replica).
#pragma once

#include <string>
#include <string_view>

#include "grpcpp/server_context.h"
#include "kms/authz/authorizer.h"
#include "kms/coord/coordination.h"
#include "src/authz/policy.h"

namespace kms::server {

class CallGate {
 public:
  // `limiter` may be null (no rate limits enforced).
  CallGate(const authz::PolicyAuthorizer& policy, coord::RateLimiter* limiter)
      : policy_(policy), limiter_(limiter) {}

  // Operations that act on every tenant at once (listing tenants, rotating the KEK)
  // pass kEveryTenant: only a grant of all tenants ("*") allows them.
  static constexpr std::string_view kEveryTenant = "*";

  // OK, or PERMISSION_DENIED (no identity, or not granted), or RESOURCE_EXHAUSTED
  // ("rate limit exceeded; retry after N ms"). Sets *identity_out when given.
  absl::Status Admit(const grpc::CallbackServerContext& ctx, authz::Operation op,
                     std::string_view tenant_id, std::string* identity_out = nullptr) const;

 private:
  const authz::PolicyAuthorizer& policy_;
  coord::RateLimiter* const limiter_;
};

}  // namespace kms::server
