// Input checks shared by every data-plane RPC (single and batch items), before any
// key is touched. Messages describe the problem without echoing the input.
#pragma once

#include <string>
#include <vector>

#include "google/protobuf/map.h"
#include "kms/common/status.h"
#include "src/config/config.h"
#include "src/crypto/field_cipher.h"

namespace kms::server {

using ProtoContext = google::protobuf::Map<std::string, std::string>;

// Checks the context's size and returns it as views into the proto map (valid while
// the request lives).
absl::StatusOr<std::vector<crypto::ContextPair>> ValidateContext(const ProtoContext& context,
                                                                 const config::LimitsConfig& limits);

absl::Status ValidatePlaintext(const std::string& plaintext, const config::LimitsConfig& limits);
absl::Status ValidateCiphertext(const std::string& ciphertext, const config::LimitsConfig& limits);
absl::Status ValidateBatchSize(int items, const config::LimitsConfig& limits);

}  // namespace kms::server
