// The one place where an absl::Status becomes a grpc::Status.
//
// Codes pass through. Messages of the codes our own validation produces (invalid
// argument, not found, permission denied, ...) are written for callers and pass
// through; messages of backend failures (UNAVAILABLE, INTERNAL, DATA_LOSS, ...) may
// carry HSM or database internals, so callers get a generic sentence and the detail
// goes to the log.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace kms::server {

grpc::Status ToGrpcStatus(const absl::Status& status, std::string_view operation);

// The sanitized message alone, for batch item errors.
std::string SanitizedMessage(const absl::Status& status, std::string_view operation);

// Finishes a unary callback RPC with `status`, mapped as above.
grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx, const absl::Status& status,
                                      std::string_view operation);

}  // namespace kms::server
