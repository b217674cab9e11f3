// Field ciphertext format, version 1 (DESIGN §2). The bytes a caller stores for one
// encrypted field:
//
//   offset  size  field
//   0       1     format version = 0x01
//   1       4     DEK version, uint32 big-endian
//   5       12    nonce (random, from the OS CSPRNG)
//   17      n     AES-256-GCM ciphertext (n = plaintext length)
//   17+n    16    GCM tag
//
// AAD = "kmsd:field:v1" || len32(tenant_id) || tenant_id || u32(dek_version)
//       || canonical(context)
// canonical(context) = u32(pair count) || for each pair sorted by key (bytewise):
//                      len32(key) || key || len32(value) || value
// All integers are big-endian. An empty context encodes as u32(0).
//
// The AAD binds the ciphertext to its tenant, DEK version and caller context, so a
// ciphertext moved to another tenant or column, or relabelled with another DEK
// version, fails to decrypt.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kms/common/status.h"
#include "src/crypto/aes_gcm.h"

namespace kms::crypto {

inline constexpr uint8_t kFieldFormatV1 = 0x01;
inline constexpr size_t kFieldHeaderSize = 1 + 4 + kAesGcmNonceSize;  // 17
inline constexpr size_t kFieldOverhead = kFieldHeaderSize + kAesGcmTagSize;  // 33

using ContextPair = std::pair<std::string_view, std::string_view>;

// Builds the AAD above. `context` may be in any order; duplicate keys are the
// caller's error (INVALID_ARGUMENT).
absl::StatusOr<std::vector<uint8_t>> FieldAad(std::string_view tenant_id, uint32_t dek_version,
                                              std::span<const ContextPair> context);

// A parsed, not yet authenticated, field ciphertext. Views into the caller's bytes.
struct FieldView {
  uint32_t dek_version = 0;
  std::span<const uint8_t> nonce;
  std::span<const uint8_t> ciphertext_and_tag;
};

// INVALID_ARGUMENT when the bytes cannot be a v1 field ciphertext (too short, unknown
// version byte, DEK version 0).
absl::StatusOr<FieldView> ParseField(std::span<const uint8_t> ciphertext);

// Encrypts `plaintext` with a fresh random nonce; replaces `*out` with the v1 bytes.
absl::Status SealField(const AesGcmKey& key, uint32_t dek_version, std::span<const uint8_t> aad,
                       std::span<const uint8_t> plaintext, std::string* out);

// SealField with the caller's nonce (12 bytes, fresh from the CSPRNG: a batch draws
// all its nonces in one NonceBytesBulk call). A nonce must never be used twice with a key.
absl::Status SealFieldWithNonce(const AesGcmKey& key, uint32_t dek_version,
                                std::span<const uint8_t> aad,
                                std::span<const uint8_t, kAesGcmNonceSize> nonce,
                                std::span<const uint8_t> plaintext, std::string* out);

// Authenticates and decrypts; replaces `*out` with the plaintext. DATA_LOSS on any
// authentication failure (one uniform error: it tells an attacker nothing).
absl::Status OpenField(const AesGcmKey& key, const FieldView& field, std::span<const uint8_t> aad,
                       std::string* out);
// The same into a caller's buffer (a SecretBytes, so the plaintext is wiped), which must
// be exactly FieldPlaintextSize(field) bytes (else INVALID_ARGUMENT); wiped on failure.
size_t FieldPlaintextSize(const FieldView& field);
absl::Status OpenField(const AesGcmKey& key, const FieldView& field, std::span<const uint8_t> aad,
                       std::span<uint8_t> out);

}  // namespace kms::crypto
