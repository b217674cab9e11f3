// Per-RPC authorization: the caller's certificate identity against the policy.
#pragma once

#include <string>
#include <string_view>

#include "grpcpp/server_context.h"
#include "kms/authz/authorizer.h"

namespace kms::server {

// The identity of the caller; PERMISSION_DENIED when it may not perform `op` on
// `tenant_id` (or has no identity at all).
absl::Status AuthorizeCall(const grpc::CallbackServerContext& ctx, const authz::Authorizer& authz,
                           authz::Operation op, std::string_view tenant_id,
                           std::string* identity_out = nullptr);

}  // namespace kms::server
