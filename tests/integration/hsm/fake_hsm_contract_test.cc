// The Hsm contract (hsm_contract.h) for FakeHsm (tests/fakes/fake_hsm.h): the double the
// unit tests use behaves as the seam promises, as Pkcs11Hsm does.
#include <memory>

#include "gtest/gtest.h"
#include "tests/fakes/fake_hsm.h"
#include "tests/integration/hsm/hsm_contract.h"

namespace kms::hsm::contract {
namespace {

absl::StatusOr<std::unique_ptr<Hsm>> MakeFakeHsm() {
  return std::unique_ptr<Hsm>(std::make_unique<kms::testing::FakeHsm>());
}

INSTANTIATE_TEST_SUITE_P(Fake, HsmContractTest,
                         ::testing::Values(HsmBackend{"fake", MasterKeyKind::kAes256,
                                                      &MakeFakeHsm}),
                         HsmBackendName);

// What only the fake has: failure injection.
TEST(FakeHsmTest, WhileUnavailableEveryCallOnTheTokenIsUnavailable) {
  kms::testing::FakeHsm hsm;
  auto blob = hsm.CreateKek(1);
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto sealed = hsm.Seal(1, *blob, {});
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  hsm.SetUnavailable(true);
  EXPECT_TRUE(absl::IsUnavailable(hsm.Ping()));
  EXPECT_TRUE(absl::IsUnavailable(hsm.CreateKek(2).status()));
  EXPECT_TRUE(absl::IsUnavailable(hsm.LoadKek(3, *blob)));
  EXPECT_TRUE(absl::IsUnavailable(hsm.Seal(1, *blob, {}).status()));
  EXPECT_TRUE(absl::IsUnavailable(hsm.Open(1, *sealed, {}).status()));
  hsm.SetUnavailable(false);
  EXPECT_TRUE(hsm.Open(1, *sealed, {}).ok());
  EXPECT_EQ(hsm.seals(), 1u);
  EXPECT_EQ(hsm.opens(), 1u);
}

}  // namespace
}  // namespace kms::hsm::contract
