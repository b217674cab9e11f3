#include "src/common/base64.h"

#include <openssl/evp.h>

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kms {
namespace {

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

// Reference encoder for the standard alphabet: OpenSSL's, independent of ours.
std::string OpenSslBase64(const std::vector<uint8_t>& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), in.data(),
                                static_cast<int>(in.size()));
  out.resize(n);
  return out;
}

struct Rfc4648Vector {
  std::string plain;
  std::string encoded;
};

void PrintTo(const Rfc4648Vector& v, std::ostream* os) { *os << '"' << v.plain << '"'; }

class Rfc4648VectorTest : public testing::TestWithParam<Rfc4648Vector> {};

TEST_P(Rfc4648VectorTest, EncodeGivesThePublishedText) {
  EXPECT_EQ(Base64Encode(Bytes(GetParam().plain)), GetParam().encoded);
}

TEST_P(Rfc4648VectorTest, DecodeOfThePublishedTextGivesThePlainBytes) {
  auto decoded = Base64Decode(GetParam().encoded);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, Bytes(GetParam().plain));
}

TEST_P(Rfc4648VectorTest, DecodeAcceptsTheTextWithoutPadding) {
  std::string unpadded = GetParam().encoded;
  while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
  auto decoded = Base64Decode(unpadded);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, Bytes(GetParam().plain));
}

// RFC 4648 §10.
INSTANTIATE_TEST_SUITE_P(
    Rfc4648Section10, Rfc4648VectorTest,
    testing::Values(Rfc4648Vector{"", ""}, Rfc4648Vector{"f", "Zg=="}, Rfc4648Vector{"fo", "Zm8="},
                    Rfc4648Vector{"foo", "Zm9v"}, Rfc4648Vector{"foob", "Zm9vYg=="},
                    Rfc4648Vector{"fooba", "Zm9vYmE="}, Rfc4648Vector{"foobar", "Zm9vYmFy"}),
    [](const testing::TestParamInfo<Rfc4648Vector>& info) {
      return info.param.plain.empty() ? std::string("Empty") : info.param.plain;
    });

TEST(Base64Test, EncodeMatchesOpenSslForEveryLengthUpTo100) {
  std::mt19937 rng(42);
  for (size_t len = 0; len <= 100; ++len) {
    std::vector<uint8_t> data(len);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    EXPECT_EQ(Base64Encode(data), OpenSslBase64(data)) << "length " << len;
  }
}

TEST(Base64Test, EveryByteValueRoundTripsInEveryPosition) {
  for (size_t offset = 0; offset < 3; ++offset) {
    std::vector<uint8_t> data(offset, 0x55);
    for (int b = 0; b < 256; ++b) data.push_back(static_cast<uint8_t>(b));
    const std::string text = Base64Encode(data);
    EXPECT_EQ(text, OpenSslBase64(data));
    auto decoded = Base64Decode(text);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, data);
  }
}

TEST(Base64Test, RandomDataRoundTrips) {
  std::mt19937 rng(7);
  for (size_t len = 0; len <= 64; ++len) {
    std::vector<uint8_t> data(len);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    auto decoded = Base64Decode(Base64Encode(data));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, data);
  }
}

class Base64RejectionTest : public testing::TestWithParam<std::string> {};

TEST_P(Base64RejectionTest, DecodeRejectsItWithInvalidArgument) {
  auto decoded = Base64Decode(GetParam());
  ASSERT_FALSE(decoded.ok()) << "accepted \"" << GetParam() << "\"";
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(BadInput, Base64RejectionTest,
                         testing::Values("Z",         // No encoding has 4k+1 characters.
                                         "Zm9vY",     // Same, after a full quantum.
                                         "Zg=",       // Padding that does not complete a quantum.
                                         "Zm=v",      // Padding in the middle.
                                         "Zg==Zg==",  // Padding followed by more data.
                                         "Zg===",     // Too much padding.
                                         "Z===",      // Padding where data must be.
                                         "====",      // Only padding.
                                         "=Zg=",      // Leading padding.
                                         "Zm9v\n",    // Whitespace.
                                         "Zm 9v",     // Whitespace.
                                         "Zm9v!",     // Not in any alphabet.
                                         "Zm-v",      // base64url character in standard base64.
                                         "Zm_v",      // base64url character in standard base64.
                                         "Zh==",  // Non-zero unused bits: not the canonical "Zg==".
                                         "Zm9=",  // Non-zero unused bits: not the canonical "Zm8=".
                                         "Zh",    // Same, unpadded.
                                         std::string("Zm\0v", 4),  // Embedded NUL.
                                         "Zm9v\xc3\xa9"));         // Non-ASCII.

TEST(Base64UrlTest, UsesTheUrlSafeAlphabetWithoutPadding) {
  const std::vector<uint8_t> data = {0xfb, 0xff, 0xbf};
  EXPECT_EQ(Base64Encode(data), "+/+/");
  EXPECT_EQ(Base64UrlEncode(data), "-_-_");
  EXPECT_EQ(Base64UrlEncode(Bytes("f")), "Zg");
  EXPECT_EQ(Base64UrlEncode(Bytes("fo")), "Zm8");
  EXPECT_EQ(Base64UrlEncode(Bytes("foo")), "Zm9v");
  EXPECT_EQ(Base64UrlEncode({}), "");
}

TEST(Base64UrlTest, EncodesAJwtHeaderAsJwsDoes) {
  // RFC 7515 Appendix A.1: the protected header {"typ":"JWT",\r\n "alg":"HS256"}.
  EXPECT_EQ(Base64UrlEncode(Bytes("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}")),
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9");
}

TEST(Base64UrlTest, RandomDataRoundTrips) {
  std::mt19937 rng(11);
  for (size_t len = 0; len <= 64; ++len) {
    std::vector<uint8_t> data(len);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    const std::string text = Base64UrlEncode(data);
    EXPECT_EQ(text.find_first_of("+/="), std::string::npos);
    auto decoded = Base64UrlDecode(text);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, data);
  }
}

TEST(Base64UrlTest, DecodeRejectsPaddingAndTheStandardAlphabet) {
  for (std::string_view bad : {"Zg==", "Zm8=", "+/+/", "Zm9/", "Z", "Zh", "Zm9v "}) {
    auto decoded = Base64UrlDecode(bad);
    ASSERT_FALSE(decoded.ok()) << "accepted \"" << bad << "\"";
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(Base64Test, ErrorMessagesDoNotEchoTheInput) {
  auto decoded = Base64Decode("c2VjcmV0!!");
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().message().find("c2VjcmV0"), std::string_view::npos);
}

}  // namespace
}  // namespace kms
