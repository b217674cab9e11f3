#include "src/server/gate/public_status.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "src/keys/backend_executor.h"

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
      // Failing fast while a backend is known down: the circuit logged the outage once;
      // one line per request would flood the log.
      if (std::optional<int64_t> retry_ms = keys::RetryAfterOf(status); retry_ms.has_value()) {
        return absl::StrCat("a key backend is unavailable; retry after ", *retry_ms, " ms");
      }
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
