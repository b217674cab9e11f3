#include "kms/common/clock.h"

#include <ctime>

#include "gtest/gtest.h"
#include "tests/test_common/simulated_clock.h"

namespace kms {
namespace {

using ::kms::testing::SimulatedClock;

TEST(RealClockTest, UnixSecondsFollowsTheSystemWallClock) {
  const int64_t before = static_cast<int64_t>(std::time(nullptr));
  const int64_t now = RealClock::Instance().UnixSeconds();
  const int64_t after = static_cast<int64_t>(std::time(nullptr));
  EXPECT_GE(now, before);
  EXPECT_LE(now, after);
}

TEST(RealClockTest, InstanceIsOneSharedClock) {
  EXPECT_EQ(&RealClock::Instance(), &RealClock::Instance());
}

TEST(RealClockTest, NowIsMonotonic) {
  const auto a = RealClock::Instance().Now();
  const auto b = RealClock::Instance().Now();
  EXPECT_LE(a, b);
}

TEST(SimulatedClockTest, MovesOnlyWhenAdvanced) {
  SimulatedClock clock(1000);
  const auto start = clock.Now();
  EXPECT_EQ(clock.UnixSeconds(), 1000);
  clock.Advance(std::chrono::seconds(5));
  EXPECT_EQ(clock.UnixSeconds(), 1005);
  EXPECT_EQ(clock.Now() - start, std::chrono::seconds(5));
}

}  // namespace
}  // namespace kms
