// The encryption context of a field ciphertext (DESIGN §2; AWS KMS calls it the same):
// caller-chosen key/value pairs bound into the AAD, which must be given again to
// decrypt, e.g. {"table":"users","column":"email"}. A domain type, so that doors speak
// it instead of the crypto layer's types.
#pragma once

#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "kms/common/status.h"

namespace kms::keys {

// Bytes a field ciphertext adds to its plaintext: version (1), DEK version (4), nonce
// (12), tag (16). key_manager.cc checks it against the format (src/crypto/field_cipher.h).
inline constexpr size_t kCiphertextOverhead = 33;

// One key/value pair, viewing the caller's strings (the crypto layer's ContextPair).
using ContextPair = std::pair<std::string_view, std::string_view>;

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
  std::span<const ContextPair> pairs() const { return pairs_; }

 private:
  std::vector<ContextPair> pairs_;
  size_t bytes_ = 0;
};

}  // namespace kms::keys
