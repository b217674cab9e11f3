// Blind-index normalizations and the index construction (src/keys/blind_index.h).
#include "src/keys/blind_index.h"

#include "gtest/gtest.h"

namespace kms::keys {
namespace {

using ::absl::StatusCode;

std::string N(std::string_view kind, std::string_view value) {
  auto n = NormalizeForIndex(kind, value);
  return n.ok() ? *n : "<" + std::string(n.status().message()) + ">";
}

TEST(NormalizeForIndexTest, EmailIsTrimmedAndLowerCased) {
  EXPECT_EQ(N("email", " Alice@Example.COM "), "alice@example.com");
  EXPECT_EQ(N("email", "\talice@example.com\r\n"), "alice@example.com");
  EXPECT_EQ(N("email", "alice@example.com"), "alice@example.com");
  for (const char* bad : {"alice", "@example.com", "alice@", "a@b@c", "al ice@example.com", "   "}) {
    EXPECT_EQ(NormalizeForIndex("email", bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(NormalizeForIndexTest, PhoneIsE164) {
  EXPECT_EQ(N("phone", "+1 (415) 555-0100"), "+14155550100");
  EXPECT_EQ(N("phone", "0049 30 1234567"), "+49301234567");
  EXPECT_EQ(N("phone", " +44.20.7946.0958 "), "+442079460958");
  EXPECT_EQ(NormalizeForIndex("phone", "415 555 0100").status().code(),
            StatusCode::kInvalidArgument);  // no country code
  for (const char* bad : {"+1 415 CALL NOW", "+123", "+1234567890123456", "+0123456789"}) {
    EXPECT_EQ(NormalizeForIndex("phone", bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(NormalizeForIndexTest, IpIsCanonicalText) {
  EXPECT_EQ(N("ip", "192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(N("ip", " 2001:DB8:0:0:0:0:0:1 "), "2001:db8::1");
  EXPECT_EQ(N("ip", "2001:0db8:0000:0000:0000:ff00:0042:8329"), "2001:db8::ff00:42:8329");
  EXPECT_EQ(N("ip", "::ffff:192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(N("ip", "::1"), "::1");
  for (const char* bad : {"256.1.1.1", "1.2.3", "example.com", "1::2::3"}) {
    EXPECT_EQ(NormalizeForIndex("ip", bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(NormalizeForIndexTest, ExactKeepsTheBytesAndEmptyOrUnknownIsRefused) {
  EXPECT_EQ(N("exact", " A\0b "), " A\0b ");
  EXPECT_EQ(NormalizeForIndex("exact", "").status().code(), StatusCode::kInvalidArgument);
  auto unknown = NormalizeForIndex("soundex", "x");
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("unknown normalization"), std::string::npos);
}

TEST(ComputeBlindIndexTest, IsHmacSha256OverTheDocumentedInput) {
  SecretBytes key(32);
  for (size_t i = 0; i < 32; ++i) key.data()[i] = static_cast<uint8_t>(i);
  auto index = ComputeBlindIndex(key, "email", "alice@example.com");
  ASSERT_TRUE(index.ok());
  // Python: hmac.new(bytes(range(32)), b"kmsd:bidx:v1" + struct.pack(">I", 5) + b"email"
  //         + b"alice@example.com", hashlib.sha256).hexdigest()
  static const char kExpected[] = "f84dbabb19e8978e67dc106f609faa46136d52b08b02e7feec9cd6b059df184d";
  std::string hex;
  for (uint8_t b : *index) {
    static const char* d = "0123456789abcdef";
    hex.push_back(d[b >> 4]);
    hex.push_back(d[b & 0xf]);
  }
  EXPECT_EQ(hex, kExpected);
  // The normalization's name is bound: the same bytes as "exact" index differently.
  EXPECT_NE(*ComputeBlindIndex(key, "exact", "alice@example.com"), *index);
}

}  // namespace
}  // namespace kms::keys
