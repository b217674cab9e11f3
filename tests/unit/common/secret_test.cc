#include "kms/common/secret.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kms {
namespace {

std::vector<uint8_t> ToVector(const SecretBytes& s) { return {s.span().begin(), s.span().end()}; }

TEST(SecretBytesTest, DefaultConstructedIsEmpty) {
  SecretBytes s;
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.size(), 0u);
  EXPECT_TRUE(s.span().empty());
}

TEST(SecretBytesTest, SizedConstructorGivesZeroBytes) {
  SecretBytes s(37);
  ASSERT_EQ(s.size(), 37u);
  EXPECT_EQ(ToVector(s), std::vector<uint8_t>(37, 0));
}

TEST(SecretBytesTest, CopyOfCopiesSpansAndStrings) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 0, 255};
  SecretBytes from_span = SecretBytes::CopyOf(bytes);
  EXPECT_EQ(ToVector(from_span), bytes);
  EXPECT_NE(from_span.data(), bytes.data());

  SecretBytes from_string = SecretBytes::CopyOf(std::string_view("ab\0c", 4));
  EXPECT_EQ(ToVector(from_string), (std::vector<uint8_t>{'a', 'b', 0, 'c'}));

  EXPECT_TRUE(SecretBytes::CopyOf(std::string_view()).empty());
}

TEST(SecretBytesTest, MoveConstructionTransfersTheStorageAndEmptiesTheSource) {
  SecretBytes a = SecretBytes::CopyOf(std::string_view("key material"));
  const uint8_t* storage = a.data();
  SecretBytes b(std::move(a));
  EXPECT_EQ(b.data(), storage);  // Moved, not copied: no second copy to wipe.
  EXPECT_EQ(b.size(), 12u);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): checking the moved-from state.
  EXPECT_EQ(a.data(), nullptr);
}

TEST(SecretBytesTest, MoveAssignmentReplacesTheTargetAndEmptiesTheSource) {
  SecretBytes a = SecretBytes::CopyOf(std::string_view("first"));
  SecretBytes b = SecretBytes::CopyOf(std::string_view("second one"));
  const uint8_t* storage = b.data();
  a = std::move(b);
  EXPECT_EQ(a.data(), storage);
  EXPECT_TRUE(a.Equals(SecretBytes::CopyOf(std::string_view("second one"))));
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
}

TEST(SecretBytesTest, CloneIsAnIndependentEqualCopy) {
  SecretBytes a = SecretBytes::CopyOf(std::string_view("0123456789abcdef"));
  SecretBytes b = a.Clone();
  EXPECT_NE(a.data(), b.data());
  EXPECT_TRUE(a.Equals(b));
  b.data()[0] ^= 1;
  EXPECT_FALSE(a.Equals(b));
  EXPECT_EQ(a.data()[0], '0');
}

TEST(SecretBytesTest, CloneOfEmptyIsEmpty) { EXPECT_TRUE(SecretBytes().Clone().empty()); }

TEST(SecretBytesTest, TruncateShrinksAndWipesTheDroppedTail) {
  SecretBytes s = SecretBytes::CopyOf(std::string_view("ABCDEFGH"));
  const uint8_t* storage = s.data();
  s.Truncate(3);
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.data(), storage);
  EXPECT_EQ(ToVector(s), (std::vector<uint8_t>{'A', 'B', 'C'}));
  // The dropped bytes are still inside this object's allocation, so reading them is
  // defined; they must be gone.
  for (size_t i = 3; i < 8; ++i) EXPECT_EQ(storage[i], 0) << "byte " << i;
}

TEST(SecretBytesTest, TruncateToTheCurrentSizeOrZeroIsAllowed) {
  SecretBytes s = SecretBytes::CopyOf(std::string_view("abc"));
  s.Truncate(3);
  EXPECT_EQ(s.size(), 3u);
  s.Truncate(0);
  EXPECT_TRUE(s.empty());
}

