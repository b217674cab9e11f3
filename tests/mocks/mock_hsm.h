// MockHsm: gMock double of the HSM seam (include/kms/hsm/hsm.h), for tests that assert
// which calls reach the HSM. For behaviour use tests/fakes/fake_hsm.h.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "gmock/gmock.h"
#include <string>

#include "kms/hsm/hsm.h"

namespace kms::testing {

class MockHsm : public hsm::Hsm {
 public:
  MOCK_METHOD(hsm::MasterKeyKind, master_key_kind, (), (const, override));
  MOCK_METHOD(absl::StatusOr<std::vector<uint8_t>>, CreateKek, (uint32_t kek_version),
              (override));
  MOCK_METHOD(absl::Status, LoadKek,
              (uint32_t kek_version, std::span<const uint8_t> wrapped_kek), (override));
  MOCK_METHOD(bool, HasKek, (uint32_t kek_version), (const, override));
  MOCK_METHOD(absl::Status, UnloadKek, (uint32_t kek_version), (override));
  MOCK_METHOD(absl::StatusOr<std::vector<uint8_t>>, Seal,
              (uint32_t kek_version, std::span<const uint8_t> plaintext,
               std::span<const uint8_t> aad),
              (override));
  MOCK_METHOD(absl::StatusOr<SecretBytes>, Open,
              (uint32_t kek_version, std::span<const uint8_t> sealed,
               std::span<const uint8_t> aad),
              (override));
  MOCK_METHOD(absl::Status, Ping, (), (override));
  MOCK_METHOD(std::string, DescribeWrappedKek, (std::span<const uint8_t> wrapped_kek),
              (const, override));
};

}  // namespace kms::testing
