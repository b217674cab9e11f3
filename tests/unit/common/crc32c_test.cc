// CRC32C against the published vectors (RFC 3720 Appendix B.4, and the check value of
// "123456789"), on the hardware path and the portable one.
#include "src/common/crc32c.h"

#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kms {
namespace {

struct Vector {
  std::string name;
  std::vector<uint8_t> data;
  uint32_t crc;
};

std::vector<Vector> Vectors() {
  std::vector<Vector> v;
  v.push_back({"ThirtyTwoZeros", std::vector<uint8_t>(32, 0x00), 0x8A9136AA});
  v.push_back({"ThirtyTwoOnes", std::vector<uint8_t>(32, 0xFF), 0x62A8AB43});
  std::vector<uint8_t> inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<uint8_t>(i);
    dec[i] = static_cast<uint8_t>(31 - i);
  }
  v.push_back({"Incrementing", inc, 0x46DD794E});
  v.push_back({"Decrementing", dec, 0x113FDB5C});
  // An iSCSI SCSI Read (10) command PDU (RFC 3720 B.4).
  v.push_back({"IscsiReadPdu",
               {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
               0xD9963A56});
  v.push_back({"CheckValue", {'1', '2', '3', '4', '5', '6', '7', '8', '9'}, 0xE3069283});
  v.push_back({"Empty", {}, 0x00000000});
  return v;
}

class Crc32cVectorTest : public ::testing::TestWithParam<Vector> {};

TEST_P(Crc32cVectorTest, BothImplementationsGiveThePublishedValue) {
  EXPECT_EQ(Crc32c(GetParam().data), GetParam().crc);
  EXPECT_EQ(Crc32cPortable(0, GetParam().data), GetParam().crc);
}

INSTANTIATE_TEST_SUITE_P(Rfc3720, Crc32cVectorTest, ::testing::ValuesIn(Vectors()),
                         [](const auto& info) { return info.param.name; });

TEST(Crc32cTest, HardwareAndPortableAgreeOnEveryLengthAndAlignment) {
  std::mt19937 rng(42);
  std::vector<uint8_t> buf(4096 + 16);
  for (uint8_t& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4096}) {
      std::span<const uint8_t> s(buf.data() + offset, n);
      EXPECT_EQ(Crc32c(s), Crc32cPortable(0, s)) << offset << "/" << n;
    }
  }
  std::cout << "CRC32C hardware path: " << (Crc32cHardware() ? "SSE4.2" : "none") << "\n";
}

TEST(Crc32cTest, ExtendContinuesACrc) {
  const std::string a = "12345", b = "6789";
  const uint32_t first = Crc32c(a);
  EXPECT_EQ(Crc32cExtend(first, {reinterpret_cast<const uint8_t*>(b.data()), b.size()}),
            0xE3069283u);
}

}  // namespace
}  // namespace kms
