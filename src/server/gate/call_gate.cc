#include "src/server/gate/call_gate.h"

#include <string>

namespace kms::server {

absl::Status CallGate::Admit(std::string_view identity, authz::Operation op,
                             std::string_view tenant_id) const {
  if (identity.empty()) return absl::PermissionDeniedError("the client certificate has no identity");
  KMS_RETURN_IF_ERROR(authorizer_.Authorize(identity, op, tenant_id));
  if (limiter_ != nullptr) {
    if (std::optional<authz::RateLimit> limit = authorizer_.RateLimitFor(identity)) {
      absl::Status acquired = limiter_->Acquire(identity, limit->rps, limit->burst);
      if (!acquired.ok()) {
        if (rate_limited_ != nullptr && absl::IsResourceExhausted(acquired)) rate_limited_->Increment();
        return acquired;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kms::server
