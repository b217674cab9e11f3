#include "src/server/rpc_auth.h"

#include "src/server/identity.h"

namespace kms::server {

absl::Status CallGate::Admit(const grpc::CallbackServerContext& ctx, authz::Operation op,
                             std::string_view tenant_id, std::string* identity_out) const {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  std::string identity = auth ? PeerIdentity(*auth) : "";
  if (identity.empty()) return absl::PermissionDeniedError("the client certificate has no identity");
  KMS_RETURN_IF_ERROR(policy_.Authorize(identity, op, tenant_id));
  if (limiter_ != nullptr) {
    if (std::optional<authz::RateLimit> limit = policy_.RateLimitFor(identity)) {
      KMS_RETURN_IF_ERROR(limiter_->Acquire(identity, limit->rps, limit->burst));
    }
  }
  if (identity_out) *identity_out = std::move(identity);
  return absl::OkStatus();
}

}  // namespace kms::server
