// HMAC-SHA256 (RFC 2104, FIPS 198-1) over OpenSSL, for blind indexes.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::crypto {

inline constexpr size_t kHmacSha256Size = 32;

// HMAC-SHA256(key, data). INVALID_ARGUMENT for an empty key; INTERNAL if OpenSSL fails.
// Thread-safe.
absl::StatusOr<std::array<uint8_t, kHmacSha256Size>> HmacSha256(const SecretBytes& key,
                                                                std::span<const uint8_t> data);

}  // namespace kms::crypto
