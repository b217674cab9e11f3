// The encrypted file format v1 (src/crypto/file_stream.h): round trips at the sizes
// where segmentation changes, and every way a file can be cut, reordered, spliced or
// altered is refused.
#include "src/crypto/file_stream.h"

#include <cstring>

#include "gtest/gtest.h"
#include "src/crypto/aes_gcm.h"

namespace kms::crypto {
namespace {

using ::absl::StatusCode;

constexpr uint32_t kSeg = kMinSegmentSize;  // small segments keep the tests quick
constexpr size_t kSealed = kSeg + kAesGcmTagSize;

SecretBytes Key() { return RandomSecret(kFileDataKeySize).value(); }

FileHeader Header() {
  FileHeader h;
  h.segment_size = kSeg;
  h.key_kind = FileKeyKind::kNamedKey;
  h.key_name = "backup";
  h.context = {{"job", "nightly"}, {"host", "db-1"}};
  h.wrapped_key = "wrapped-key-bytes";
  h.nonce_prefix = NewNoncePrefix().value();
  return h;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) & 0xff);
  return s;
}

std::string Encrypt(const FileHeader& h, const SecretBytes& key, const std::string& plain) {
  StringSource in(plain);
  StringSink out;
  absl::Status s = EncryptFileStream(h, key, in, out);
  EXPECT_TRUE(s.ok()) << s;
  return out.data();
}

absl::StatusOr<std::string> Decrypt(const SecretBytes& key, const std::string& file,
                                    FileHeader* header_out = nullptr) {
  StringSource in(file);
  std::vector<uint8_t> raw;
  KMS_ASSIGN_OR_RETURN(FileHeader h, ReadFileHeader(in, &raw));
  if (header_out != nullptr) *header_out = h;
  StringSink out;
  KMS_RETURN_IF_ERROR(DecryptFileStream(h, raw, key, in, out));
  return out.data();
}

size_t HeaderSize(const FileHeader& h) { return EncodeFileHeader(h).value().size(); }

class FileStreamRoundTripTest : public ::testing::TestWithParam<size_t> {};

TEST_P(FileStreamRoundTripTest, RoundTripsAndHasTheDocumentedSize) {
  const size_t n = GetParam();
  const FileHeader h = Header();
  const SecretBytes key = Key();
  const std::string plain = Pattern(n);
  const std::string file = Encrypt(h, key, plain);
  const size_t segments = n == 0 ? 1 : (n + kSeg - 1) / kSeg;
  EXPECT_EQ(file.size(), HeaderSize(h) + n + segments * kAesGcmTagSize);
  FileHeader read;
  auto back = Decrypt(key, file, &read);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, plain);
  EXPECT_EQ(read.key_name, "backup");
  EXPECT_EQ(read.wrapped_key, "wrapped-key-bytes");
  ASSERT_EQ(read.context.size(), 2u);
  EXPECT_EQ(read.context[0].first, "host");  // sorted
  EXPECT_EQ(read.segment_size, kSeg);
}

INSTANTIATE_TEST_SUITE_P(Sizes, FileStreamRoundTripTest,
                         ::testing::Values(0, 1, kSeg - 1, kSeg, kSeg + 1, 3 * kSeg,
                                           3 * kSeg + 17),
                         [](const auto& info) { return "Bytes" + std::to_string(info.param); });

TEST(FileStreamTest, EveryTruncationAtASegmentBoundaryIsRefused) {
  const FileHeader h = Header();
  const SecretBytes key = Key();
  for (size_t n : {size_t{4} * kSeg, size_t{4} * kSeg + 100}) {
    const std::string file = Encrypt(h, key, Pattern(n));
    const size_t header = HeaderSize(h);
    const size_t segments = (n + kSeg - 1) / kSeg;
    for (size_t keep = 0; keep < segments; ++keep) {
      const std::string cut = file.substr(0, header + keep * kSealed);
      auto s = Decrypt(key, cut).status();
      EXPECT_EQ(s.code(), StatusCode::kDataLoss) << "n=" << n << " keep=" << keep << " " << s;
    }
    // Cut inside a segment too, and inside the tag of the last one.
    EXPECT_EQ(Decrypt(key, file.substr(0, file.size() - 1)).status().code(), StatusCode::kDataLoss);
    EXPECT_EQ(Decrypt(key, file.substr(0, header + kSealed + 10)).status().code(),
              StatusCode::kDataLoss);
    // A header cut short is a malformed header.
    EXPECT_EQ(Decrypt(key, file.substr(0, header - 1)).status().code(),
              StatusCode::kInvalidArgument);
  }
}

