// Every mock of tests/mocks compiles against its seam and records calls: a seam that
// changes breaks this build first, not a distant test.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/mocks/mock_authorizer.h"
#include "tests/mocks/mock_clock.h"
#include "tests/mocks/mock_coordination.h"
#include "tests/mocks/mock_hsm.h"
#include "tests/mocks/mock_kek_ring.h"
#include "tests/mocks/mock_key_store.h"

namespace kms::testing {
namespace {

using ::testing::_;
using ::testing::Return;
using ::testing::StrictMock;

TEST(MocksTest, EveryMockAnswersAsToldAndChecksItsCalls) {
  StrictMock<MockHsm> hsm;
  EXPECT_CALL(hsm, HasKek(3)).WillOnce(Return(true));
  EXPECT_TRUE(static_cast<hsm::Hsm&>(hsm).HasKek(3));

  StrictMock<MockKekRing> ring;
  EXPECT_CALL(ring, primary_version()).WillOnce(Return(4u));
  EXPECT_EQ(static_cast<keys::KekRing&>(ring).primary_version(), 4u);

  StrictMock<MockKeyStore> store;
  EXPECT_CALL(store, GetEpoch()).WillOnce(Return(17));
  EXPECT_EQ(*static_cast<store::KeyStore&>(store).GetEpoch(), 17);
  StrictMock<MockKekStore> keks;
  EXPECT_CALL(keks, ListKeks()).WillOnce(Return(std::vector<store::KekRecord>{}));
  EXPECT_TRUE(static_cast<store::KekStore&>(keks).ListKeks()->empty());
  StrictMock<MockTenantKeyStore> tenants;
  EXPECT_CALL(tenants, GetTenant("acme")).WillOnce(Return(absl::NotFoundError("no tenant")));
  EXPECT_TRUE(absl::IsNotFound(static_cast<store::TenantKeyStore&>(tenants).GetTenant("acme").status()));
  StrictMock<MockJwtKeyStore> jwt_keys;
  EXPECT_CALL(jwt_keys, ListJwtKeys()).WillOnce(Return(std::vector<store::JwtKeyRecord>{}));
  EXPECT_TRUE(static_cast<store::JwtKeyStore&>(jwt_keys).ListJwtKeys()->empty());
  StrictMock<MockRotationJobStore> jobs;
  EXPECT_CALL(jobs, GetRotationJob(5)).WillOnce(Return(absl::NotFoundError("no job")));
  EXPECT_FALSE(static_cast<store::RotationJobStore&>(jobs).GetRotationJob(5).ok());
  StrictMock<MockStoreHealth> health;
  EXPECT_CALL(health, Ping()).WillOnce(Return(absl::OkStatus()));
  EXPECT_TRUE(static_cast<store::StoreHealth&>(health).Ping().ok());

  StrictMock<MockInvalidationBus> bus;
  EXPECT_CALL(bus, Publish(InvalidationOf(coord::InvalidationEvent::Kind::kTenant, "acme")))
      .WillOnce(Return(absl::OkStatus()));
  EXPECT_TRUE(static_cast<coord::InvalidationBus&>(bus)
                  .Publish({.kind = coord::InvalidationEvent::Kind::kTenant, .tenant_id = "acme"})
                  .ok());

  StrictMock<MockRateLimiter> limiter;
  EXPECT_CALL(limiter, Acquire("alice", 5.0, _))
      .WillOnce(Return(absl::ResourceExhaustedError("rate limit exceeded")));
  EXPECT_TRUE(absl::IsResourceExhausted(
      static_cast<coord::RateLimiter&>(limiter).Acquire("alice", 5.0, 10.0)));

  StrictMock<MockLeaderElection> election;
  EXPECT_CALL(election, TryLead()).WillOnce(Return(true));
  EXPECT_TRUE(*static_cast<coord::LeaderElection&>(election).TryLead());

  StrictMock<MockAuthorizer> authorizer;
  EXPECT_CALL(authorizer, Authorize("alice", authz::Operation::kEncrypt, "acme"))
      .WillOnce(Return(absl::PermissionDeniedError("denied")));
  EXPECT_TRUE(absl::IsPermissionDenied(static_cast<authz::Authorizer&>(authorizer)
                                           .Authorize("alice", authz::Operation::kEncrypt, "acme")));

  StrictMock<MockClock> clock;
  EXPECT_CALL(clock, UnixSeconds()).WillOnce(Return(1'700'000'000));
  EXPECT_EQ(static_cast<Clock&>(clock).UnixSeconds(), 1'700'000'000);
}

}  // namespace
}  // namespace kms::testing
