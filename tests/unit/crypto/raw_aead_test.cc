// The raw AEAD pieces: the specification's CDIV example (aws-kms-xksproxy-api-spec v1.0.3,
// Appendix C), the metadata format and the GCM AAD construction.
#include "src/crypto/raw_aead.h"

#include <string>

#include "gtest/gtest.h"
#include "src/common/base64.h"

namespace kms::crypto {
namespace {

std::vector<uint8_t> B64(const std::string& text) { return Base64Decode(text).value(); }
std::vector<uint8_t> V(const std::string& s) { return {s.begin(), s.end()}; }

TEST(RawAeadTest, IntegrityValueMatchesTheSpecificationsAppendixCExample) {
  RawSealed sealed{.iv = B64("HMrlRw85cAJUd5Ax"),
                   .ciphertext = B64("ghxkK1txeDNn3q8Y"),
                   .tag = B64("vBxN2ncH1oEkR8WVXpmyYQ==")};
  const std::vector<uint8_t> aad = V("project=nile,department=marketing");
  const std::vector<uint8_t> metadata = B64("a2V5X3ZlcnNpb249MQ==");  // "key_version=1"
  const Sha256Digest cdiv = RawIntegrityValue(aad, metadata, sealed);
  EXPECT_EQ(Base64Encode(cdiv), "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
}

TEST(RawAeadTest, MetadataCarriesTheDekVersion) {
  const std::vector<uint8_t> m = RawMetadata(0x01020304);
  EXPECT_EQ(m, (std::vector<uint8_t>{0x01, 0x01, 0x02, 0x03, 0x04}));
  EXPECT_EQ(ParseRawMetadata(m).value(), 0x01020304u);
  EXPECT_FALSE(ParseRawMetadata(RawMetadata(0)).ok());
  EXPECT_FALSE(ParseRawMetadata(V("key_version=1")).ok());
  EXPECT_FALSE(ParseRawMetadata({}).ok());
  std::vector<uint8_t> other_format = m;
  other_format[0] = 0x02;
  EXPECT_FALSE(ParseRawMetadata(other_format).ok());
}

TEST(RawAeadTest, GcmAadIsTheSpecificationsLengthPrefixedConstruction) {
  const std::vector<uint8_t> aad = V("ab");
  const std::vector<uint8_t> metadata = V("xyz");
  EXPECT_EQ(RawAad(aad, metadata).value(),
            (std::vector<uint8_t>{0x00, 0x02, 'a', 'b', 0x03, 'x', 'y', 'z'}));
  EXPECT_EQ(RawAad({}, {}).value(), (std::vector<uint8_t>{0x00, 0x00, 0x00}));
  // The lengths keep AAD and metadata apart.
  EXPECT_NE(RawAad(metadata, {}).value(), RawAad({}, metadata).value());
  EXPECT_FALSE(RawAad(std::vector<uint8_t>(kMaxRawAadBytes + 1), {}).ok());
  EXPECT_TRUE(RawAad(std::vector<uint8_t>(kMaxRawAadBytes), {}).ok());
}

}  // namespace
}  // namespace kms::crypto
