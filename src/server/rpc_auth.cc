#include "src/server/rpc_auth.h"

#include "src/server/identity.h"

namespace kms::server {

absl::Status AuthorizeCall(const grpc::CallbackServerContext& ctx, const authz::Authorizer& authz,
                           authz::Operation op, std::string_view tenant_id,
                           std::string* identity_out) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  std::string identity = auth ? PeerIdentity(*auth) : "";
  if (identity.empty()) return absl::PermissionDeniedError("the client certificate has no identity");
  absl::Status allowed = authz.Authorize(identity, op, tenant_id);
  if (identity_out) *identity_out = std::move(identity);
  return allowed;
}

}  // namespace kms::server
