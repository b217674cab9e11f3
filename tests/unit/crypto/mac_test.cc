// src/crypto/mac.h against published vectors: FIPS 180-4 examples (SHA-2 of "abc"),
// RFC 4231 (HMAC-SHA-2) and RFC 5869 (HKDF-SHA256).
#include "src/crypto/mac.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kms::crypto {
namespace {

std::vector<uint8_t> Hex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}
std::vector<uint8_t> Str(const std::string& s) { return {s.begin(), s.end()}; }

TEST(DigestTest, Sha2OfAbcMatchesFips180Examples) {
  EXPECT_EQ(*Digest(HashAlgorithm::kSha224, Str("abc")),
            Hex("23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"));
  EXPECT_EQ(*Digest(HashAlgorithm::kSha256, Str("abc")),
            Hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  EXPECT_EQ(Digest(HashAlgorithm::kSha384, Str("abc"))->size(), 48u);
  EXPECT_EQ(*Digest(HashAlgorithm::kSha512, Str("abc")),
            Hex("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"));
}

// RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
TEST(HmacTest, MatchesRfc4231TestCase2) {
  EXPECT_EQ(*Hmac(HashAlgorithm::kSha256, Str("Jefe"), Str("what do ya want for nothing?")),
            Hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
  EXPECT_EQ(*Hmac(HashAlgorithm::kSha512, Str("Jefe"), Str("what do ya want for nothing?")),
            Hex("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"));
}

// The fixed-size forms used by SigV4, the XKS integrity value and the blind index give
// the same bytes as the general ones (the same vectors), and LowerHex spells them.
TEST(Sha256Test, FixedSizeFormsMatchThePublishedVectors) {
  EXPECT_EQ(LowerHex(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::vector<uint8_t> abc = Str("abc");
  EXPECT_EQ(Sha256(abc), Sha256("abc"));
  const std::vector<uint8_t> jefe = Str("Jefe");
  EXPECT_EQ(LowerHex(HmacSha256(jefe, "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  const Sha256Digest d = HmacSha256(jefe, Str("what do ya want for nothing?"));
  EXPECT_EQ(std::vector<uint8_t>(d.begin(), d.end()),
            *Hmac(HashAlgorithm::kSha256, jefe, Str("what do ya want for nothing?")));
  // An empty key and empty data are valid HMAC inputs (RFC 2104 pads the key).
  EXPECT_EQ(LowerHex(HmacSha256({}, "")),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

// RFC 5869 test case 3 (SHA-256, zero-length salt and info) and test case 1's info.
TEST(HkdfTest, MatchesRfc5869) {
  const std::vector<uint8_t> ikm = Hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
  auto okm = HkdfSha256(ikm, {}, 42);
  ASSERT_TRUE(okm.ok()) << okm.status();
  EXPECT_EQ(std::vector<uint8_t>(okm->span().begin(), okm->span().end()),
            Hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                "9d201395faa4b61a96c8"));
  EXPECT_EQ(HkdfSha256(ikm, {}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HkdfSha256(ikm, {}, 255 * 32 + 1).status().code(), absl::StatusCode::kInvalidArgument);
  auto other_info = HkdfSha256(ikm, Str("kmsd:hmac:v1"), 42);
  ASSERT_TRUE(other_info.ok());
  EXPECT_FALSE(okm->Equals(*other_info));
}

TEST(ConstantTimeEqualsTest, ComparesLengthAndBytes) {
  EXPECT_TRUE(ConstantTimeEquals(Str("abc"), Str("abc")));
  EXPECT_TRUE(ConstantTimeEquals({}, {}));
  EXPECT_FALSE(ConstantTimeEquals(Str("abc"), Str("abd")));
  EXPECT_FALSE(ConstantTimeEquals(Str("abc"), Str("ab")));
}

}  // namespace
}  // namespace kms::crypto
