#include "src/keys/wrapped_dek.h"

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "src/common/big_endian.h"

namespace kms::keys {

namespace {

constexpr std::string_view kDekAadLabel = "kmsd:dek:v1";
constexpr size_t kHeaderSize = 5;
constexpr size_t kSealedSize = 12 + kDekSize + 16;

// An HSM error is never the caller's fault: UNAVAILABLE stays (retry later), anything
// else (a PIN problem, a key not loaded, a blob that fails to authenticate) is internal,
// so that no HSM detail or misleading code (PERMISSION_DENIED, NOT_FOUND) reaches them.
absl::Status FromHsm(const absl::Status& s) {
  if (s.ok() || absl::IsUnavailable(s)) return s;
  return absl::InternalError(absl::StrCat("HSM: ", std::string(s.message())));
}

// The v1 blob: version byte, KEK version, then what the KEK ring sealed.
std::vector<uint8_t> Blob(uint32_t kek_version, std::span<const uint8_t> sealed) {
  std::vector<uint8_t> blob;
  blob.reserve(kHeaderSize + sealed.size());
  blob.push_back(kWrappedDekV1);
  AppendU32(blob, kek_version);
  AppendBytes(blob, sealed);
  return blob;
}

}  // namespace

std::vector<uint8_t> DekAad(std::string_view tenant_id, uint32_t dek_version, uint32_t kek_version) {
  std::vector<uint8_t> aad;
  aad.reserve(kDekAadLabel.size() + 4 + tenant_id.size() + 8);
  AppendBytes(aad, kDekAadLabel);
  AppendLengthPrefixed(aad, tenant_id);
  AppendU32(aad, dek_version);
  AppendU32(aad, kek_version);
  return aad;
}

absl::StatusOr<std::vector<uint8_t>> WrapDek(KekRing& ring, uint32_t kek_version,
                                             std::string_view tenant_id, uint32_t dek_version,
                                             const SecretBytes& dek) {
  if (dek.size() != kDekSize) return absl::InternalError("DEK must be 32 bytes");
  absl::StatusOr<std::vector<uint8_t>> sealed_or =
      ring.Seal(kek_version, dek.span(), DekAad(tenant_id, dek_version, kek_version));
  if (!sealed_or.ok()) return FromHsm(sealed_or.status());
  return Blob(kek_version, *sealed_or);
}

absl::StatusOr<uint32_t> WrappedDekKekVersion(std::span<const uint8_t> blob) {
  if (blob.size() != kHeaderSize + kSealedSize || blob[0] != kWrappedDekV1) {
    return absl::DataLossError("wrapped DEK blob is malformed");
  }
  return LoadU32(blob.subspan<1, 4>());
}

absl::StatusOr<SecretBytes> UnwrapDek(KekRing& ring, std::string_view tenant_id,
                                      uint32_t dek_version, std::span<const uint8_t> blob) {
  KMS_ASSIGN_OR_RETURN(uint32_t kek_version, WrappedDekKekVersion(blob));
  absl::StatusOr<SecretBytes> dek_or =
      ring.Open(kek_version, blob.subspan(kHeaderSize), DekAad(tenant_id, dek_version, kek_version));
  if (!dek_or.ok()) return FromHsm(dek_or.status());
  SecretBytes dek = std::move(*dek_or);
  if (dek.size() != kDekSize) return absl::DataLossError("unwrapped DEK has the wrong size");
  return dek;
}

absl::StatusOr<std::vector<uint8_t>> RewrapDek(KekRing& ring, uint32_t to_kek_version,
                                               std::string_view tenant_id, uint32_t dek_version,
                                               std::span<const uint8_t> blob) {
  KMS_ASSIGN_OR_RETURN(uint32_t from_kek_version, WrappedDekKekVersion(blob));
  absl::StatusOr<std::vector<uint8_t>> sealed_or =
      ring.Reseal(from_kek_version, blob.subspan(kHeaderSize),
                  DekAad(tenant_id, dek_version, from_kek_version), to_kek_version,
                  DekAad(tenant_id, dek_version, to_kek_version));
  if (!sealed_or.ok()) return FromHsm(sealed_or.status());
  return Blob(to_kek_version, *sealed_or);
}

}  // namespace kms::keys
