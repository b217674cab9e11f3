// The encryption context of a field ciphertext (DESIGN §2; AWS KMS calls it the same):
// caller-chosen key/value pairs bound into the AAD, which must be given again to
// decrypt, e.g. {"table":"users","column":"email"}. A domain type, so that doors speak
// it instead of the crypto layer's types.
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "kms/common/status.h"
#include "src/crypto/field_cipher.h"

namespace kms::keys {

// Bytes a field ciphertext adds to its plaintext (version, DEK version, nonce, tag).
inline constexpr size_t kCiphertextOverhead = crypto::kFieldOverhead;

// Views into the caller's strings: valid while they live. Keys are non-empty; their
// order does not matter; a duplicate key fails at Encrypt/Decrypt (INVALID_ARGUMENT).
class EncryptionContext {
 public:
  EncryptionContext() = default;

  // INVALID_ARGUMENT for an empty key.
  absl::Status Add(std::string_view key, std::string_view value) {
    if (key.empty()) return absl::InvalidArgumentError("context keys must not be empty");
    pairs_.emplace_back(key, value);
    bytes_ += key.size() + value.size();
    return absl::OkStatus();
  }
  void Reserve(size_t n) { pairs_.reserve(n); }

  size_t size() const { return pairs_.size(); }
  size_t bytes() const { return bytes_; }  // keys and values, summed
  std::span<const crypto::ContextPair> pairs() const { return pairs_; }

 private:
  std::vector<crypto::ContextPair> pairs_;
  size_t bytes_ = 0;
};

}  // namespace kms::keys
