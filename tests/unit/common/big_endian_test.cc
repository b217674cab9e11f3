#include "src/common/big_endian.h"

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"

namespace kms {
namespace {

using Bytes = std::vector<uint8_t>;

TEST(BigEndianTest, AppendU32WritesTheMostSignificantByteFirst) {
  Bytes out = {0xaa};
  AppendU32(out, 0x01020304);
  AppendU32(out, 0);
  AppendU32(out, 0xffffffff);
  EXPECT_EQ(out, (Bytes{0xaa, 1, 2, 3, 4, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}));
}

TEST(BigEndianTest, AppendBytesAppendsTextAndBytesAsTheyAre) {
  Bytes out;
  AppendBytes(out, std::string_view("ab\0", 3));
  const std::array<uint8_t, 2> more = {0xfe, 0x00};
  AppendBytes(out, more);
  EXPECT_EQ(out, (Bytes{'a', 'b', 0, 0xfe, 0}));
}

TEST(BigEndianTest, AppendLengthPrefixedWritesTheLengthThenTheBytes) {
  Bytes out;
  AppendLengthPrefixed(out, "ab");
  AppendLengthPrefixed(out, "");
  AppendLengthPrefixed(out, std::string(0x0102, 'x'));
  ASSERT_EQ(out.size(), 4u + 2 + 4 + 4 + 0x0102);
  EXPECT_EQ(Bytes(out.begin(), out.begin() + 14),
            (Bytes{0, 0, 0, 2, 'a', 'b', 0, 0, 0, 0, 0, 0, 1, 2}));
}

TEST(BigEndianTest, LengthPrefixesKeepAdjacentFieldsApart) {
  Bytes a, b;
  AppendLengthPrefixed(a, "a");
  AppendLengthPrefixed(a, "bc");
  AppendLengthPrefixed(b, "ab");
  AppendLengthPrefixed(b, "c");
  EXPECT_NE(a, b);
}

TEST(BigEndianDeathTest, AFieldOfFourGibibytesIsABug) {
  Bytes out;
  const char byte = 'x';
  // Only the length is looked at before the abort: nothing is read past `byte`.
  const std::string_view huge(&byte, size_t{1} << 32);
  EXPECT_DEATH(AppendLengthPrefixed(out, huge), "4 GiB");
}

TEST(BigEndianTest, StoreAndLoadU32AreBigEndianAndInverse) {
  std::array<uint8_t, 6> buf{};
  StoreU32(std::span<uint8_t, 4>(buf.data() + 1, 4), 0xa1b2c3d4);
  EXPECT_EQ(buf, (std::array<uint8_t, 6>{0, 0xa1, 0xb2, 0xc3, 0xd4, 0}));
  EXPECT_EQ(LoadU32(std::span<const uint8_t, 4>(buf.data() + 1, 4)), 0xa1b2c3d4u);
  const std::array<uint8_t, 4> one = {0, 0, 0, 1};
  EXPECT_EQ(LoadU32(one), 1u);
}

}  // namespace
}  // namespace kms
