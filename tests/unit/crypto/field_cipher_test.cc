#include "src/crypto/field_cipher.h"

#include <initializer_list>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kms::crypto {
namespace {

void Append(std::vector<uint8_t>& out, std::initializer_list<uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

void Append(std::vector<uint8_t>& out, std::string_view text) {
  out.insert(out.end(), text.begin(), text.end());
}

std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class FieldCipherTest : public testing::Test {
 protected:
  void SetUp() override {
    auto secret = RandomSecret(kAesGcmKeySize);
    ASSERT_TRUE(secret.ok());
    auto key = AesGcmKey::Create(*secret);
    ASSERT_TRUE(key.ok());
    key_ = std::move(*key);
  }

  std::vector<uint8_t> Aad(std::string_view tenant, uint32_t dek_version,
                           std::vector<ContextPair> context = {}) {
    auto aad = FieldAad(tenant, dek_version, context);
    EXPECT_TRUE(aad.ok()) << aad.status();
    return aad.ok() ? *aad : std::vector<uint8_t>();
  }

  std::string Seal(std::string_view plaintext, uint32_t dek_version,
                   const std::vector<uint8_t>& aad) {
    std::string out;
    EXPECT_TRUE(SealField(*key_, dek_version, aad, AsBytes(plaintext), &out).ok());
    return out;
  }

  // Parses and opens, as a caller would: the AAD is built from the parsed DEK version.
  absl::StatusOr<std::string> Open(std::string_view sealed, std::string_view tenant,
                                   std::vector<ContextPair> context = {}) {
    KMS_ASSIGN_OR_RETURN(FieldView view, ParseField(AsBytes(sealed)));
    KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> aad, FieldAad(tenant, view.dek_version, context));
    std::string out;
    KMS_RETURN_IF_ERROR(OpenField(*key_, view, aad, &out));
    return out;
  }

  std::unique_ptr<AesGcmKey> key_;
};

TEST_F(FieldCipherTest, SealedFieldOpensToThePlaintextWithoutContext) {
  const std::string sealed = Seal("alice@example.com", 3, Aad("tenant-a", 3));
  auto opened = Open(sealed, "tenant-a");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "alice@example.com");
}

TEST_F(FieldCipherTest, SealedFieldOpensToThePlaintextWithContext) {
  const std::vector<ContextPair> context = {{"table", "users"}, {"column", "email"}};
  const std::string sealed = Seal("alice@example.com", 9, Aad("tenant-a", 9, context));
  auto opened = Open(sealed, "tenant-a", context);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "alice@example.com");
}

TEST_F(FieldCipherTest, EmptyPlaintextSealsToExactlyTheOverhead) {
  const std::string sealed = Seal("", 1, Aad("t", 1));
  EXPECT_EQ(sealed.size(), kFieldOverhead);
  auto opened = Open(sealed, "t");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, "");
}

TEST_F(FieldCipherTest, HeaderBytesSitAtTheDocumentedOffsets) {
  const std::string plaintext = "0123456789";
  const std::vector<uint8_t> aad = Aad("t", 0x01020304);
  const std::string sealed = Seal(plaintext, 0x01020304, aad);
  ASSERT_EQ(sealed.size(), 1 + 4 + 12 + plaintext.size() + 16);
  const auto* b = reinterpret_cast<const uint8_t*>(sealed.data());
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[1], 0x01);
  EXPECT_EQ(b[2], 0x02);
  EXPECT_EQ(b[3], 0x03);
  EXPECT_EQ(b[4], 0x04);

  auto view = ParseField(AsBytes(sealed));
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->dek_version, 0x01020304u);
  EXPECT_EQ(view->nonce.data(), b + 5);
  EXPECT_EQ(view->nonce.size(), 12u);
  EXPECT_EQ(view->ciphertext_and_tag.data(), b + 17);
  EXPECT_EQ(view->ciphertext_and_tag.size(), plaintext.size() + 16);

  // Decrypting straight from the documented offsets, without ParseField, works too.
  std::vector<uint8_t> out(plaintext.size());
  ASSERT_TRUE(key_->Decrypt({b + 5, 12}, {b + 17, plaintext.size() + 16}, aad, out).ok());
  EXPECT_EQ(std::string(out.begin(), out.end()), plaintext);
}

