#include "tests/fakes/fake_kek_ring.h"

#include <algorithm>

namespace kms::testing {

void FakeKekRing::Table::Put(uint32_t version, std::vector<uint8_t> blob) {
  MutexLock lock(&mu_);
  blobs_[version] = std::move(blob);
}

bool FakeKekRing::Table::Get(uint32_t version, std::vector<uint8_t>* blob) const {
  MutexLock lock(&mu_);
  auto it = blobs_.find(version);
  if (it == blobs_.end()) return false;
  *blob = it->second;
  return true;
}

uint32_t FakeKekRing::Table::MaxVersion() const {
  MutexLock lock(&mu_);
  return blobs_.empty() ? 0 : blobs_.rbegin()->first;
}

absl::Status FakeKekRing::CreateKek(uint32_t version) {
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> blob, hsm_.CreateKek(version));
  table_->Put(version, std::move(blob));
  primary_ = std::max(primary_.load(), version);
  return absl::OkStatus();
}

absl::Status FakeKekRing::EnsureLoaded(uint32_t kek_version) {
  if (hsm_.HasKek(kek_version)) return absl::OkStatus();
  std::vector<uint8_t> blob;
  if (!loads_from_table_ || !table_->Get(kek_version, &blob)) {
    return absl::DataLossError("a key names a KEK version that is not active");
  }
  ++loads_;
  return hsm_.LoadKek(kek_version, blob);
}

absl::StatusOr<std::vector<uint8_t>> FakeKekRing::Seal(uint32_t kek_version,
                                                       std::span<const uint8_t> plaintext,
                                                       std::span<const uint8_t> aad) {
  KMS_RETURN_IF_ERROR(EnsureLoaded(kek_version));
  return hsm_.Seal(kek_version, plaintext, aad);
}

absl::StatusOr<SecretBytes> FakeKekRing::Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                              std::span<const uint8_t> aad) {
  KMS_RETURN_IF_ERROR(EnsureLoaded(kek_version));
  return hsm_.Open(kek_version, sealed, aad);
}

absl::StatusOr<std::vector<uint8_t>> FakeKekRing::Reseal(uint32_t from_version,
                                                         std::span<const uint8_t> sealed,
                                                         std::span<const uint8_t> from_aad,
                                                         uint32_t to_version,
                                                         std::span<const uint8_t> to_aad) {
  ++reseals_;
  KMS_ASSIGN_OR_RETURN(SecretBytes plaintext, Open(from_version, sealed, from_aad));
  return Seal(to_version, plaintext.span(), to_aad);
}

absl::Status FakeKekRing::Refresh() {
  KMS_RETURN_IF_ERROR(hsm_.Ping());
  if (loads_from_table_) primary_ = std::max(primary_.load(), table_->MaxVersion());
  return absl::OkStatus();
}

}  // namespace kms::testing
