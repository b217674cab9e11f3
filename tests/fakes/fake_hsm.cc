#include "tests/fakes/fake_hsm.h"

#include <algorithm>
#include <array>

namespace kms::testing {

namespace {

absl::Status Down() { return absl::UnavailableError("fake HSM is down"); }

// Fake blob: the real layout's two header bytes (format 1, mechanism 3 "aes-key-wrap-pad",
// which fits the AES master key this fake claims), then the KEK sealed with AES-256-GCM
// under a fixed fake master key, the header as AAD: nonce(12) || ciphertext(32) || tag(16).
// Only a fake may have its master key in the code.
constexpr std::array<uint8_t, 2> kFakeBlobHeader = {0x01, 0x03};
constexpr size_t kKekSize = 32;
constexpr size_t kFakeBlobSize = 2 + 12 + kKekSize + 16;

const crypto::AesGcmKey& FakeMasterKey() {
  static const crypto::AesGcmKey* key = [] {
    std::array<uint8_t, 32> bytes;
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(0xa0 + i);
    return crypto::AesGcmKey::Create(SecretBytes::CopyOf(std::span<const uint8_t>(bytes)))
        .value()
        .release();
  }();
  return *key;
}

}  // namespace

absl::StatusOr<std::unique_ptr<crypto::AesGcmKey>> FakeHsm::KeyOf(uint32_t kek_version) const {
  MutexLock lock(&mu_);
  auto it = keks_.find(kek_version);
  if (it == keks_.end()) return absl::NotFoundError("KEK version not loaded");
  return crypto::AesGcmKey::Create(it->second);
}

absl::StatusOr<std::vector<uint8_t>> FakeHsm::WrapKnownKek(std::span<const uint8_t> kek) {
  if (kek.size() != kKekSize) return absl::InvalidArgumentError("a KEK is 32 bytes");
  std::vector<uint8_t> blob(kFakeBlobSize);
  std::copy(kFakeBlobHeader.begin(), kFakeBlobHeader.end(), blob.begin());
  std::span<uint8_t> nonce = std::span(blob).subspan(2, 12);
  KMS_RETURN_IF_ERROR(crypto::RandomBytes(nonce));
  KMS_RETURN_IF_ERROR(
      FakeMasterKey().Encrypt(nonce, kek, kFakeBlobHeader, std::span(blob).subspan(14)));
  return blob;
}

absl::StatusOr<std::vector<uint8_t>> FakeHsm::CreateKek(uint32_t kek_version) {
  if (down_) return Down();
  KMS_ASSIGN_OR_RETURN(SecretBytes kek, crypto::RandomSecret(kKekSize));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> blob, WrapKnownKek(kek.span()));
  MutexLock lock(&mu_);
  // As Pkcs11Hsm: a loaded version is never replaced.
  if (keks_.count(kek_version)) return absl::AlreadyExistsError("KEK version already loaded");
  keks_.emplace(kek_version, std::move(kek));
  return blob;
}

absl::Status FakeHsm::LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) {
  if (down_) return Down();
  if (wrapped_kek.size() < 2 || wrapped_kek[0] != kFakeBlobHeader[0] ||
      wrapped_kek[1] != kFakeBlobHeader[1]) {
    return absl::InvalidArgumentError("not a fake KEK blob (format or mechanism)");
  }
  if (HasKek(kek_version)) return absl::OkStatus();
  if (wrapped_kek.size() != kFakeBlobSize) return absl::DataLossError("fake KEK blob has a bad size");
  SecretBytes kek(kKekSize);
  KMS_RETURN_IF_ERROR(FakeMasterKey().Decrypt(wrapped_kek.subspan(2, 12), wrapped_kek.subspan(14),
                                              kFakeBlobHeader, kek.mutable_span()));
  MutexLock lock(&mu_);
  keks_.emplace(kek_version, std::move(kek));  // no-op when loaded meanwhile
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
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<crypto::AesGcmKey> key, KeyOf(kek_version));
  std::vector<uint8_t> out(12 + plaintext.size() + 16);
  KMS_RETURN_IF_ERROR(crypto::RandomBytes(std::span(out).first(12)));
  KMS_RETURN_IF_ERROR(key->Encrypt(std::span(out).first(12), plaintext, aad, std::span(out).subspan(12)));
  ++seals_;
  return out;
}

absl::StatusOr<SecretBytes> FakeHsm::Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                          std::span<const uint8_t> aad) {
  if (down_) return Down();
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<crypto::AesGcmKey> key, KeyOf(kek_version));
  if (sealed.size() < 28) return absl::DataLossError("sealed blob too short");
  SecretBytes out(sealed.size() - 28);
  KMS_RETURN_IF_ERROR(key->Decrypt(sealed.first(12), sealed.subspan(12), aad, out.mutable_span()));
  ++opens_;
  return out;
}

absl::Status FakeHsm::Ping() { return down_ ? Down() : absl::OkStatus(); }

std::string FakeHsm::DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const {
  if (wrapped_kek.size() == kFakeBlobSize && wrapped_kek[0] == kFakeBlobHeader[0] &&
      wrapped_kek[1] == kFakeBlobHeader[1]) {
    return "aes-key-wrap-pad";
  }
  return "unknown";
}

}  // namespace kms::testing
