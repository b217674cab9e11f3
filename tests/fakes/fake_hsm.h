// FakeHsm: an in-memory Hsm for unit tests. KEKs are random keys in process memory
// (which a real HSM never allows) and GCM runs in OpenSSL; failures can be injected.
//
// It keeps the seam's contract (tests/integration/hsm/hsm_contract.h runs it next to
// Pkcs11Hsm on SoftHSM2): every FakeHsm of the process plays a replica on one token,
// so a KEK blob one creates loads in another; a damaged blob is refused (the KEK is
// sealed under a fixed fake master key with AES-256-GCM, so it authenticates).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "kms/hsm/hsm.h"
#include "src/common/sync.h"
#include "src/crypto/aes_gcm.h"

namespace kms::testing {

class FakeHsm final : public hsm::Hsm {
 public:
  hsm::MasterKeyKind master_key_kind() const override { return hsm::MasterKeyKind::kAes256; }
  absl::StatusOr<std::vector<uint8_t>> CreateKek(uint32_t kek_version) override;
  absl::Status LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) override;
  bool HasKek(uint32_t kek_version) const override;
  absl::Status UnloadKek(uint32_t kek_version) override;
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version, std::span<const uint8_t> plaintext,
                                            std::span<const uint8_t> aad) override;
  absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad) override;
  absl::Status Ping() override;
  // Fake blobs carry the real header of an AES-key-wrap blob: "aes-key-wrap-pad".
  std::string DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const override;

  // A blob that LoadKek accepts and that holds `kek` (32 bytes), for tests that need a
  // known KEK (fuzz seeds, published vectors). Only a fake can wrap a key it is given.
  static absl::StatusOr<std::vector<uint8_t>> WrapKnownKek(std::span<const uint8_t> kek);

  // While set, every call fails with UNAVAILABLE (the token is gone).
  void SetUnavailable(bool down) { down_ = down; }
  uint64_t opens() const { return opens_; }
  uint64_t seals() const { return seals_; }

 private:
  absl::StatusOr<std::unique_ptr<crypto::AesGcmKey>> KeyOf(uint32_t kek_version) const;

  mutable Mutex mu_;
  std::map<uint32_t, SecretBytes> keks_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> down_{false};
  std::atomic<uint64_t> opens_{0};
  std::atomic<uint64_t> seals_{0};
};

}  // namespace kms::testing
