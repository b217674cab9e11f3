#include "src/server/gate/call_gate.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace kms::server {

absl::Status CheckKeyUsage(const authz::KeyUsage& usage, authz::Operation op) {
  const bool encrypts = op == authz::Operation::kEncrypt || op == authz::Operation::kReEncrypt;
  const bool decrypts = op == authz::Operation::kDecrypt || op == authz::Operation::kReEncrypt;
  if ((encrypts && !usage.encrypt) || (decrypts && !usage.decrypt)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the key does not allow ", std::string(authz::OperationName(op))));
  }
  return absl::OkStatus();
}

absl::Status CallGate::Admit(std::string_view identity, authz::Operation op,
                             std::string_view tenant_id) const {
  if (identity.empty()) return absl::PermissionDeniedError("the client certificate has no identity");
  KMS_RETURN_IF_ERROR(authorizer_.Authorize(identity, op, tenant_id));
  if (!tenant_id.empty() && tenant_id != kEveryTenant) {
    KMS_RETURN_IF_ERROR(CheckKeyUsage(authorizer_.UsageOf(tenant_id), op));
  }
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
