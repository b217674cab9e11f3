// The gRPC door's status mapping: the one place where an absl::Status becomes a
// grpc::Status (codes and sanitized messages as gate/public_status.h decides).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace kms::server {

grpc::Status ToGrpcStatus(const absl::Status& status, std::string_view operation);

// Finishes a unary callback RPC with `status`, mapped as above.
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx, const absl::Status& status,
                                      std::string_view operation);
// The same with the reactor already taken (ctx->DefaultReactor() may be called only once),
// from any thread.
void FinishUnary(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                 const absl::Status& status, std::string_view operation);

}  // namespace kms::server
