// Wrapped DEK blob, version 1: how a tenant's DEK is stored (KeyStore tenant_deks.wrapped).
//
//   offset  size  field
//   0       1     blob version = 0x01
//   1       4     KEK version, uint32 big-endian
//   5       12    nonce (chosen by the HSM module from the CSPRNG)
//   17      32    AES-256-GCM ciphertext of the 32-byte DEK, computed inside the HSM
//   49      16    GCM tag
//
// AAD = "kmsd:dek:v1" || len32(tenant_id) || tenant_id || u32(dek_version) || u32(kek_version)
// (integers big-endian), so a blob cannot be moved to another tenant, relabelled with
// another DEK version, or replayed under another KEK version.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"
#include "kms/keys/kek_ring.h"

namespace kms::keys {

inline constexpr uint8_t kWrappedDekV1 = 0x01;
inline constexpr size_t kDekSize = 32;

std::vector<uint8_t> DekAad(std::string_view tenant_id, uint32_t dek_version, uint32_t kek_version);

// Seals `dek` under KEK `kek_version` (in the HSM, through the KEK ring).
absl::StatusOr<std::vector<uint8_t>> WrapDek(KekRing& ring, uint32_t kek_version,
                                             std::string_view tenant_id, uint32_t dek_version,
                                             const SecretBytes& dek);

// The KEK version a blob names (INVALID_ARGUMENT / DATA_LOSS when malformed).
absl::StatusOr<uint32_t> WrappedDekKekVersion(std::span<const uint8_t> blob);

// Opens a blob under the KEK version its header names. DATA_LOSS when the blob is
// malformed; INTERNAL when it does not authenticate for this tenant and version or the
// KEK is not available; UNAVAILABLE when the HSM or the store cannot be reached.
absl::StatusOr<SecretBytes> UnwrapDek(KekRing& ring, std::string_view tenant_id,
                                      uint32_t dek_version, std::span<const uint8_t> blob);

// Re-wraps a blob under KEK `to_kek_version` (after a KEK rotation) through
// KekRing::Reseal, so the DEK exists only inside that call. Errors as UnwrapDek.
absl::StatusOr<std::vector<uint8_t>> RewrapDek(KekRing& ring, uint32_t to_kek_version,
                                               std::string_view tenant_id, uint32_t dek_version,
                                               std::span<const uint8_t> blob);

}  // namespace kms::keys
