#include "src/server/gate/request_limits.h"

namespace kms::server {

absl::Status ValidatePlaintext(std::string_view plaintext, const config::LimitsConfig& limits) {
  if (plaintext.empty()) return absl::InvalidArgumentError("plaintext is empty");
  if (static_cast<int64_t>(plaintext.size()) > limits.max_plaintext_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("plaintext is larger than ", limits.max_plaintext_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCiphertext(std::string_view ciphertext, const config::LimitsConfig& limits) {
  if (ciphertext.empty()) return absl::InvalidArgumentError("ciphertext is empty");
  if (static_cast<int64_t>(ciphertext.size()) >
      limits.max_plaintext_bytes + static_cast<int64_t>(keys::kCiphertextOverhead)) {
    return absl::InvalidArgumentError("ciphertext is larger than any this server produces");
  }
  return absl::OkStatus();
}

absl::Status ValidateBatchSize(int items, const config::LimitsConfig& limits) {
  if (items == 0) return absl::InvalidArgumentError("batch has no items");
  if (items > limits.max_batch_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch has more than ", limits.max_batch_items, " items"));
  }
  return absl::OkStatus();
}

}  // namespace kms::server
