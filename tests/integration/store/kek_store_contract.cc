// The KekStore contract (include/kms/store/kek_store.h): see store_contract.h.
#include <algorithm>
#include <atomic>
#include <latch>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store::contract {
namespace {

using ::absl::StatusCode;

// --- KEKs

TEST_P(KekStoreContractTest, InsertedKeksListInVersionOrderWithExactBytes) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(2)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 2u);
  for (uint32_t v : {1u, 2u}) {
    const KekRecord& got = (*keks)[v - 1];
    const KekRecord want = TestKek(v);
    EXPECT_EQ(got.version, want.version);
    EXPECT_EQ(got.wrapped, want.wrapped);
    EXPECT_EQ(got.state, want.state);
    EXPECT_EQ(got.created_at, want.created_at);
  }
}

TEST_P(KekStoreContractTest, InsertingAnExistingKekVersionIsAlreadyExistsAndKeepsTheFirst) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KekRecord other = TestKek(1);
  other.wrapped = TestBlob(7);
  EXPECT_EQ(store().InsertKek(other).code(), StatusCode::kAlreadyExists);

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].wrapped, TestKek(1).wrapped);
}

TEST_P(KekStoreContractTest, UpdateKekStateMovesFromTheExpectedState) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_EXPECT_OK(store().UpdateKekState(1, KekState::kActive, KekState::kRetired));

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].state, KekState::kRetired);
  EXPECT_EQ((*keks)[0].wrapped, TestKek(1).wrapped);
}

TEST_P(KekStoreContractTest, UpdateKekStateFromTheWrongStateIsAborted) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  const int64_t epoch = Epoch(health());
  EXPECT_EQ(store().UpdateKekState(1, KekState::kRetired, KekState::kActive).code(),
            StatusCode::kAborted);

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  EXPECT_EQ((*keks)[0].state, KekState::kActive);
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(KekStoreContractTest, UpdateKekStateOfAnUnknownVersionIsNotFound) {
  EXPECT_EQ(store().UpdateKekState(9, KekState::kActive, KekState::kRetired).code(),
            StatusCode::kNotFound);
}

TEST_P(KekStoreContractTest, EmptyStoreHasNoKeksAndNoUsage) {
  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  EXPECT_TRUE(keks->empty());
  auto usage = store().ListKekUsage();
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_TRUE(usage->empty());
}

TEST_P(KekStoreContractTest, ConcurrentStateChangesFromTheSameStateHaveExactlyOneWinner) {
  constexpr int kThreads = 8;
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  std::latch start(kThreads);
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = store().UpdateKekState(1, KekState::kActive, KekState::kRetired);
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (int i = 0; i < kThreads; ++i) {
    if (results[i].ok()) {
      ++ok;
    } else {
      EXPECT_EQ(results[i].code(), StatusCode::kAborted) << "thread " << i << ": " << results[i];
    }
  }
  EXPECT_EQ(ok, 1);
}

std::vector<KekUsage> Usage(KekStore& store) {
  auto usage = store.ListKekUsage();
  EXPECT_TRUE(usage.ok()) << usage.status();
  return usage.ok() ? *usage : std::vector<KekUsage>();
}

// As tuples, for readable comparisons: {kek_version, deks, jwt_keys}.
std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> UsageTuples(KekStore& store) {
  std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> out;
  for (const KekUsage& u : Usage(store)) out.emplace_back(u.kek_version, u.deks, u.jwt_keys);
  return out;
}

DekRecord DekUnder(const std::string& tenant_id, uint32_t version, uint32_t kek_version) {
  DekRecord dek = TestDek(tenant_id, version);
  dek.kek_version = kek_version;
  return dek;
}

