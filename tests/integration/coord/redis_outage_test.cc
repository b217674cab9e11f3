// Redis going away and coming back, on a private redis-server this test starts and kills:
// kmsd keeps answering (local rate limits, fast UNAVAILABLE publishes), and then returns
// to global behaviour on its own.
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "coord_test_util.h"
#include "gtest/gtest.h"
#include "src/coord/rate_limiters.h"
#include "src/coord/redis_invalidation_bus.h"

namespace kms::coord {
namespace {

using std::chrono::milliseconds;
using test::EventLog;
using test::IsSyntheticAll;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kRecoveryWait{15'000};  // backoff tops out at 5 s

// Calls `attempt` every 50 ms until it returns true or `timeout` passes.
bool Eventually(const std::function<bool()>& attempt, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (attempt()) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return attempt();
}

InvalidationEvent TenantEvent(const std::string& tenant) {
  InvalidationEvent event;
  event.kind = InvalidationEvent::Kind::kTenant;
  event.tenant_id = tenant;
  return event;
}

TEST(RedisOutageTest, ServesThroughAnOutageAndRecoversAfterIt) {
  test::PrivateRedis redis;
  ASSERT_TRUE(redis.Start().ok());
  const RedisOptions options = test::TestOptions(redis.addr());
  const std::string channel = test::UniqueName("kmsd:invalidate:test:");

  auto publisher = RedisInvalidationBus::Create(options, "node-a", channel);
  auto subscriber = RedisInvalidationBus::Create(options, "node-b", channel);
  auto replica1 = RedisRateLimiter::Create(options, "kmsd:rl:");
  auto replica2 = RedisRateLimiter::Create(options, "kmsd:rl:");
  ASSERT_TRUE(publisher.ok() && subscriber.ok() && replica1.ok() && replica2.ok());
  EventLog log;
  (*subscriber)->OnEvent(log.Handler());
  (*subscriber)->Start();
  ASSERT_TRUE(log.WaitForCount(1, milliseconds(5000)));
  ASSERT_TRUE(IsSyntheticAll(log.events()[0]));

  // Before: global limiting and delivery work.
  ASSERT_TRUE((*replica1)->Acquire("before", 0.01, 2).ok());
  ASSERT_TRUE((*replica2)->Acquire("before", 0.01, 2).ok());
  ASSERT_FALSE((*replica1)->Acquire("before", 0.01, 2).ok());
  ASSERT_TRUE((*publisher)->Publish(TenantEvent("t1")).ok());
  ASSERT_TRUE(log.WaitForCount(2, milliseconds(1000)));

  redis.Kill();

  // During: every Acquire answers (from the local bucket) within command_timeout, and
  // Publish fails fast with UNAVAILABLE.
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    const absl::Status status = (*replica1)->Acquire("during", 0.01, 3);
    const auto elapsed = Clock::now() - start;
    EXPECT_LE(elapsed, options.command_timeout) << "call " << i;
    if (i < 3) {
      EXPECT_TRUE(status.ok()) << "call " << i << ": " << status;
    } else {
      EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << "call " << i;
    }
  }
  EXPECT_FALSE((*replica1)->healthy());
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    const absl::Status status = (*publisher)->Publish(TenantEvent("t2"));
    EXPECT_LE(Clock::now() - start, options.command_timeout) << "publish " << i;
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  }
  EXPECT_TRUE(Eventually([&] { return !(*subscriber)->healthy(); }, milliseconds(2000)))
      << "the subscriber did not notice that Redis went away";
  const size_t events_before_restart = log.size();

  // Let the backoff grow a little, then bring Redis back (empty: no buckets, no scripts).
  std::this_thread::sleep_for(milliseconds(500));
  ASSERT_TRUE(redis.Start().ok());

  // After: the bus resubscribes and says "drop everything" ...
  EXPECT_TRUE(log.WaitFor(IsSyntheticAll, events_before_restart, kRecoveryWait))
      << "no synthetic kAll after the reconnect";
  EXPECT_TRUE((*subscriber)->healthy());
  // ... publishing works again ...
  EXPECT_TRUE(
      Eventually([&] { return (*publisher)->Publish(TenantEvent("t3")).ok(); }, kRecoveryWait));
  EXPECT_TRUE(log.WaitFor([](const InvalidationEvent& e) { return e.tenant_id == "t3"; },
                          events_before_restart, milliseconds(1000)));
  // ... and limits are global again: one bucket across both replicas.
  for (auto* replica : {replica1->get(), replica2->get()}) {
    EXPECT_TRUE(Eventually(
        [&] {
          (void)replica->Acquire("probe", 1000, 1000);
          return replica->healthy();
        },
        kRecoveryWait));
  }
  EXPECT_TRUE((*replica1)->Acquire("after", 0.01, 2).ok());
  EXPECT_TRUE((*replica2)->Acquire("after", 0.01, 2).ok());
  EXPECT_EQ((*replica1)->Acquire("after", 0.01, 2).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*replica2)->Acquire("after", 0.01, 2).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE((*replica1)->Acquire("someone-else", 0.01, 2).ok());

  (*subscriber)->Stop();
}

TEST(RedisOutageTest, BusStartedWhileRedisIsDownSubscribesWhenItComesUp) {
  test::PrivateRedis redis;  // not started yet
  auto bus = RedisInvalidationBus::Create(test::TestOptions(redis.addr()), "node-a",
                                          test::UniqueName("kmsd:invalidate:test:"));
  ASSERT_TRUE(bus.ok()) << bus.status();
  EventLog log;
  (*bus)->OnEvent(log.Handler());
  (*bus)->Start();
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_FALSE((*bus)->healthy());
  EXPECT_EQ(log.size(), 0u);
  const auto start = Clock::now();
  EXPECT_EQ((*bus)->Publish(TenantEvent("t")).code(), absl::StatusCode::kUnavailable);
  EXPECT_LE(Clock::now() - start, milliseconds(250));

  ASSERT_TRUE(redis.Start().ok());
  EXPECT_TRUE(log.WaitForCount(1, kRecoveryWait));
  EXPECT_TRUE(IsSyntheticAll(log.events().at(0)));
  EXPECT_TRUE((*bus)->healthy());
  // Stop() is prompt even while connected and idle.
  const auto stop_start = Clock::now();
  (*bus)->Stop();
  EXPECT_LT(Clock::now() - stop_start, milliseconds(500));
}

}  // namespace
}  // namespace kms::coord