TEST_F(FieldCipherTest, TwoSealsOfTheSamePlaintextDiffer) {
  const auto aad = Aad("t", 1);
  const std::string a = Seal("same", 1, aad);
  const std::string b = Seal("same", 1, aad);
  EXPECT_NE(a, b);
  EXPECT_NE(a.substr(5, 12), b.substr(5, 12));  // A fresh nonce each time.
}

TEST_F(FieldCipherTest, FlippingAnySingleByteMakesOpenFail) {
  const std::vector<ContextPair> context = {{"column", "ssn"}};
  const std::string sealed = Seal("123-45-6789", 2, Aad("tenant-a", 2, context));
  ASSERT_TRUE(Open(sealed, "tenant-a", context).ok());
  for (size_t i = 0; i < sealed.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string corrupted = sealed;
      corrupted[i] = static_cast<char>(corrupted[i] ^ mask);
      auto opened = Open(corrupted, "tenant-a", context);
      EXPECT_FALSE(opened.ok()) << "byte " << i << " mask " << int{mask};
      if (!opened.ok()) {
        // A header that does not parse is INVALID_ARGUMENT; anything else DATA_LOSS.
        EXPECT_TRUE(opened.status().code() == absl::StatusCode::kDataLoss ||
                    opened.status().code() == absl::StatusCode::kInvalidArgument)
            << opened.status();
      }
    }
  }
}

TEST_F(FieldCipherTest, OpenWithAnotherTenantFails) {
  const std::string sealed = Seal("secret", 1, Aad("tenant-a", 1));
  auto opened = Open(sealed, "tenant-b");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FieldCipherTest, OpenWithAnotherDekVersionInTheAadFails) {
  const std::string sealed = Seal("secret", 1, Aad("tenant-a", 1));
  auto view = ParseField(AsBytes(sealed));
  ASSERT_TRUE(view.ok());
  std::string out = "previous contents";
  const absl::Status status = OpenField(*key_, *view, Aad("tenant-a", 2), &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "decryption failed");
  EXPECT_TRUE(out.empty());
}