// ListKekUsageExcept(v) is ListKekUsage without v's entry, whatever v (stored or not).
TEST_P(KekStoreContractTest, ListKekUsageExceptIsListKekUsageWithoutThatVersion) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(2)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(3)));
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("a"), DekUnder("a", 1, 1)));
  KMS_ASSERT_OK(keys().RotateDek("a", 1, DekUnder("a", 2, 2)));
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("b"), DekUnder("b", 1, 1)));
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("c"), DekUnder("c", 1, 3)));
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("d"), DekUnder("d", 1, 7)));  // not stored
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("gone"), DekUnder("gone", 1, 2)));
  KMS_ASSERT_OK(keys().SetTenantState("gone", 1, TenantState::kShredded));
  JwtKeyRecord first = TestJwtKey("kid-a", 1700000000);
  JwtKeyRecord next = TestJwtKey("kid-b", 1700000300);
  next.kek_version = 3;
  KMS_ASSERT_OK(keys().InsertFirstJwtKey(first));
  KMS_ASSERT_OK(keys().RotateJwtKey("kid-a", 1, 1700001000, next));

  const auto all = UsageTuples(store());
  for (uint32_t except : {0u, 1u, 2u, 3u, 7u, 9u}) {
    SCOPED_TRACE(absl::StrCat("except ", except));
    auto usage = store().ListKekUsageExcept(except);
    ASSERT_TRUE(usage.ok()) << usage.status();
    std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> got, want;
    for (const KekUsage& u : *usage) got.emplace_back(u.kek_version, u.deks, u.jwt_keys);
    for (const auto& u : all) {
      if (std::get<0>(u) != except) want.push_back(u);
    }
    EXPECT_EQ(got, want);
  }
}

TEST_P(KekStoreContractTest, ListKekUsageCountsLiveDeksAndJwtKeysPerVersion) {
  using U = std::tuple<uint32_t, uint64_t, uint64_t>;
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(2)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(3)));
  EXPECT_EQ(UsageTuples(store()), (std::vector<U>{{1, 0, 0}, {2, 0, 0}, {3, 0, 0}}));

  // a: v1 under KEK 1, v2 under KEK 2. b: v1 under KEK 1. gone: v1 under KEK 1, shredded.
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("a"), DekUnder("a", 1, 1)));
  KMS_ASSERT_OK(keys().RotateDek("a", 1, DekUnder("a", 2, 2)));
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("b"), DekUnder("b", 1, 1)));
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("gone"), DekUnder("gone", 1, 1)));
  KMS_ASSERT_OK(keys().SetTenantState("gone", 1, TenantState::kShredded));
  // JWT keys: the first (retired by the rotation, still counted) under KEK 1, the next
  // under KEK 2.
  JwtKeyRecord first = TestJwtKey("kid-a", 1700000000);
  JwtKeyRecord next = TestJwtKey("kid-b", 1700000300);
  next.kek_version = 2;
  KMS_ASSERT_OK(keys().InsertFirstJwtKey(first));
  KMS_ASSERT_OK(keys().RotateJwtKey("kid-a", 1, 1700001000, next));

  EXPECT_EQ(UsageTuples(store()), (std::vector<U>{{1, 2, 1}, {2, 1, 1}, {3, 0, 0}}));

  // A referenced version that is not stored (a damaged database) is listed too.
  KMS_ASSERT_OK(keys().CreateTenant(TestTenant("c"), DekUnder("c", 1, 7)));
  EXPECT_EQ(UsageTuples(store()), (std::vector<U>{{1, 2, 1}, {2, 1, 1}, {3, 0, 0}, {7, 1, 0}}));

  // Re-wraps move the counts.
  std::vector<DekRewrap> rewraps = {TestRewrap("a", 1, 1, 3, 1), TestRewrap("b", 1, 1, 3, 2)};
  auto results = keys().UpdateDekWrappings(rewraps);
  ASSERT_TRUE(results.ok()) << results.status();
  KMS_ASSERT_OK(keys().UpdateJwtKeyWrapping("kid-a", 2, 3, TestBlob(5, 96)));
  EXPECT_EQ(UsageTuples(store()), (std::vector<U>{{1, 0, 0}, {2, 1, 1}, {3, 2, 1}, {7, 1, 0}}));
}
// --- Retirement (RetireKek, DestroyRetiredKeks)

