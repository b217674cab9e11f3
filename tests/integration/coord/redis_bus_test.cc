// RedisInvalidationBus against the shared test Redis (KMS_TEST_REDIS_ADDR).
#include <chrono>
#include <memory>
#include <string>

#include "coord_test_util.h"
#include "gtest/gtest.h"
#include "src/coord/invalidation_codec.h"
#include "src/coord/redis_invalidation_bus.h"

namespace kms::coord {
namespace {

using std::chrono::milliseconds;
using test::EventLog;
using test::IsSyntheticAll;
using Kind = InvalidationEvent::Kind;

constexpr milliseconds kSubscribeWait{5000};

class RedisBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    addr_ = test::SharedRedisAddr();
    ASSERT_FALSE(addr_.empty()) << test::kMissingRedisMessage;
    channel_ = test::UniqueName("kmsd:invalidate:test:");
  }

  // A started bus for `node` on this test's channel whose subscriber is ready.
  std::unique_ptr<RedisInvalidationBus> StartBus(const std::string& node, EventLog* log) {
    absl::StatusOr<std::unique_ptr<RedisInvalidationBus>> bus =
        RedisInvalidationBus::Create(test::TestOptions(addr_), node, channel_);
    EXPECT_TRUE(bus.ok()) << bus.status();
    if (!bus.ok()) return nullptr;
    (*bus)->OnEvent(log->Handler());
    (*bus)->Start();
    EXPECT_TRUE(log->WaitForCount(1, kSubscribeWait)) << node << " never subscribed";
    return std::move(*bus);
  }

  InvalidationEvent TenantEvent(const std::string& tenant) {
    InvalidationEvent event;
    event.kind = Kind::kTenant;
    event.tenant_id = tenant;
    return event;
  }

  std::string addr_;
  std::string channel_;
};

TEST_F(RedisBusTest, SubscribingDeliversASyntheticDropEverything) {
  EventLog log;
  auto bus = StartBus("node-a", &log);
  ASSERT_NE(bus, nullptr);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(IsSyntheticAll(log.events()[0]));
  EXPECT_TRUE(bus->healthy());
}

TEST_F(RedisBusTest, PublishedEventReachesAnotherNodeWithinOneSecond) {
  EventLog log_a, log_b;
  auto a = StartBus("node-a", &log_a);
  auto b = StartBus("node-b", &log_b);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(a->Publish(TenantEvent("acme")).ok());
  ASSERT_TRUE(log_b.WaitForCount(2, milliseconds(1000))) << "not received within 1 s";
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
  const InvalidationEvent received = log_b.events()[1];
  EXPECT_EQ(received.kind, Kind::kTenant);
  EXPECT_EQ(received.tenant_id, "acme");
  EXPECT_EQ(received.origin, "node-a");

  InvalidationEvent jwt;
  jwt.kind = Kind::kJwt;
  ASSERT_TRUE(a->Publish(jwt).ok());
  ASSERT_TRUE(log_b.WaitForCount(3, milliseconds(1000)));
  EXPECT_EQ(log_b.events()[2].kind, Kind::kJwt);
}

TEST_F(RedisBusTest, OwnEventsAreIgnored) {
  EventLog log_a, log_b;
  auto a = StartBus("node-a", &log_a);
  auto b = StartBus("node-b", &log_b);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  // The origin is stamped by the bus, whatever the caller says.
  InvalidationEvent spoofed = TenantEvent("from-a");
  spoofed.origin = "node-b";
  ASSERT_TRUE(a->Publish(spoofed).ok());
  ASSERT_TRUE(log_b.WaitForCount(2, milliseconds(1000)));
  EXPECT_EQ(log_b.events()[1].origin, "node-a");
  // Redis delivers one channel's messages in order: once node-a sees node-b's later
  // event, it has already been handed (and dropped) its own.
  ASSERT_TRUE(b->Publish(TenantEvent("from-b")).ok());
  ASSERT_TRUE(log_a.WaitForCount(2, milliseconds(1000)));
  const std::vector<InvalidationEvent> seen_by_a = log_a.events();
  ASSERT_EQ(seen_by_a.size(), 2u);
  EXPECT_TRUE(IsSyntheticAll(seen_by_a[0]));
  EXPECT_EQ(seen_by_a[1].tenant_id, "from-b");
  EXPECT_EQ(seen_by_a[1].origin, "node-b");
}

TEST_F(RedisBusTest, UndecodablePayloadIsDeliveredAsDropEverything) {
  EventLog log;
  auto bus = StartBus("node-a", &log);
  ASSERT_NE(bus, nullptr);
  absl::StatusOr<std::unique_ptr<RedisClient>> raw = RedisClient::Create(test::TestOptions(addr_));
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_TRUE((*raw)->Command({"PUBLISH", channel_, "kmsd-inv9 something new"}).ok());
  ASSERT_TRUE(log.WaitForCount(2, milliseconds(1000)));
  EXPECT_TRUE(IsSyntheticAll(log.events()[1]));
}

TEST_F(RedisBusTest, StopIsPromptAndIdempotent) {
  EventLog log;
  auto bus = StartBus("node-a", &log);
  ASSERT_NE(bus, nullptr);
  const auto start = std::chrono::steady_clock::now();
  bus->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(500));
  EXPECT_FALSE(bus->healthy());
  bus->Stop();
}

TEST_F(RedisBusTest, CreateRejectsAnEmptyNodeId) {
  EXPECT_EQ(RedisInvalidationBus::Create(test::TestOptions(addr_), "", channel_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kms::coord
