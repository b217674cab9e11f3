#include "tests/fakes/fake_hsm.h"

namespace kms::testing {

namespace {
absl::Status Down() { return absl::UnavailableError("fake HSM is down"); }
// Fake blob: the real layout's two header bytes (format 1, mechanism 3), then the key
// in the clear. Only a fake may do this.
constexpr uint8_t kFakeBlobHeader[2] = {0x01, 0x03};
}  // namespace

absl::StatusOr<std::vector<uint8_t>> FakeHsm::CreateKek(uint32_t kek_version) {
  if (down_) return Down();
  KMS_ASSIGN_OR_RETURN(SecretBytes kek, crypto::RandomSecret(32));
  std::vector<uint8_t> blob(kFakeBlobHeader, kFakeBlobHeader + 2);
  blob.insert(blob.end(), kek.data(), kek.data() + kek.size());
  MutexLock lock(&mu_);
  keks_[kek_version] = std::move(kek);
  return blob;
}

absl::Status FakeHsm::LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) {
  if (down_) return Down();
  if (wrapped_kek.size() != 34) return absl::DataLossError("bad fake KEK blob");
  MutexLock lock(&mu_);
  if (!keks_.count(kek_version)) keks_[kek_version] = SecretBytes::CopyOf(wrapped_kek.subspan(2));
  return absl::OkStatus();
}

bool FakeHsm::HasKek(uint32_t kek_version) const {
  MutexLock lock(&mu_);
  return keks_.count(kek_version) > 0;
}

absl::Status FakeHsm::UnloadKek(uint32_t kek_version) {
  MutexLock lock(&mu_);
  keks_.erase(kek_version);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> FakeHsm::Seal(uint32_t kek_version,
                                                   std::span<const uint8_t> plaintext,
                                                   std::span<const uint8_t> aad) {
  if (down_) return Down();
  std::unique_ptr<crypto::AesGcmKey> key;
  {
    MutexLock lock(&mu_);
    auto it = keks_.find(kek_version);
    if (it == keks_.end()) return absl::NotFoundError("KEK version not loaded");
    KMS_ASSIGN_OR_RETURN(key, crypto::AesGcmKey::Create(it->second));
  }
  std::vector<uint8_t> out(12 + plaintext.size() + 16);
  KMS_RETURN_IF_ERROR(crypto::RandomBytes(std::span(out).first(12)));
  KMS_RETURN_IF_ERROR(key->Encrypt(std::span(out).first(12), plaintext, aad, std::span(out).subspan(12)));
  ++seals_;
  return out;
}

absl::StatusOr<SecretBytes> FakeHsm::Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                          std::span<const uint8_t> aad) {
  if (down_) return Down();
  if (sealed.size() < 28) return absl::DataLossError("sealed blob too short");
  std::unique_ptr<crypto::AesGcmKey> key;
  {
    MutexLock lock(&mu_);
    auto it = keks_.find(kek_version);
    if (it == keks_.end()) return absl::NotFoundError("KEK version not loaded");
    KMS_ASSIGN_OR_RETURN(key, crypto::AesGcmKey::Create(it->second));
  }
  SecretBytes out(sealed.size() - 28);
  KMS_RETURN_IF_ERROR(key->Decrypt(sealed.first(12), sealed.subspan(12), aad, out.mutable_span()));
  ++opens_;
  return out;
}

absl::Status FakeHsm::Ping() { return down_ ? Down() : absl::OkStatus(); }

std::string FakeHsm::DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const {
  if (wrapped_kek.size() == 34 && wrapped_kek[0] == kFakeBlobHeader[0] &&
      wrapped_kek[1] == kFakeBlobHeader[1]) {
    return "aes-key-wrap-pad";
  }
  return "unknown";
}

}  // namespace kms::testing
