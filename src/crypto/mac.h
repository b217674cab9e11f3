// Hashes, HMAC and HKDF over OpenSSL (the one module that touches it for symmetric
// crypto): SHA-2 digests (FIPS 180-4), HMAC (RFC 2104 / FIPS 198-1) and HKDF-SHA256
// (RFC 5869). The one home of these in kmsd: the Vault door's hash/hmac endpoints and
// per-key HMAC, the blind index, AWS SigV4 and the XKS integrity value all use it.
// Thread-safe (pure functions).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::crypto {

enum class HashAlgorithm { kSha224, kSha256, kSha384, kSha512 };

// The digest of `data`. INTERNAL only when OpenSSL fails.
absl::StatusOr<std::vector<uint8_t>> Digest(HashAlgorithm algorithm, std::span<const uint8_t> data);

// HMAC-<algorithm> of `data` under `key` (any length). INTERNAL only when OpenSSL fails.
absl::StatusOr<std::vector<uint8_t>> Hmac(HashAlgorithm algorithm, std::span<const uint8_t> key,
                                          std::span<const uint8_t> data);

// SHA-256 and HMAC-SHA-256 into a fixed array, for protocol code (AWS SigV4, the XKS
// integrity value, the blind index). With SHA-256 OpenSSL fails only when out of memory;
// these then abort the process, as any failed allocation does.
inline constexpr size_t kSha256Size = 32;
using Sha256Digest = std::array<uint8_t, kSha256Size>;
Sha256Digest Sha256(std::span<const uint8_t> data);
Sha256Digest Sha256(std::string_view data);
// HMAC-SHA-256 of `data` under `key` (any length, empty included).
Sha256Digest HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data);
Sha256Digest HmacSha256(std::span<const uint8_t> key, std::string_view data);

// Lower-case hex of `bytes`.
std::string LowerHex(std::span<const uint8_t> bytes);

// Equal lengths and bytes, in time independent of where they differ (CRYPTO_memcmp).
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

// `length` bytes of HKDF-SHA256 (RFC 5869) of `ikm` with an empty salt and `info`.
// INVALID_ARGUMENT when length is 0 or above 255 * 32; INTERNAL when OpenSSL fails.
absl::StatusOr<SecretBytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> info,
                                       size_t length);

}  // namespace kms::crypto
