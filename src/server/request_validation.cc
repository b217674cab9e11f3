#include "src/server/request_validation.h"

#include "absl/strings/str_cat.h"

namespace kms::server {

absl::StatusOr<std::vector<crypto::ContextPair>> ValidateContext(
    const ProtoContext& context, const config::LimitsConfig& limits) {
  if (static_cast<int64_t>(context.size()) > limits.max_context_pairs) {
    return absl::InvalidArgumentError(
        absl::StrCat("context has more than ", limits.max_context_pairs, " entries"));
  }
  std::vector<crypto::ContextPair> pairs;
  pairs.reserve(context.size());
  int64_t bytes = 0;
  for (const auto& [key, value] : context) {
    if (key.empty()) return absl::InvalidArgumentError("context keys must not be empty");
    bytes += static_cast<int64_t>(key.size() + value.size());
    pairs.emplace_back(key, value);
  }
  if (bytes > limits.max_context_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("context is larger than ", limits.max_context_bytes, " bytes"));
  }
  return pairs;
}

absl::Status ValidatePlaintext(const std::string& plaintext, const config::LimitsConfig& limits) {
  if (plaintext.empty()) return absl::InvalidArgumentError("plaintext is empty");
  if (static_cast<int64_t>(plaintext.size()) > limits.max_plaintext_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("plaintext is larger than ", limits.max_plaintext_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCiphertext(const std::string& ciphertext, const config::LimitsConfig& limits) {
  if (ciphertext.empty()) return absl::InvalidArgumentError("ciphertext is empty");
  if (static_cast<int64_t>(ciphertext.size()) >
      limits.max_plaintext_bytes + static_cast<int64_t>(crypto::kFieldOverhead)) {
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