TEST(SecretBytesTest, EqualsComparesContentsAndLength) {
  const auto a = SecretBytes::CopyOf(std::string_view("same bytes"));
  EXPECT_TRUE(a.Equals(SecretBytes::CopyOf(std::string_view("same bytes"))));
  EXPECT_FALSE(a.Equals(SecretBytes::CopyOf(std::string_view("same bytez"))));
  EXPECT_FALSE(a.Equals(SecretBytes::CopyOf(std::string_view("same byte"))));
  EXPECT_FALSE(a.Equals(SecretBytes()));
  EXPECT_TRUE(SecretBytes().Equals(SecretBytes()));
  EXPECT_TRUE(SecretBytes(0).Equals(SecretBytes()));
}

TEST(SecretBytesTest, PageSizedSecretsArePageAligned) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (size_t size : {page, page + 1, 3 * page - 1}) {
    SecretBytes s(size);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s.data()) % page, 0u) << "size " << size;
    EXPECT_EQ(s.size(), size);
  }
}

// Reads the VmFlags of the mapping that holds `p` from /proc/self/smaps.
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(smaps, line)) {
    unsigned long start = 0, end = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> start >> dash >> end && dash == '-') {
      in_mapping = addr >= start && addr < end;
      continue;
    }
    if (in_mapping && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

TEST(SecretBytesTest, PageSizedSecretsAreExcludedFromCoreDumps) {
  SecretBytes s(2 * static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  const std::string flags = VmFlagsOf(s.data());
  if (flags.empty()) GTEST_SKIP() << "/proc/self/smaps not readable";
  EXPECT_NE(flags.find(" dd"), std::string::npos) << flags;
}

// Kilobytes of locked memory of this process, or -1.
long LockedKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

TEST(SecretBytesTest, PagesStayLockedUntilTheLastSecretOnThemIsFreed) {
  SetSecretMemoryLocking(true);
  const long baseline = LockedKb();
  {
    auto first = std::make_unique<SecretBytes>(SecretBytes::CopyOf(std::string_view("k1")));
    const long with_one = LockedKb();
    if (with_one <= baseline) GTEST_SKIP() << "mlock not permitted here";
    // Small secrets share heap pages: freeing one must not unlock its neighbours.
    std::vector<SecretBytes> neighbours;
    for (int i = 0; i < 64; ++i)
      neighbours.emplace_back(SecretBytes::CopyOf(std::string_view("kk")));
    first.reset();
    EXPECT_GT(LockedKb(), baseline);
  }
  EXPECT_EQ(LockedKb(), baseline);
}

TEST(SecretBytesTest, WorksWithMemoryLockingTurnedOff) {
  SetSecretMemoryLocking(false);
  SecretBytes locked_never = SecretBytes::CopyOf(std::string_view("abc"));
  SecretBytes big(10000);
  EXPECT_EQ(locked_never.size(), 3u);
  SetSecretMemoryLocking(true);
  // Freed after locking is back on: must not unlock pages it never locked.
}

TEST(SecretBytesTest, ManyAllocationsAndFreesOfMixedSizesSucceed) {
  std::vector<SecretBytes> live;
  for (size_t i = 0; i < 2000; ++i) {
    live.emplace_back(SecretBytes((i * 37) % 9000));
    if (i % 3 == 0) live.erase(live.begin() + static_cast<long>(i % live.size()));
  }
  SUCCEED();
}

TEST(HardenProcessTest, DisablesCoreDumpsAndPtraceDumpability) {
  ASSERT_TRUE(HardenProcess());
  EXPECT_EQ(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
  struct rlimit core {};
  ASSERT_EQ(getrlimit(RLIMIT_CORE, &core), 0);
  EXPECT_EQ(core.rlim_cur, 0u);
  EXPECT_EQ(core.rlim_max, 0u);
}

}  // namespace
}  // namespace kms