TEST(FileStreamTest, SwappedSegmentsAreRefused) {
  const FileHeader h = Header();
  const SecretBytes key = Key();
  std::string file = Encrypt(h, key, Pattern(3 * kSeg));
  const size_t header = HeaderSize(h);
  std::string swapped = file;
  swapped.replace(header, kSealed, file.substr(header + kSealed, kSealed));
  swapped.replace(header + kSealed, kSealed, file.substr(header, kSealed));
  EXPECT_EQ(Decrypt(key, swapped).status().code(), StatusCode::kDataLoss);
  // The last segment moved before a middle one, and a duplicated segment.
  std::string dup = file;
  dup.insert(header + kSealed, file.substr(header, kSealed));
  EXPECT_EQ(Decrypt(key, dup).status().code(), StatusCode::kDataLoss);
}

TEST(FileStreamTest, AFlippedByteAnywhereIsRefused) {
  const FileHeader h = Header();
  const SecretBytes key = Key();
  const std::string file = Encrypt(h, key, Pattern(2 * kSeg + 5));
  const size_t header = HeaderSize(h);
  // Every byte of the header, and a sample of segment bytes and tags.
  std::vector<size_t> positions;
  for (size_t i = 0; i < header; ++i) positions.push_back(i);
  for (size_t i = header; i < file.size(); i += 997) positions.push_back(i);
  positions.push_back(file.size() - 1);
  for (size_t pos : positions) {
    std::string bad = file;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x01);
    auto s = Decrypt(key, bad).status();
    EXPECT_FALSE(s.ok()) << "flipped byte " << pos << " accepted";
  }
}

TEST(FileStreamTest, SegmentsSplicedFromAnotherFileOrAppendedBytesAreRefused) {
  const SecretBytes key = Key();
  FileHeader a = Header(), b = Header();  // other nonce prefixes
  const std::string fa = Encrypt(a, key, Pattern(2 * kSeg));
  const std::string fb = Encrypt(b, key, Pattern(2 * kSeg));
  const size_t header = HeaderSize(a);
  std::string spliced = fa.substr(0, header + kSealed) + fb.substr(header + kSealed);
  EXPECT_EQ(Decrypt(key, spliced).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(Decrypt(key, fa + "x").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(Decrypt(key, fa + fa.substr(header, kSealed)).status().code(), StatusCode::kDataLoss);
  // Another key.
  EXPECT_EQ(Decrypt(Key(), fa).status().code(), StatusCode::kDataLoss);
}

TEST(FileStreamTest, NotOurFormatIsSaidPlainly) {
  auto s = Decrypt(Key(), "PK\x03\x04 a zip file").status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "not a kmsd encrypted file");
  std::string v2 = Encrypt(Header(), Key(), "x");
  v2[8] = 2;
  EXPECT_EQ(Decrypt(Key(), v2).status().message(), "unsupported encrypted file version 2");
  EXPECT_EQ(Decrypt(Key(), "").status().message(), "not a kmsd encrypted file");
}

TEST(FileStreamTest, BadParametersAreRefusedBeforeAnythingIsWritten) {
  FileHeader h = Header();
  StringSource in("data");
  StringSink out;
  SecretBytes short_key(16);
  EXPECT_EQ(EncryptFileStream(h, short_key, in, out).code(), StatusCode::kInvalidArgument);
  h.segment_size = 100;
  EXPECT_EQ(EncryptFileStream(h, Key(), in, out).code(), StatusCode::kInvalidArgument);
  h = Header();
  h.context = {{"a", "1"}, {"a", "2"}};
  EXPECT_EQ(EncryptFileStream(h, Key(), in, out).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(out.data().empty());
}

TEST(FileStreamTest, ProgressCountsPlaintextBytes) {
  StringSource in(Pattern(2 * kSeg + 3));
  StringSink out;
  std::vector<uint64_t> seen;
  ASSERT_TRUE(EncryptFileStream(Header(), Key(), in, out, [&](uint64_t n) { seen.push_back(n); })
                  .ok());
  EXPECT_EQ(seen, (std::vector<uint64_t>{kSeg, 2 * kSeg, 2 * kSeg + 3}));
}

}  // namespace
}  // namespace kms::crypto
