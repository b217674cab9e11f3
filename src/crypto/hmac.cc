#include "src/crypto/hmac.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace kms::crypto {

absl::StatusOr<std::array<uint8_t, kHmacSha256Size>> HmacSha256(const SecretBytes& key,
                                                                std::span<const uint8_t> data) {
  if (key.empty()) return absl::InvalidArgumentError("HMAC key is empty");
  std::array<uint8_t, kHmacSha256Size> mac{};
  unsigned int len = 0;
  static const uint8_t kEmpty = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           data.empty() ? &kEmpty : data.data(), data.size(), mac.data(), &len) == nullptr ||
      len != mac.size()) {
    return absl::InternalError("HMAC-SHA256 failed");
  }
  return mac;
}

}  // namespace kms::crypto
