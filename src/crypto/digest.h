// SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104), for formats and protocols that need a
// digest: AWS SigV4 request signing, the XKS ciphertext data integrity value. Pure
// functions, thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "src/crypto/mac.h"  // ConstantTimeEquals

namespace kms::crypto {

using Sha256Digest = std::array<uint8_t, 32>;

Sha256Digest Sha256(std::span<const uint8_t> data);
Sha256Digest Sha256(std::string_view data);

// HMAC-SHA-256 of `data` under `key` (any length).
Sha256Digest HmacSha256(std::span<const uint8_t> key, std::string_view data);

// Lower-case hex of `bytes`.
std::string LowerHex(std::span<const uint8_t> bytes);


}  // namespace kms::crypto
