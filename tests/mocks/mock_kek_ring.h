// MockKekRing: gMock double of the KEK ring seam (include/kms/keys/kek_ring.h), for
// tests that assert which calls a key holder makes (which version it seals under,
// that a cached path makes none). For behaviour use tests/fakes/fake_kek_ring.h; a
// test that needs both can forward the mock's calls to a FakeKekRing (DelegateTo).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "gmock/gmock.h"
#include "kms/keys/kek_ring.h"

namespace kms::testing {

class MockKekRing : public keys::KekRing {
 public:
  MOCK_METHOD(uint32_t, primary_version, (), (const, override));
  MOCK_METHOD(absl::Status, EnsureLoaded, (uint32_t kek_version), (override));
  MOCK_METHOD(absl::StatusOr<std::vector<uint8_t>>, Seal,
              (uint32_t kek_version, std::span<const uint8_t> plaintext,
               std::span<const uint8_t> aad),
              (override));
  MOCK_METHOD(absl::StatusOr<SecretBytes>, Open,
              (uint32_t kek_version, std::span<const uint8_t> sealed,
               std::span<const uint8_t> aad),
              (override));
  MOCK_METHOD(absl::StatusOr<std::vector<uint8_t>>, Reseal,
              (uint32_t from_version, std::span<const uint8_t> sealed,
               std::span<const uint8_t> from_aad, uint32_t to_version,
               std::span<const uint8_t> to_aad),
              (override));
  MOCK_METHOD(absl::Status, Refresh, (), (override));
  MOCK_METHOD(absl::Status, Ping, (), (override));

  // Default actions: every call goes to `ring` (which must outlive the mock). Only the
  // defaults: a StrictMock still fails on a call no EXPECT_CALL allows.
  void DelegateTo(keys::KekRing* ring) {
    using ::testing::_;
    ON_CALL(*this, primary_version).WillByDefault([ring] { return ring->primary_version(); });
    ON_CALL(*this, EnsureLoaded).WillByDefault([ring](uint32_t v) { return ring->EnsureLoaded(v); });
    ON_CALL(*this, Seal).WillByDefault(
        [ring](uint32_t v, std::span<const uint8_t> pt, std::span<const uint8_t> aad) {
          return ring->Seal(v, pt, aad);
        });
    ON_CALL(*this, Open).WillByDefault(
        [ring](uint32_t v, std::span<const uint8_t> sealed, std::span<const uint8_t> aad) {
          return ring->Open(v, sealed, aad);
        });
    ON_CALL(*this, Reseal)
        .WillByDefault([ring](uint32_t from, std::span<const uint8_t> sealed,
                              std::span<const uint8_t> from_aad, uint32_t to,
                              std::span<const uint8_t> to_aad) {
          return ring->Reseal(from, sealed, from_aad, to, to_aad);
        });
    ON_CALL(*this, Refresh).WillByDefault([ring] { return ring->Refresh(); });
    ON_CALL(*this, Ping).WillByDefault([ring] { return ring->Ping(); });
  }
};

}  // namespace kms::testing
