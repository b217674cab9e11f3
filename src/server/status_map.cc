#include "src/server/status_map.h"

#include "spdlog/spdlog.h"

namespace kms::server {

std::string SanitizedMessage(const absl::Status& status, std::string_view operation) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return "";
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
      return std::string(status.message());
    case absl::StatusCode::kUnavailable:
      spdlog::warn("{}: backend unavailable: {}", operation, std::string(status.message()));
      return "a key backend is unavailable; retry with backoff";
    default:
      spdlog::error("{}: {}: {}", operation, absl::StatusCodeToString(status.code()),
                    std::string(status.message()));
      return "internal error";
  }
}

grpc::Status ToGrpcStatus(const absl::Status& status, std::string_view operation) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  auto code = static_cast<grpc::StatusCode>(static_cast<int>(status.code()));
  if (status.code() == absl::StatusCode::kDataLoss) code = grpc::StatusCode::INTERNAL;
  return grpc::Status(code, SanitizedMessage(status, operation));
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx, const absl::Status& status,
                                      std::string_view operation) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status, operation));
  return reactor;
}

}  // namespace kms::server
