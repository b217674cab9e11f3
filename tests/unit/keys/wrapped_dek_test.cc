#include "src/keys/wrapped_dek.h"

#include "gtest/gtest.h"
#include "src/keys/tenant_id.h"
#include "tests/fakes/fake_kek_ring.h"

namespace kms::keys {
namespace {

class WrappedDekTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(ring_.CreateKek(1).ok()); }
  testing::FakeKekRing ring_;
  SecretBytes dek_ = SecretBytes::CopyOf(std::string(32, 'k'));
};

TEST_F(WrappedDekTest, BlobHasTheDocumentedLayout) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_);
  ASSERT_TRUE(blob.ok());
  ASSERT_EQ(blob->size(), 1u + 4 + 12 + 32 + 16);
  EXPECT_EQ((*blob)[0], 0x01);
  EXPECT_EQ(WrappedDekKekVersion(*blob).value(), 1u);
}

TEST_F(WrappedDekTest, BlobHeaderIsTheFormatByteAndTheKekVersionBigEndian) {
  ASSERT_TRUE(ring_.CreateKek(0x01020304).ok());
  auto blob = WrapDek(ring_, 0x01020304, "acme", 3, dek_);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(std::vector<uint8_t>(blob->begin(), blob->begin() + 5),
            (std::vector<uint8_t>{0x01, 1, 2, 3, 4}));
  EXPECT_EQ(WrappedDekKekVersion(*blob).value(), 0x01020304u);
}

TEST(DekAadTest, IsLabelTenantLengthTenantDekVersionAndKekVersion) {
  const std::string label = "kmsd:dek:v1";
  std::vector<uint8_t> expected(label.begin(), label.end());
  for (int b : {0, 0, 0, 2, int{'a'}, int{'b'}, 1, 2, 3, 4, 5, 6, 7, 8}) {
    expected.push_back(static_cast<uint8_t>(b));
  }
  EXPECT_EQ(DekAad("ab", 0x01020304, 0x05060708), expected);
}

TEST_F(WrappedDekTest, RoundTripsForTheSameTenantAndVersion) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  auto dek = UnwrapDek(ring_, "acme", 3, blob);
  ASSERT_TRUE(dek.ok());
  EXPECT_TRUE(dek->Equals(dek_));
}

TEST_F(WrappedDekTest, BlobMovedToAnotherTenantDoesNotUnwrap) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  EXPECT_FALSE(UnwrapDek(ring_, "globex", 3, blob).ok());
}

TEST_F(WrappedDekTest, BlobRelabelledWithAnotherVersionDoesNotUnwrap) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  EXPECT_FALSE(UnwrapDek(ring_, "acme", 4, blob).ok());
}

TEST_F(WrappedDekTest, AnyFlippedByteIsRejected) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  for (size_t i = 0; i < blob.size(); ++i) {
    auto bad = blob;
    bad[i] ^= 0x01;
    EXPECT_FALSE(UnwrapDek(ring_, "acme", 3, bad).ok()) << "byte " << i;
  }
}

TEST_F(WrappedDekTest, TruncatedBlobIsRejected) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  blob.pop_back();
  EXPECT_FALSE(UnwrapDek(ring_, "acme", 3, blob).ok());
}

TEST_F(WrappedDekTest, RewrapMovesTheBlobToTheNewKekAndKeepsTheDek) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  ASSERT_TRUE(ring_.CreateKek(2).ok());
  auto moved = RewrapDek(ring_, 2, "acme", 3, blob);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(WrappedDekKekVersion(*moved).value(), 2u);
  EXPECT_EQ(moved->size(), blob.size());
  ASSERT_TRUE(ring_.hsm().UnloadKek(1).ok());  // the old KEK is no longer needed
  ring_.set_loads_from_table(false);
  auto dek = UnwrapDek(ring_, "acme", 3, *moved);
  ASSERT_TRUE(dek.ok()) << dek.status();
  EXPECT_TRUE(dek->Equals(dek_));
  EXPECT_FALSE(UnwrapDek(ring_, "acme", 3, blob).ok());
  // Bound to tenant and DEK version on both sides of the re-wrap.
  EXPECT_FALSE(RewrapDek(ring_, 2, "globex", 3, *moved).ok());
  EXPECT_FALSE(RewrapDek(ring_, 2, "acme", 4, *moved).ok());
}

TEST_F(WrappedDekTest, HsmErrorsReachCallersOnlyAsUnavailableOrInternal) {
  auto blob = WrapDek(ring_, 1, "acme", 3, dek_).value();
  // KEK version 2 does not exist: the ring says DATA_LOSS, which must not reach the
  // caller as anything but an internal error.
  EXPECT_TRUE(absl::IsInternal(WrapDek(ring_, 2, "acme", 3, dek_).status()));
  ring_.hsm().SetUnavailable(true);
  EXPECT_TRUE(absl::IsUnavailable(UnwrapDek(ring_, "acme", 3, blob).status()));
  EXPECT_TRUE(absl::IsUnavailable(WrapDek(ring_, 1, "acme", 3, dek_).status()));
  ring_.hsm().SetUnavailable(false);
}

TEST(TenantIdTest, AcceptsTheDocumentedAlphabet) {
  EXPECT_TRUE(ValidateTenantId("acme").ok());
  EXPECT_TRUE(ValidateTenantId("Acme-01.eu_west").ok());
  EXPECT_TRUE(ValidateTenantId(std::string(64, 'a')).ok());
}

TEST(TenantIdTest, RejectsMalformedIds) {
  for (std::string bad : {std::string(), std::string(65, 'a'), std::string("-acme"),
                          std::string("ac me"), std::string("acme/1"), std::string("acme\n"),
                          std::string("a\0b", 3), std::string("ünicode")}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ValidateTenantId(bad))) << bad;
  }
}

}  // namespace
}  // namespace kms::keys
