// Input checks shared by every door's data-plane operations (single and batch items),
// before any key is touched. Limits come from the config's `limits` section. Messages
// describe the problem without echoing the input.
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"
#include "kms/common/status.h"
#include "src/config/config.h"
#include "src/keys/encryption_context.h"

namespace kms::server {

// The encryption context from any map of string pairs (a proto map, a JSON object
// read into a map): at most limits.max_context_pairs entries and
// limits.max_context_bytes bytes of keys and values; no empty key. The context views
// the map's strings: valid while the map lives. INVALID_ARGUMENT otherwise.
template <typename Map>
absl::StatusOr<keys::EncryptionContext> ValidateContext(const Map& context,
                                                        const config::LimitsConfig& limits) {
  if (static_cast<int64_t>(context.size()) > limits.max_context_pairs) {
    return absl::InvalidArgumentError(
        absl::StrCat("context has more than ", limits.max_context_pairs, " entries"));
  }
  keys::EncryptionContext out;
  out.Reserve(context.size());
  for (const auto& [key, value] : context) {
    KMS_RETURN_IF_ERROR(out.Add(std::string_view(key), std::string_view(value)));
  }
  if (static_cast<int64_t>(out.bytes()) > limits.max_context_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("context is larger than ", limits.max_context_bytes, " bytes"));
  }
  return out;
}

// INVALID_ARGUMENT when empty or over limits.max_plaintext_bytes.
absl::Status ValidatePlaintext(std::string_view plaintext, const config::LimitsConfig& limits);
// INVALID_ARGUMENT when empty or longer than any ciphertext of a maximal plaintext.
absl::Status ValidateCiphertext(std::string_view ciphertext, const config::LimitsConfig& limits);
// INVALID_ARGUMENT when 0 or over limits.max_batch_items.
absl::Status ValidateBatchSize(int items, const config::LimitsConfig& limits);

}  // namespace kms::server
