#include "src/server/gate/public_status.h"

#include "spdlog/spdlog.h"

namespace kms::server {

std::string PublicMessage(const absl::Status& status, std::string_view operation) {
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

absl::StatusCode PublicCode(const absl::Status& status) {
  return status.code() == absl::StatusCode::kDataLoss ? absl::StatusCode::kInternal
                                                      : status.code();
}

}  // namespace kms::server
