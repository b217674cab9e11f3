#include "src/server/grpc/grpc_status.h"

#include "src/keys/backend_executor.h"
#include "src/server/gate/public_status.h"

namespace kms::server {

grpc::Status ToGrpcStatus(const absl::Status& status, std::string_view operation) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(PublicCode(status))),
                      PublicMessage(status, operation));
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx, const absl::Status& status,
                                      std::string_view operation) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  FinishUnary(ctx, reactor, status, operation);
  return reactor;
}

void FinishUnary(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                 const absl::Status& status, std::string_view operation) {
  // A backend known to be down says when to try again: gRPC's own pushback trailer, which
  // clients with a retry policy honour (gRFC A6).
  if (std::optional<int64_t> retry_ms = keys::RetryAfterOf(status); retry_ms.has_value()) {
    ctx->AddTrailingMetadata("grpc-retry-pushback-ms", std::to_string(*retry_ms));
  }
  reactor->Finish(ToGrpcStatus(status, operation));
}

}  // namespace kms::server
