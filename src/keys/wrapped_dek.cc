#include "src/keys/wrapped_dek.h"

#include <string_view>

namespace kms::keys {

namespace {

void PutU32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

uint32_t GetU32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

constexpr std::string_view kDekAadLabel = "kmsd:dek:v1";
constexpr size_t kHeaderSize = 5;
constexpr size_t kSealedSize = 12 + kDekSize + 16;

}  // namespace

std::vector<uint8_t> DekAad(std::string_view tenant_id, uint32_t dek_version, uint32_t kek_version) {
  std::vector<uint8_t> aad;
  aad.reserve(kDekAadLabel.size() + 4 + tenant_id.size() + 8);
  aad.insert(aad.end(), kDekAadLabel.begin(), kDekAadLabel.end());
  PutU32(aad, static_cast<uint32_t>(tenant_id.size()));
  aad.insert(aad.end(), tenant_id.begin(), tenant_id.end());
  PutU32(aad, dek_version);
  PutU32(aad, kek_version);
  return aad;
}

absl::StatusOr<std::vector<uint8_t>> WrapDek(hsm::Hsm& hsm, uint32_t kek_version,
                                             std::string_view tenant_id, uint32_t dek_version,
                                             const SecretBytes& dek) {
  if (dek.size() != kDekSize) return absl::InternalError("DEK must be 32 bytes");
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> sealed,
                       hsm.Seal(kek_version, dek.span(), DekAad(tenant_id, dek_version, kek_version)));
  std::vector<uint8_t> blob;
  blob.reserve(kHeaderSize + sealed.size());
  blob.push_back(kWrappedDekV1);
  PutU32(blob, kek_version);
  blob.insert(blob.end(), sealed.begin(), sealed.end());
  return blob;
}

absl::StatusOr<uint32_t> WrappedDekKekVersion(std::span<const uint8_t> blob) {
  if (blob.size() != kHeaderSize + kSealedSize || blob[0] != kWrappedDekV1) {
    return absl::DataLossError("wrapped DEK blob is malformed");
  }
  return GetU32(blob.data() + 1);
}

absl::StatusOr<SecretBytes> UnwrapDek(hsm::Hsm& hsm, std::string_view tenant_id,
                                      uint32_t dek_version, std::span<const uint8_t> blob) {
  KMS_ASSIGN_OR_RETURN(uint32_t kek_version, WrappedDekKekVersion(blob));
  KMS_ASSIGN_OR_RETURN(SecretBytes dek, hsm.Open(kek_version, blob.subspan(kHeaderSize),
                                                 DekAad(tenant_id, dek_version, kek_version)));
  if (dek.size() != kDekSize) return absl::DataLossError("unwrapped DEK has the wrong size");
  return dek;
}

}  // namespace kms::keys
