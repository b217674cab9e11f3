// RedisRateLimiter against the shared test Redis (KMS_TEST_REDIS_ADDR): one bucket per
// identity shared by every replica.
#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "coord_test_util.h"
#include "gtest/gtest.h"
#include "src/coord/rate_limiters.h"

namespace kms::coord {
namespace {

using std::chrono::milliseconds;

class RedisRateLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    addr_ = test::SharedRedisAddr();
    ASSERT_FALSE(addr_.empty()) << test::kMissingRedisMessage;
    prefix_ = test::UniqueName("kmsd:rl:test:") + ":";
    replica1_ = Make();
    replica2_ = Make();
    ASSERT_NE(replica1_, nullptr);
    ASSERT_NE(replica2_, nullptr);
  }

  std::unique_ptr<RedisRateLimiter> Make() {
    absl::StatusOr<std::unique_ptr<RedisRateLimiter>> limiter =
        RedisRateLimiter::Create(test::TestOptions(addr_), prefix_);
    EXPECT_TRUE(limiter.ok()) << limiter.status();
    return limiter.ok() ? std::move(*limiter) : nullptr;
  }

  std::unique_ptr<RedisClient> RawClient() {
    absl::StatusOr<std::unique_ptr<RedisClient>> client =
        RedisClient::Create(test::TestOptions(addr_));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  std::string addr_;
  std::string prefix_;
  std::unique_ptr<RedisRateLimiter> replica1_;
  std::unique_ptr<RedisRateLimiter> replica2_;
};

TEST_F(RedisRateLimiterTest, ReplicasShareOneBucketPerIdentity) {
  // 0.01 tokens/s: nothing refills during the test.
  constexpr double kRate = 0.01, kBurst = 5;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(replica1_->Acquire("alice", kRate, kBurst).ok()) << i;
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(replica2_->Acquire("alice", kRate, kBurst).ok()) << i;
  for (RedisRateLimiter* replica : {replica1_.get(), replica2_.get()}) {
    const absl::Status denied = replica->Acquire("alice", kRate, kBurst);
    EXPECT_EQ(denied.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(absl::StartsWith(denied.message(), "rate limit exceeded; retry after ")) << denied;
  }
  // Other identities are unaffected, on both replicas.
  EXPECT_TRUE(replica1_->Acquire("bob", kRate, kBurst).ok());
  EXPECT_TRUE(replica2_->Acquire("bob", kRate, kBurst).ok());
  EXPECT_TRUE(replica1_->healthy());
  EXPECT_TRUE(replica2_->healthy());
}

TEST_F(RedisRateLimiterTest, RetryAfterIsTheTimeToTheNextToken) {
  // 0.5 tokens/s: the next token is 2000 ms away, minus the time since the first call.
  ASSERT_TRUE(replica1_->Acquire("alice", 0.5, 1).ok());
  const absl::Status denied = replica2_->Acquire("alice", 0.5, 1);
  ASSERT_EQ(denied.code(), absl::StatusCode::kResourceExhausted);
  const std::string message(denied.message());
  const std::string prefix = "rate limit exceeded; retry after ";
  ASSERT_EQ(message.substr(0, prefix.size()), prefix);
  const int ms = std::stoi(message.substr(prefix.size()));
  EXPECT_GT(ms, 1500);
  EXPECT_LE(ms, 2000);
}

TEST_F(RedisRateLimiterTest, TokensRefillWithRedisTime) {
  ASSERT_TRUE(replica1_->Acquire("alice", 20, 1).ok());
  ASSERT_FALSE(replica2_->Acquire("alice", 20, 1).ok());
  std::this_thread::sleep_for(milliseconds(80));  // 20/s: one token per 50 ms
  EXPECT_TRUE(replica2_->Acquire("alice", 20, 1).ok());
  EXPECT_FALSE(replica1_->Acquire("alice", 20, 1).ok());
}

TEST_F(RedisRateLimiterTest, BucketKeyExpiresAboutWhenItWouldBeFull) {
  ASSERT_TRUE(replica1_->Acquire("alice", 1, 10).ok());
  auto raw = RawClient();
  ASSERT_NE(raw, nullptr);
  absl::StatusOr<RedisValue> ttl = raw->Command({"PTTL", prefix_ + "alice"});
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  ASSERT_EQ(ttl->type, RedisValue::Type::kInteger);
  EXPECT_GT(ttl->integer, 10'000);  // 10 s to refill, plus a second
  EXPECT_LE(ttl->integer, 11'000);
}

TEST_F(RedisRateLimiterTest, ScriptIsReloadedAfterAScriptFlush) {
  auto raw = RawClient();
  ASSERT_NE(raw, nullptr);
  ASSERT_TRUE(replica1_->Acquire("alice", 0.01, 2).ok());
  ASSERT_TRUE(raw->Command({"SCRIPT", "FLUSH"}).ok());
  // NOSCRIPT, then EVAL: still the global bucket (not the local fallback, which would
  // start full and allow two).
  EXPECT_TRUE(replica2_->Acquire("alice", 0.01, 2).ok());
  EXPECT_FALSE(replica1_->Acquire("alice", 0.01, 2).ok());
  absl::StatusOr<RedisValue> exists = raw->Command({"SCRIPT", "EXISTS", replica1_->script_sha1()});
  ASSERT_TRUE(exists.ok()) << exists.status();
  ASSERT_EQ(exists->type, RedisValue::Type::kArray);
  ASSERT_EQ(exists->elements.size(), 1u);
  EXPECT_EQ(exists->elements[0].integer, 1) << "our SHA-1 is not the one Redis computes";
}

TEST_F(RedisRateLimiterTest, ManyThreadsOnTwoReplicasNeverExceedTheBurst) {
  constexpr int kBurst = 50;
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    RedisRateLimiter* replica = (t % 2 == 0 ? replica1_ : replica2_).get();
    threads.emplace_back([replica, &allowed] {
      for (int i = 0; i < 20; ++i) {
        if (replica->Acquire("crowd", 0.01, kBurst).ok()) allowed.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(allowed.load(), kBurst);
  EXPECT_TRUE(replica1_->healthy());
}

}  // namespace
}  // namespace kms::coord
