// Raw AEAD ciphertexts: AES-256-GCM output handed back in pieces (IV, ciphertext, tag)
// rather than as one envelope, in the shape of the AWS KMS External Key Store proxy API
// v1 (aws/aws-kms-xksproxy-api-spec, v1.0.3, "Encrypt" and "Decrypt").
//
// ciphertextMetadata (kmsd's vendor bytes, at most 20 by the specification), version 1:
//
//   offset  size  field
//   0       1     metadata format = 0x01
//   1       4     DEK version, uint32 big-endian
//
// GCM AAD, the specification's construction (Encrypt, "ciphertextMetadata"):
//
//   u16be(len(aad)) || aad || u8(len(metadata)) || metadata
//
// so the tag covers the caller's AAD and the metadata, and neither can be moved into
// the other. The IV is 12 random bytes; the tag 16 bytes; the ciphertext is as long as
// the plaintext.
//
// Separation from field ciphertexts (field_cipher.h) under the same DEK: a field AAD
// starts with "kmsd:field:v1" (0x6b 0x6d...), a raw AAD with u16be(len(aad)), and
// len(aad) is at most kMaxRawAadBytes (0x2000) < 0x6b6d, so no AAD of one kind is ever an
// AAD of the other, and a ciphertext of one kind never authenticates as the other.
//
// Ciphertext data integrity value (CDIV, specification Appendix C): Base64 of
// SHA-256(aad || metadata || iv || ciphertext || tag), no lengths (it guards against
// accidental corruption, not an adversary).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kms/common/status.h"
#include "src/crypto/aes_gcm.h"
#include "src/crypto/mac.h"

namespace kms::crypto {

inline constexpr uint8_t kRawMetadataV1 = 0x01;
inline constexpr size_t kRawMetadataSize = 5;
inline constexpr size_t kMaxRawAadBytes = 8192;  // the specification's minimum, and ours

// The metadata above for `dek_version`.
std::vector<uint8_t> RawMetadata(uint32_t dek_version);
// The DEK version the metadata names; INVALID_ARGUMENT when it is not v1 metadata
// (wrong size, unknown format byte, version 0).
absl::StatusOr<uint32_t> ParseRawMetadata(std::span<const uint8_t> metadata);

// The GCM AAD above. INVALID_ARGUMENT when aad is over kMaxRawAadBytes or metadata over
// 255 bytes.
absl::StatusOr<std::vector<uint8_t>> RawAad(std::span<const uint8_t> aad,
                                            std::span<const uint8_t> metadata);

struct RawSealed {
  std::vector<uint8_t> iv;          // 12 bytes
  std::vector<uint8_t> ciphertext;  // as long as the plaintext
  std::vector<uint8_t> tag;         // 16 bytes
};

// Seals `plaintext` under `key` with a fresh random IV and the GCM AAD `gcm_aad`.
absl::StatusOr<RawSealed> RawSeal(const AesGcmKey& key, std::span<const uint8_t> gcm_aad,
                                  std::span<const uint8_t> plaintext);
// Opens into `out` (ciphertext.size() bytes). DATA_LOSS when the tag does not verify;
// INVALID_ARGUMENT when the IV is not 12 bytes or the tag not 16 (kmsd never makes
// others; the specification also allows 16-byte IVs from other key managers).
absl::Status RawOpen(const AesGcmKey& key, std::span<const uint8_t> gcm_aad,
                     std::span<const uint8_t> iv, std::span<const uint8_t> ciphertext,
                     std::span<const uint8_t> tag, std::span<uint8_t> out);

// SHA-256(aad || metadata || iv || ciphertext || tag), raw (Base64 is the caller's).
Sha256Digest RawIntegrityValue(std::span<const uint8_t> aad, std::span<const uint8_t> metadata,
                               const RawSealed& sealed);

}  // namespace kms::crypto