TEST_F(FieldCipherTest, RelabellingTheDekVersionInTheHeaderFails) {
  std::string sealed = Seal("secret", 1, Aad("tenant-a", 1));
  sealed[4] = 0x02;  // Same key, but the header now claims DEK version 2.
  auto opened = Open(sealed, "tenant-a");
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(FieldCipherTest, OpenWithAnotherContextFails) {
  const std::vector<ContextPair> sealed_with = {{"column", "email"}};
  const std::string sealed = Seal("secret", 1, Aad("tenant-a", 1, sealed_with));
  for (const auto& other :
       std::vector<std::vector<ContextPair>>{{},
                                             {{"column", "phone"}},
                                             {{"column", "email"}, {"table", "users"}},
                                             {{"Column", "email"}}}) {
    auto opened = Open(sealed, "tenant-a", other);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  }
}

TEST_F(FieldCipherTest, OpenWithAnotherKeyFails) {
  const std::string sealed = Seal("secret", 1, Aad("t", 1));
  auto other = AesGcmKey::Create(*RandomSecret(kAesGcmKeySize));
  ASSERT_TRUE(other.ok());
  auto view = ParseField(AsBytes(sealed));
  ASSERT_TRUE(view.ok());
  std::string out;
  EXPECT_EQ(OpenField(**other, *view, Aad("t", 1), &out).code(), absl::StatusCode::kDataLoss);
}

TEST_F(FieldCipherTest, SealRejectsDekVersionZero) {
  std::string out;
  EXPECT_EQ(SealField(*key_, 0, Aad("t", 0), AsBytes("x"), &out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FieldCipherTest, SealReplacesWhatTheOutputHeld) {
  std::string out(500, 'z');
  ASSERT_TRUE(SealField(*key_, 1, Aad("t", 1), AsBytes("abc"), &out).ok());
  EXPECT_EQ(out.size(), kFieldOverhead + 3);
}

TEST_F(FieldCipherTest, ParseRejectsEveryLengthBelowTheOverhead) {
  const std::string sealed = Seal("", 1, Aad("t", 1));
  ASSERT_EQ(sealed.size(), 33u);
  for (size_t len = 0; len <= 32; ++len) {
    auto view = ParseField(AsBytes(std::string_view(sealed).substr(0, len)));
    ASSERT_FALSE(view.ok()) << "length " << len;
    EXPECT_EQ(view.status().code(), absl::StatusCode::kInvalidArgument) << "length " << len;
  }
  EXPECT_TRUE(ParseField(AsBytes(sealed)).ok());
}

TEST_F(FieldCipherTest, ParseRejectsUnknownVersionsAndDekVersionZero) {
  std::string sealed = Seal("abc", 1, Aad("t", 1));
  for (int version : {0x00, 0x02, 0xff}) {
    std::string bad = sealed;
    bad[0] = static_cast<char>(version);
    EXPECT_EQ(ParseField(AsBytes(bad)).status().code(), absl::StatusCode::kInvalidArgument);
  }
  std::string zero = sealed;
  zero[4] = 0;
  EXPECT_EQ(ParseField(AsBytes(zero)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FieldAadTest, MatchesTheDocumentedBytesExactly) {
  const std::vector<ContextPair> context = {{"col", "email"}, {"a", "x"}};
  auto aad = FieldAad("t1", 7, context);
  ASSERT_TRUE(aad.ok());
  std::vector<uint8_t> expected;
  Append(expected, "kmsd:field:v1");
  Append(expected, {0, 0, 0, 2, 't', '1'});              // len32 || tenant
  Append(expected, {0, 0, 0, 7});                        // DEK version
  Append(expected, {0, 0, 0, 2});                        // pair count
  Append(expected, {0, 0, 0, 1, 'a', 0, 0, 0, 1, 'x'});  // "a" sorts first
  Append(expected, {0, 0, 0, 3, 'c', 'o', 'l', 0, 0, 0, 5, 'e', 'm', 'a', 'i', 'l'});
  EXPECT_EQ(*aad, expected);
}

TEST(FieldAadTest, EmptyContextEncodesAsAZeroCount) {
  auto aad = FieldAad("", 0x0a0b0c0d, {});
  ASSERT_TRUE(aad.ok());
  std::vector<uint8_t> expected;
  Append(expected, "kmsd:field:v1");
  Append(expected, {0, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0});
  EXPECT_EQ(*aad, expected);
}

TEST(FieldAadTest, OrderOfContextPairsDoesNotMatter) {
  const std::vector<ContextPair> one = {{"b", "2"}, {"a", "1"}, {"c", "3"}};
  const std::vector<ContextPair> two = {{"c", "3"}, {"b", "2"}, {"a", "1"}};
  EXPECT_EQ(*FieldAad("t", 1, one), *FieldAad("t", 1, two));
}

TEST(FieldAadTest, KeysSortAsUnsignedBytes) {
  // 0xc3 sorts after 'z' bytewise (it would sort first as a signed char).
  const std::vector<ContextPair> context = {{"\xc3", "1"}, {"z", "2"}};
  auto aad = FieldAad("t", 1, context);
  ASSERT_TRUE(aad.ok());
  const std::string_view text(reinterpret_cast<const char*>(aad->data()), aad->size());
  EXPECT_LT(text.find('z'), text.find('\xc3'));
}

TEST(FieldAadTest, DuplicateKeysAreRejected) {
  const std::vector<ContextPair> context = {{"a", "1"}, {"b", "2"}, {"a", "1"}};
  EXPECT_EQ(FieldAad("t", 1, context).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FieldAadTest, KeyValueBoundaryIsUnambiguous) {
  const std::vector<ContextPair> one = {{"a", "bc"}};
  const std::vector<ContextPair> two = {{"ab", "c"}};
  EXPECT_NE(*FieldAad("t", 1, one), *FieldAad("t", 1, two));
}

TEST(FieldAadTest, TenantAndContextBoundaryIsUnambiguous) {
  EXPECT_NE(*FieldAad("ab", 1, {}), *FieldAad("a", 1, {}));
  EXPECT_NE(*FieldAad("t", 1, {}), *FieldAad("t", 2, {}));
}

}  // namespace
}  // namespace kms::crypto
