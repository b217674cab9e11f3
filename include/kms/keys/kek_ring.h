// The KEK ring seam: the versions of the key-encryption key (DESIGN §2), as the key
// holders above it (tenant DEKs, JWT signing keys, and later named keys and blind-index
// keys) use them. A key holder never sees the HSM or the KEK table: it asks the ring
// which version is primary and has it seal and open blobs under a version.
//
// Implementation: src/keys/kek_ring (HsmKekRing: KEK blobs in the store, unwrapped into
// HSM session objects). Test double: tests/fakes/fake_kek_ring.h.
//
// Sealed blob layout (what the HSM returns; AES-256-GCM, NIST SP 800-38D):
//   nonce(12) || ciphertext || tag(16)
// The AAD is the holder's: it binds the blob to its owner and to the KEK version.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::keys {

// Thread-safe: every method may be called from any thread concurrently.
// Errors: UNAVAILABLE when the HSM or the store cannot be reached; DATA_LOSS when a
// version is not an active KEK (or the store has no such version), or a sealed blob or
// its AAD does not authenticate. Messages never carry key material.
class KekRing {
 public:
  virtual ~KekRing() = default;

  // The version new keys are sealed under; 0 before the ring is loaded.
  virtual uint32_t primary_version() const = 0;

  // Makes sure `kek_version` is usable on this node: loads it from the store into the
  // HSM when another replica created it since this node read the ring.
  virtual absl::Status EnsureLoaded(uint32_t kek_version) = 0;

  // AES-256-GCM under `kek_version`, inside the HSM (loaded first when needed).
  virtual absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version,
                                                    std::span<const uint8_t> plaintext,
                                                    std::span<const uint8_t> aad) = 0;
  virtual absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                           std::span<const uint8_t> aad) = 0;

  // Re-wrap: opens `sealed` under `from_version` with `from_aad` and seals the plaintext
  // under `to_version` with `to_aad`. The plaintext exists only inside this call (in the
  // HSM where it can, else in kmsd memory, wiped at once).
  virtual absl::StatusOr<std::vector<uint8_t>> Reseal(uint32_t from_version,
                                                      std::span<const uint8_t> sealed,
                                                      std::span<const uint8_t> from_aad,
                                                      uint32_t to_version,
                                                      std::span<const uint8_t> to_aad) = 0;

  // Re-reads which versions exist and which is primary (another replica rotated or
  // retired a KEK). Versions already loaded stay usable.
  virtual absl::Status Refresh() = 0;

  // A cheap round trip to the HSM, for health probes.
  virtual absl::Status Ping() = 0;
};

}  // namespace kms::keys
