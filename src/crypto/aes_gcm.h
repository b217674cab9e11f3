// AES-256-GCM in kmsd memory (OpenSSL EVP), for field encryption under a DEK.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::crypto {

inline constexpr size_t kAesGcmKeySize = 32;
inline constexpr size_t kAesGcmNonceSize = 12;
inline constexpr size_t kAesGcmTagSize = 16;

// An AES-256-GCM key. It keeps only the raw 32 key bytes (in SecretBytes: locked,
// wiped on free), ~100 bytes per key where a keyed EVP context is ~1.2 KiB, so a cache
// of 100,000s of DEKs stays small. Each thread owns one encrypt and one decrypt EVP
// context and re-keys it when a call uses a different key than the thread's previous
// call (~0.7 us: the AES key expansion and GHASH set-up); calls on the key the thread
// used last cost only the IV set-up and the cipher.
//
// Thread-safe. Destroying a key also wipes every thread's context that holds its
// schedule (each thread context has its own lock, taken uncontended by its thread on
// each call), so no expanded copy of a destroyed DEK outlives it (crypto-shredding).
class AesGcmKey {
 public:
  // INVALID_ARGUMENT unless `key` is 32 bytes.
  static absl::StatusOr<std::unique_ptr<AesGcmKey>> Create(const SecretBytes& key);
  ~AesGcmKey();
  AesGcmKey(const AesGcmKey&) = delete;
  AesGcmKey& operator=(const AesGcmKey&) = delete;

  // Writes ciphertext || tag (plaintext.size() + 16 bytes) to `out`, which must be
  // exactly that size. `nonce` must be 12 bytes.
  absl::Status Encrypt(std::span<const uint8_t> nonce, std::span<const uint8_t> plaintext,
                       std::span<const uint8_t> aad, std::span<uint8_t> out) const;
  // Reads ciphertext || tag; writes the plaintext (input size - 16 bytes) to `out`.
  // DATA_LOSS when the tag does not verify; `out` is then wiped.
  absl::Status Decrypt(std::span<const uint8_t> nonce, std::span<const uint8_t> ciphertext_and_tag,
                       std::span<const uint8_t> aad, std::span<uint8_t> out) const;

 private:
  AesGcmKey(SecretBytes key, uint64_t id) : key_(std::move(key)), id_(id) {}
  SecretBytes key_;
  const uint64_t id_;  // unique per key for the process's life: what thread contexts hold
};

// Fills `out` from the OS CSPRNG (OpenSSL RAND_bytes). INTERNAL on failure.
absl::Status RandomBytes(std::span<uint8_t> out);
// 12 random bytes for a GCM nonce. Nonces are public, so they are drawn from a
// per-thread buffer refilled 4 KiB at a time from RAND_bytes: one CSPRNG call per ~340
// nonces instead of one per encryption (RAND_bytes costs ~1.5 us per call here, several
// times the AES-GCM of a short field). Every buffered byte is used once; the buffer is
// dropped when the process id changes, so a forked child never repeats its parent's.
absl::Status NonceBytes(std::span<uint8_t, kAesGcmNonceSize> out);
// `out.size() / 12` nonces at once (one process-id check for all): for batches.
// INVALID_ARGUMENT unless the size is a multiple of 12.
absl::Status NonceBytesBulk(std::span<uint8_t> out);

// A new secret of `size` random bytes.
absl::StatusOr<SecretBytes> RandomSecret(size_t size);

}  // namespace kms::crypto
