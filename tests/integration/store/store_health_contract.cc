// The StoreHealth contract (include/kms/store/store_health.h): the epoch, which every
// seam's changes move (or, where their contract says so, do not). See store_contract.h.
#include <algorithm>
#include <atomic>
#include <latch>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store::contract {
namespace {

using ::absl::StatusCode;

TEST_P(StoreHealthContractTest, AnEmptyStoreAnswers) {
  EXPECT_FALSE(store().backend_name().empty());
  KMS_EXPECT_OK(store().Ping());
  auto epoch = store().GetEpoch();
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_GE(*epoch, 0);
}

// --- The epoch across the seams (each seam's own file checks its exceptions)

TEST_P(StoreHealthContractTest, EveryStateChangeIncreasesTheEpochAndReadsDoNot) {
  int64_t last = Epoch(health());
  auto expect_increased = [&](const char* what) {
    const int64_t now = Epoch(health());
    EXPECT_GT(now, last) << what;
    last = now;
  };
  auto reads = [&] {
    (void)keys().ListKeks();
    (void)keys().GetTenant("acme");
    (void)keys().GetTenantDek("acme", 0);
    (void)keys().ListDeks("acme");
    (void)keys().ListTenants("", 5);
    (void)keys().CountTenants();
    (void)keys().ListKekUsage();
    (void)keys().ListDeksWrappedUnder(1, DekKey{}, 10);
    (void)keys().ListJwtKeys();
    (void)keys().ListRotationJobs(0, 10);
    (void)keys().Ping();
    EXPECT_EQ(Epoch(health()), last) << "after reads";
  };

  KMS_ASSERT_OK(keys().InsertKek(TestKek(1)));
  expect_increased("InsertKek");
  reads();
  KMS_ASSERT_OK(keys().UpdateKekState(1, KekState::kActive, KekState::kRetired));
  expect_increased("UpdateKekState");
  KMS_ASSERT_OK(CreateTestTenant(keys(), "acme"));
  expect_increased("CreateTenant");
  reads();
  KMS_ASSERT_OK(keys().RotateDek("acme", 1, TestDek("acme", 2)));
  expect_increased("RotateDek");
  KMS_ASSERT_OK(keys().SetTenantState("acme", 2, TenantState::kShredded));
  expect_increased("SetTenantState");
  reads();
}

TEST_P(StoreHealthContractTest, RejectedChangesLeaveTheEpoch) {
  KMS_ASSERT_OK(keys().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(CreateTestTenant(keys(), "acme"));
  const int64_t epoch = Epoch(health());

  EXPECT_FALSE(keys().InsertKek(TestKek(1)).ok());
  EXPECT_FALSE(keys().UpdateKekState(1, KekState::kRetired, KekState::kActive).ok());
  EXPECT_FALSE(CreateTestTenant(keys(), "acme").ok());
  EXPECT_FALSE(keys().RotateDek("acme", 7, TestDek("acme", 2)).ok());
  EXPECT_FALSE(keys().SetTenantState("acme", 7, TenantState::kShredded).ok());
  EXPECT_EQ(Epoch(health()), epoch);
}

// What does not move the epoch, all in one place (store_health.h).
TEST_P(StoreHealthContractTest, CountersRewrapsAndJobCheckpointsLeaveTheEpoch) {
  KMS_ASSERT_OK(CreateTestTenant(keys(), "acme"));
  const int64_t epoch = Epoch(store());
  KMS_ASSERT_OK(keys().AddEncryptions("acme", 1, 3));
  const std::vector<DekRewrap> rewraps = {TestRewrap("acme", 1, 1, 2, 9)};
  auto rewrapped = keys().UpdateDekWrappings(rewraps);
  ASSERT_TRUE(rewrapped.ok()) << rewrapped.status();
  ASSERT_EQ(*rewrapped, std::vector<DekRewrapResult>{DekRewrapResult::kUpdated});
  auto job = keys().CreateRotationJob(TestRotationJob(1, 2, 1700000000));
  ASSERT_TRUE(job.ok()) << job.status();
  KMS_ASSERT_OK(keys().UpdateRotationJobProgress(job->id, 1, job->progress, 1700000001));
  EXPECT_EQ(Epoch(store()), epoch);
}
}  // namespace
}  // namespace kms::store::contract