TEST_P(KekStoreContractTest, RetireKekMovesAnUnreferencedOldVersionToRetiredAndMovesTheEpoch) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(2)));
  const int64_t epoch = Epoch(health());
  KMS_ASSERT_OK(store().RetireKek(1, 1700001000));
  EXPECT_GT(Epoch(health()), epoch);
  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 2u);
  EXPECT_EQ((*keks)[0].state, KekState::kRetired);
  EXPECT_EQ((*keks)[1].state, KekState::kActive);
  // Twice: it is no longer active.
  EXPECT_EQ(store().RetireKek(1, 1700001000).code(), StatusCode::kAborted);
}

TEST_P(KekStoreContractTest, RetireKekStillReferencedIsFailedPreconditionNamingTheCounts) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(2)));
  KMS_ASSERT_OK(CreateTestTenant(keys(), "acme"));   // DEK 1 under KEK 1
  KMS_ASSERT_OK(CreateTestTenant(keys(), "bravo"));  // DEK 1 under KEK 1
  KMS_ASSERT_OK(keys().InsertFirstJwtKey(TestJwtKey("k1", 1700000000)));  // under KEK 1
  const int64_t epoch = Epoch(health());

  absl::Status st = store().RetireKek(1, 1700001000);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("2 DEKs"), std::string::npos) << st;
  EXPECT_NE(st.message().find("1 JWT keys"), std::string::npos) << st;
  EXPECT_EQ(Epoch(health()), epoch);
  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok());
  EXPECT_EQ((*keks)[0].state, KekState::kActive);
}

TEST_P(KekStoreContractTest, RetireKekIgnoresShreddedTenantsDeks) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(store().InsertKek(TestKek(2)));
  KMS_ASSERT_OK(CreateTestTenant(keys(), "acme"));
  KMS_ASSERT_OK(keys().SetTenantState("acme", 1, TenantState::kShredded));
  KMS_EXPECT_OK(store().RetireKek(1, 1700001000));
}

TEST_P(KekStoreContractTest, RetireKekRefusesTheNewestVersionAndUnknownOnes) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  EXPECT_EQ(store().RetireKek(1, 1700001000).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store().RetireKek(9, 1700001000).code(), StatusCode::kNotFound);
  EXPECT_EQ(store().RetireKek(0, 1700001000).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store().RetireKek(1, -1).code(), StatusCode::kInvalidArgument);
}

TEST_P(KekStoreContractTest, DestroyRetiredKeksDeletesOnlyVersionsRetiredBeforeTheCutoff) {
  for (uint32_t v : {1u, 2u, 3u}) KMS_ASSERT_OK(store().InsertKek(TestKek(v)));
  KMS_ASSERT_OK(store().RetireKek(1, 1000));
  KMS_ASSERT_OK(store().RetireKek(2, 2000));

  const int64_t epoch = Epoch(health());
  auto none = store().DestroyRetiredKeks(1000);  // strictly before
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(Epoch(health()), epoch);

  auto destroyed = store().DestroyRetiredKeks(1500);
  ASSERT_TRUE(destroyed.ok()) << destroyed.status();
  EXPECT_EQ(*destroyed, std::vector<uint32_t>{1});
  EXPECT_GT(Epoch(health()), epoch);
  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 2u);
  EXPECT_EQ((*keks)[0].version, 2u);
  EXPECT_EQ((*keks)[1].version, 3u);

  destroyed = store().DestroyRetiredKeks(1'000'000);  // never an active version
  ASSERT_TRUE(destroyed.ok());
  EXPECT_EQ(*destroyed, std::vector<uint32_t>{2});
  keks = store().ListKeks();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].state, KekState::kActive);
}

}  // namespace
}  // namespace kms::store::contract
