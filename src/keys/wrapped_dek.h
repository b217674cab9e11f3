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
#include "kms/hsm/hsm.h"

namespace kms::keys {

inline constexpr uint8_t kWrappedDekV1 = 0x01;
inline constexpr size_t kDekSize = 32;

std::vector<uint8_t> DekAad(std::string_view tenant_id, uint32_t dek_version, uint32_t kek_version);

// Seals `dek` under KEK `kek_version` in the HSM.
absl::StatusOr<std::vector<uint8_t>> WrapDek(hsm::Hsm& hsm, uint32_t kek_version,
                                             std::string_view tenant_id, uint32_t dek_version,
                                             const SecretBytes& dek);

// The KEK version a blob names (INVALID_ARGUMENT / DATA_LOSS when malformed).
absl::StatusOr<uint32_t> WrappedDekKekVersion(std::span<const uint8_t> blob);

// Opens a blob in the HSM. DATA_LOSS when it does not authenticate for this tenant and
// version; UNAVAILABLE / NOT_FOUND from the HSM pass through.
absl::StatusOr<SecretBytes> UnwrapDek(hsm::Hsm& hsm, std::string_view tenant_id,
                                      uint32_t dek_version, std::span<const uint8_t> blob);

}  // namespace kms::keys
