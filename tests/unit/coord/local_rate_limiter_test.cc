#include <chrono>
#include <string>

#include "gtest/gtest.h"
#include "kms/common/clock.h"
#include "src/coord/rate_limiters.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::coord {
namespace {

using ::kms::testing::SimulatedClock;

using std::chrono::milliseconds;

class LocalRateLimiterTest : public ::testing::Test {
 protected:
  SimulatedClock clock_;
  LocalRateLimiter limiter_{&clock_};
};

TEST_F(LocalRateLimiterTest, NewIdentityGetsAFullBurstThenIsDenied) {
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(limiter_.Acquire("alice", 10, 5).ok()) << "request " << i;
  }
  const absl::Status denied = limiter_.Acquire("alice", 10, 5);
  EXPECT_EQ(denied.code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(LocalRateLimiterTest, DenialSaysWhenTheNextTokenArrives) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter_.Acquire("alice", 10, 3).ok());
  EXPECT_EQ(limiter_.Acquire("alice", 10, 3).message(), "rate limit exceeded; retry after 100 ms");
  clock_.Advance(milliseconds(30));
  EXPECT_EQ(limiter_.Acquire("alice", 10, 3).message(), "rate limit exceeded; retry after 70 ms");
  // At 2 per second one token takes 500 ms.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(limiter_.Acquire("bob", 2, 2).ok());
  EXPECT_EQ(limiter_.Acquire("bob", 2, 2).message(), "rate limit exceeded; retry after 500 ms");
}

TEST_F(LocalRateLimiterTest, TokensRefillAtTheRate) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter_.Acquire("alice", 10, 5).ok());
  ASSERT_FALSE(limiter_.Acquire("alice", 10, 5).ok());
  clock_.Advance(milliseconds(99));
  EXPECT_FALSE(limiter_.Acquire("alice", 10, 5).ok());
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(limiter_.Acquire("alice", 10, 5).ok());
  EXPECT_FALSE(limiter_.Acquire("alice", 10, 5).ok());
  clock_.Advance(milliseconds(300));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter_.Acquire("alice", 10, 5).ok()) << i;
  EXPECT_FALSE(limiter_.Acquire("alice", 10, 5).ok());
}

TEST_F(LocalRateLimiterTest, RefillStopsAtTheBurst) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter_.Acquire("alice", 10, 5).ok());
  clock_.Advance(std::chrono::hours(1));
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter_.Acquire("alice", 10, 5).ok()) << i;
  EXPECT_FALSE(limiter_.Acquire("alice", 10, 5).ok());
}

TEST_F(LocalRateLimiterTest, IdentitiesHaveSeparateBuckets) {
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(limiter_.Acquire("alice", 1, 2).ok());
  EXPECT_FALSE(limiter_.Acquire("alice", 1, 2).ok());
  EXPECT_TRUE(limiter_.Acquire("bob", 1, 2).ok());
  EXPECT_TRUE(limiter_.Acquire("bob", 1, 2).ok());
  EXPECT_FALSE(limiter_.Acquire("bob", 1, 2).ok());
  EXPECT_TRUE(limiter_.Acquire(std::string("alice\0x", 7), 1, 2).ok());
}

TEST_F(LocalRateLimiterTest, FractionalRatesWork) {
  ASSERT_TRUE(limiter_.Acquire("slow", 0.5, 1).ok());
  EXPECT_EQ(limiter_.Acquire("slow", 0.5, 1).message(), "rate limit exceeded; retry after 2000 ms");
  clock_.Advance(milliseconds(2000));
  EXPECT_TRUE(limiter_.Acquire("slow", 0.5, 1).ok());
}

TEST_F(LocalRateLimiterTest, InvalidLimitsAreRejected) {
  EXPECT_EQ(limiter_.Acquire("a", 0, 5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_.Acquire("a", -1, 5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_.Acquire("a", 1, 0.5).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_.Acquire("a", std::numeric_limits<double>::infinity(), 5).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(limiter_.Acquire("a", 1, std::numeric_limits<double>::quiet_NaN()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LocalRateLimiterMemoryTest, FullBucketsAreForgottenWhenTheTableIsFull) {
  SimulatedClock clock;
  LocalRateLimiter limiter(&clock, /*max_identities=*/10);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(limiter.Acquire("id" + std::to_string(i), 1, 1).ok());
  EXPECT_EQ(limiter.tracked_identities(), 10u);
  clock.Advance(std::chrono::seconds(1));  // every bucket is full again
  ASSERT_TRUE(limiter.Acquire("new", 1, 1).ok());
  EXPECT_EQ(limiter.tracked_identities(), 1u);
}

TEST(LocalRateLimiterMemoryTest, BucketsStillLimitingAreKept) {
  SimulatedClock clock;
  LocalRateLimiter limiter(&clock, /*max_identities=*/2);
  ASSERT_TRUE(limiter.Acquire("a", 1, 1).ok());
  ASSERT_TRUE(limiter.Acquire("b", 1, 1).ok());
  ASSERT_TRUE(limiter.Acquire("c", 1, 1).ok());  // sweeps, but a and b are empty
  EXPECT_FALSE(limiter.Acquire("a", 1, 1).ok());
  EXPECT_FALSE(limiter.Acquire("b", 1, 1).ok());
}

}  // namespace
}  // namespace kms::coord
