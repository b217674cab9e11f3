// The HSM seam: the master key and KEKs live here, and never leave it in the clear.
//
// Implementations: src/hsm/pkcs11_hsm (any PKCS#11 module; tested against SoftHSM2).
// Test doubles live in tests/fakes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::hsm {

enum class MasterKeyKind {
  kRsa4096,  // RSA-4096 key pair; KEKs wrapped with RSA-OAEP (default)
  kAes256,   // AES-256 secret key; KEKs wrapped with AES key wrap with padding (SP 800-38F)
};

// "rsa-4096", "aes-256" (the configuration's spelling).
inline std::string_view MasterKeyKindName(MasterKeyKind kind) {
  switch (kind) {
    case MasterKeyKind::kRsa4096:
      return "rsa-4096";
    case MasterKeyKind::kAes256:
      return "aes-256";
  }
  return "unknown";
}

// The inverse of MasterKeyKindName; INVALID_ARGUMENT for any other name.
inline absl::StatusOr<MasterKeyKind> ParseMasterKeyKind(std::string_view name) {
  if (name == "rsa-4096") return MasterKeyKind::kRsa4096;
  if (name == "aes-256") return MasterKeyKind::kAes256;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown master key kind '", absl::string_view(name.data(), name.size()),
                   "' (expected rsa-4096 or aes-256)"));
}

// Thread-safe. Every method may be called from any thread concurrently.
// Errors: UNAVAILABLE when the token cannot be reached, NOT_FOUND for an unknown
// KEK version, DATA_LOSS / INVALID_ARGUMENT for a blob that does not unwrap or
// authenticate. Messages never carry key material.
class Hsm {
 public:
  virtual ~Hsm() = default;

  virtual MasterKeyKind master_key_kind() const = 0;

  // Generates a new AES-256 KEK inside the HSM and returns it wrapped under the master
  // key (a self-describing blob: it names the mechanism that wrapped it). The KEK is
  // loaded as `kek_version` for immediate use.
  virtual absl::StatusOr<std::vector<uint8_t>> CreateKek(uint32_t kek_version) = 0;

  // Unwraps a stored KEK blob into a non-extractable session object known as
  // `kek_version`. Loading a version that is already loaded is a no-op.
  virtual absl::Status LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) = 0;

  virtual bool HasKek(uint32_t kek_version) const = 0;

  // Destroys the session object of `kek_version` (no-op when not loaded). Used when
  // another replica stored a different KEK under the same version first, and when a
  // retired KEK is dropped.
  virtual absl::Status UnloadKek(uint32_t kek_version) = 0;

  // AES-256-GCM under a loaded KEK, computed inside the HSM.
  // Seal returns nonce(12) || ciphertext || tag(16); the nonce comes from the CSPRNG.
  virtual absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version,
                                                    std::span<const uint8_t> plaintext,
                                                    std::span<const uint8_t> aad) = 0;
  // Open fails with DATA_LOSS when the blob or the AAD does not authenticate.
  virtual absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                           std::span<const uint8_t> aad) = 0;

  // A cheap round trip to the token, for health checks.
  virtual absl::Status Ping() = 0;

  // The name of the mechanism that wrapped a blob CreateKek returned ("rsa-oaep-sha1",
  // "rsa-oaep-sha256", "aes-key-wrap-pad"), for logs and status; "unknown" when the blob
  // does not parse. The blob format is the implementation's: only it can read it. Does not
  // touch the token.
  virtual std::string DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const = 0;
};

}  // namespace kms::hsm
