// The TenantKeyStore contract (include/kms/store/tenant_key_store.h): see
// store_contract.h.
#include <algorithm>
#include <atomic>
#include <latch>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store::contract {
namespace {

using ::absl::StatusCode;

// --- Tenants

TEST_P(TenantKeyStoreContractTest, CreatedTenantReadsBackWithItsFirstDek) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->id, "acme");
  EXPECT_EQ(tenant->state, TenantState::kActive);
  EXPECT_EQ(tenant->primary_dek_version, 1u);
  EXPECT_EQ(tenant->min_decrypt_version, 1u);
  EXPECT_EQ(tenant->created_at, TestTenant("acme").created_at);
  EXPECT_EQ(tenant->row_version, 1);

  for (uint32_t version : {0u, 1u}) {
    SCOPED_TRACE(absl::StrCat("GetTenantDek version ", version));
    auto td = store().GetTenantDek("acme", version);
    ASSERT_TRUE(td.ok()) << td.status();
    EXPECT_EQ(td->tenant.id, "acme");
    EXPECT_EQ(td->tenant.primary_dek_version, 1u);
    EXPECT_EQ(td->tenant.row_version, 1);
    ExpectSameDek(td->dek, TestDek("acme", 1));
  }

  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  ASSERT_EQ(deks->size(), 1u);
  ExpectSameDek((*deks)[0], TestDek("acme", 1));
}

TEST_P(TenantKeyStoreContractTest, CreatingAnExistingTenantIsAlreadyExistsAndKeepsTheFirstDek) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  const int64_t epoch = Epoch(health());

  DekRecord other = TestDek("acme", 1);
  other.wrapped = TestBlob(99);
  other.kek_version = 2;
  EXPECT_EQ(store().CreateTenant(TestTenant("acme"), other).code(),
            StatusCode::kAlreadyExists);

  auto td = store().GetTenantDek("acme", 0);
  ASSERT_TRUE(td.ok()) << td.status();
  ExpectSameDek(td->dek, TestDek("acme", 1));
  EXPECT_EQ(td->tenant.row_version, 1);
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(TenantKeyStoreContractTest, TenantIdsAreStoredVerbatim) {
  const std::string id = "o'brien\"; DROP TABLE tenants; -- \xc3\xa9";
  KMS_ASSERT_OK(CreateTestTenant(store(), id));
  auto tenant = store().GetTenant(id);
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->id, id);
  EXPECT_EQ(store().GetTenant("o'brien").status().code(), StatusCode::kNotFound);
}

TEST_P(TenantKeyStoreContractTest, UnknownTenantIsNotFoundEverywhere) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  const int64_t epoch = Epoch(health());

  EXPECT_EQ(store().GetTenant("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().GetTenantDek("nobody", 0).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().GetTenantDek("nobody", 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().ListDeks("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().RotateDek("nobody", 1, TestDek("nobody", 2)).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store().SetTenantState("nobody", 1, TenantState::kShredded).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store().AddEncryptions("nobody", 1, 5).code(), StatusCode::kNotFound);
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(TenantKeyStoreContractTest, UnknownDekVersionIsNotFound) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  EXPECT_EQ(store().GetTenantDek("acme", 2).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().AddEncryptions("acme", 2, 5).code(), StatusCode::kNotFound);
}

TEST_P(TenantKeyStoreContractTest, ListTenantsPagesInIdOrder) {
  std::vector<std::string> ids;
  for (int i = 0; i < 25; ++i) ids.push_back(absl::StrCat("tenant-", i < 10 ? "0" : "", i));
  std::vector<std::string> shuffled = ids;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(42));
  for (const auto& id : shuffled) KMS_ASSERT_OK(CreateTestTenant(store(), id));

  std::vector<size_t> page_sizes;
  std::vector<std::string> seen;
  std::string after;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = store().ListTenants(after, 10);
    ASSERT_TRUE(page.ok()) << page.status();
    page_sizes.push_back(page->tenants.size());
    for (const auto& t : page->tenants) seen.push_back(t.id);
    if (page->next_after.empty()) break;
    EXPECT_EQ(page->next_after, page->tenants.back().id);
    after = page->next_after;
  }
  EXPECT_EQ(page_sizes, (std::vector<size_t>{10, 10, 5}));
  EXPECT_EQ(seen, ids);
}

TEST_P(TenantKeyStoreContractTest, ListTenantsEndsWithoutAnEmptyPageWhenTheLastPageIsFull) {
  for (int i = 0; i < 20; ++i) KMS_ASSERT_OK(CreateTestTenant(store(), absl::StrCat("t", 10 + i)));
  auto first = store().ListTenants("", 10);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->next_after, "t19");
  auto second = store().ListTenants(first->next_after, 10);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->tenants.size(), 10u);
  EXPECT_EQ(second->tenants.front().id, "t20");
  EXPECT_TRUE(second->next_after.empty());
}

TEST_P(TenantKeyStoreContractTest, CountTenantsCountsEveryTenant) {
  for (int i = 0; i < 7; ++i) KMS_ASSERT_OK(CreateTestTenant(store(), absl::StrCat("t", i)));
  auto shredded = store().GetTenant("t3");
  ASSERT_TRUE(shredded.ok()) << shredded.status();
  KMS_ASSERT_OK(store().SetTenantState("t3", shredded->row_version, TenantState::kShredded));

  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 7u);
}

TEST_P(TenantKeyStoreContractTest, OldestPrimaryDekCreatedAtLooksAtActiveTenantsPrimaryDeks) {
  auto none = store().OldestPrimaryDekCreatedAt();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0);

  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));   // primary v1: 1700000201
  KMS_ASSERT_OK(CreateTestTenant(store(), "globex"));  // primary v1: 1700000201
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));  // primary v2: 1700000202
  auto oldest = store().OldestPrimaryDekCreatedAt();
  ASSERT_TRUE(oldest.ok()) << oldest.status();
  EXPECT_EQ(*oldest, TestDek("globex", 1).created_at);

  // A shredded tenant's DEK is no longer due for rotation; acme's old v1 is not primary.
  auto globex = store().GetTenant("globex");
  ASSERT_TRUE(globex.ok()) << globex.status();
  KMS_ASSERT_OK(store().SetTenantState("globex", globex->row_version, TenantState::kShredded));
  oldest = store().OldestPrimaryDekCreatedAt();
  ASSERT_TRUE(oldest.ok()) << oldest.status();
  EXPECT_EQ(*oldest, TestDek("acme", 2).created_at);

  // Tenants created in bulk count with their first DEK.
  NewTenant older{TestTenant("initech"), TestDek("initech", 1)};
  older.first_dek.created_at = 1600000000;
  auto created = store().CreateTenants(std::vector<NewTenant>{older});
  ASSERT_TRUE(created.ok()) << created.status();
  oldest = store().OldestPrimaryDekCreatedAt();
  ASSERT_TRUE(oldest.ok()) << oldest.status();
  EXPECT_EQ(*oldest, 1600000000);
}

// --- DEK rotation

TEST_P(TenantKeyStoreContractTest, RotateDekMovesThePrimaryAndKeepsTheOldVersionReadable) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->primary_dek_version, 2u);
  EXPECT_EQ(tenant->row_version, 2);

  auto primary = store().GetTenantDek("acme", 0);
  ASSERT_TRUE(primary.ok()) << primary.status();
  ExpectSameDek(primary->dek, TestDek("acme", 2));
  EXPECT_EQ(primary->tenant.row_version, 2);

  auto old = store().GetTenantDek("acme", 1);
  ASSERT_TRUE(old.ok()) << old.status();
  ExpectSameDek(old->dek, TestDek("acme", 1));

  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  ASSERT_EQ(deks->size(), 2u);
  EXPECT_EQ((*deks)[0].version, 1u);
  EXPECT_EQ((*deks)[1].version, 2u);
}

TEST_P(TenantKeyStoreContractTest, RotateDekWithAStaleRowVersionIsAbortedAndChangesNothing) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  const int64_t epoch = Epoch(health());

  EXPECT_EQ(store().RotateDek("acme", 1, TestDek("acme", 3)).code(), StatusCode::kAborted);

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->primary_dek_version, 2u);
  EXPECT_EQ(tenant->row_version, 2);
  EXPECT_EQ(store().GetTenantDek("acme", 3).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(TenantKeyStoreContractTest, RotateDekToAVersionNotAboveThePrimaryIsFailedPrecondition) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 3)));
  EXPECT_EQ(store().RotateDek("acme", 2, TestDek("acme", 2)).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store().RotateDek("acme", 2, TestDek("acme", 3)).code(),
            StatusCode::kFailedPrecondition);
  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->primary_dek_version, 3u);
  EXPECT_EQ(tenant->row_version, 2);
}

TEST_P(TenantKeyStoreContractTest, ConcurrentRotationsFromTheSameRowVersionHaveExactlyOneWinner) {
  constexpr int kThreads = 8;
  // Several rounds with the new versions shuffled: a store that only refused versions
  // below the primary, without compare-and-set, would let more than one through in
  // almost every round.
  constexpr int kRounds = 6;
  std::mt19937 rng(7);
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string id = absl::StrCat("race-", round);
    KMS_ASSERT_OK(CreateTestTenant(store(), id));
    std::vector<uint32_t> versions(kThreads);
    for (int i = 0; i < kThreads; ++i) versions[i] = 2 + i;
    std::shuffle(versions.begin(), versions.end(), rng);

    std::latch all_read(kThreads);
    std::vector<absl::Status> results(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        auto tenant = store().GetTenant(id);
        if (!tenant.ok()) {
          all_read.count_down();
          results[i] = tenant.status();
          return;
        }
        // Everyone has read row_version 1 before anyone writes.
        all_read.arrive_and_wait();
        results[i] = store().RotateDek(id, tenant->row_version, TestDek(id, versions[i]));
      });
    }
    for (auto& t : threads) t.join();

    int ok = 0;
    int aborted = 0;
    uint32_t winner = 0;
    for (int i = 0; i < kThreads; ++i) {
      if (results[i].ok()) {
        ++ok;
        winner = versions[i];
      } else if (results[i].code() == StatusCode::kAborted) {
        ++aborted;
      } else {
        ADD_FAILURE() << "thread " << i << ": " << results[i];
      }
    }
    EXPECT_EQ(ok, 1);
    EXPECT_EQ(aborted, kThreads - 1);

    auto deks = store().ListDeks(id);
    ASSERT_TRUE(deks.ok()) << deks.status();
    ASSERT_EQ(deks->size(), 2u);
    EXPECT_EQ((*deks)[1].version, winner);
    auto tenant = store().GetTenant(id);
    ASSERT_TRUE(tenant.ok()) << tenant.status();
    EXPECT_EQ(tenant->row_version, 2);
    EXPECT_EQ(tenant->primary_dek_version, winner);
  }
}

// --- Tenant state

// Contract decision: a shredded tenant stays readable, so callers can tell "shredded"
// from "never existed"; its DEKs are all destroyed and hold no bytes.
TEST_P(TenantKeyStoreContractTest, ShreddingDestroysEveryDekBlobAndStaysReadable) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(CreateTestTenant(store(), "other"));
  KMS_ASSERT_OK(store().SetTenantState("acme", 2, TenantState::kShredded));

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->state, TenantState::kShredded);
  EXPECT_EQ(tenant->row_version, 3);

  for (uint32_t version : {0u, 1u, 2u}) {
    SCOPED_TRACE(absl::StrCat("GetTenantDek version ", version));
    auto td = store().GetTenantDek("acme", version);
    ASSERT_TRUE(td.ok()) << td.status();
    EXPECT_EQ(td->tenant.state, TenantState::kShredded);
    EXPECT_EQ(td->dek.state, DekState::kDestroyed);
    EXPECT_TRUE(td->dek.wrapped.empty());
  }
  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  ASSERT_EQ(deks->size(), 2u);
  for (const auto& dek : *deks) {
    EXPECT_EQ(dek.state, DekState::kDestroyed);
    EXPECT_TRUE(dek.wrapped.empty());
  }

  // Other tenants keep their keys.
  auto other = store().GetTenantDek("other", 0);
  ASSERT_TRUE(other.ok()) << other.status();
  ExpectSameDek(other->dek, TestDek("other", 1));
}

TEST_P(TenantKeyStoreContractTest, ShreddingIsFinal) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().SetTenantState("acme", 1, TenantState::kShredded));
  EXPECT_EQ(store().SetTenantState("acme", 2, TenantState::kActive).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(store().RotateDek("acme", 2, TestDek("acme", 2)).code(),
            StatusCode::kFailedPrecondition);
  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->state, TenantState::kShredded);
  EXPECT_EQ(tenant->row_version, 2);
}

TEST_P(TenantKeyStoreContractTest, SetTenantStateWithAStaleRowVersionIsAbortedAndDestroysNothing) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  EXPECT_EQ(store().SetTenantState("acme", 1, TenantState::kShredded).code(),
            StatusCode::kAborted);
  auto td = store().GetTenantDek("acme", 1);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_EQ(td->tenant.state, TenantState::kActive);
  ExpectSameDek(td->dek, TestDek("acme", 1));
}

// --- Minimum decryption version (DEK retirement)

TEST_P(TenantKeyStoreContractTest, SetMinDecryptVersionRetiresTheVersionsBelowItAndKeepsTheirBlobs) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(store().RotateDek("acme", 2, TestDek("acme", 3)));
  KMS_ASSERT_OK(CreateTestTenant(store(), "other"));
  const int64_t epoch = Epoch(health());

  KMS_ASSERT_OK(store().SetMinDecryptVersion("acme", 3, 3));

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->min_decrypt_version, 3u);
  EXPECT_EQ(tenant->primary_dek_version, 3u);
  EXPECT_EQ(tenant->row_version, 4);
  EXPECT_GT(Epoch(health()), epoch);

  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  ASSERT_EQ(deks->size(), 3u);
  EXPECT_EQ((*deks)[0].state, DekState::kRetired);
  EXPECT_EQ((*deks)[1].state, DekState::kRetired);
  EXPECT_EQ((*deks)[2].state, DekState::kActive);
  // A retirement is a decryption policy, not a shred: the blob stays (the re-wrap job
  // still moves it) and reads still return it, state and all.
  EXPECT_EQ((*deks)[0].wrapped, TestDek("acme", 1).wrapped);
  auto old = store().GetTenantDek("acme", 1);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->dek.state, DekState::kRetired);
  EXPECT_EQ(old->tenant.min_decrypt_version, 3u);
  auto listed = store().ListDeksWrappedUnder(1, DekKey{}, 100);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->deks.size(), 4u);  // acme 1-3 and other 1

  // Another tenant is untouched.
  auto other = store().GetTenantDek("other", 1);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->dek.state, DekState::kActive);
  EXPECT_EQ(other->tenant.min_decrypt_version, 1u);
}

TEST_P(TenantKeyStoreContractTest, SetMinDecryptVersionToTheCurrentMinimumIsAllowedAndRetiresNothing) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(store().SetMinDecryptVersion("acme", 2, 1));
  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  for (const DekRecord& d : *deks) EXPECT_EQ(d.state, DekState::kActive) << d.version;
  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->row_version, 3);
}

TEST_P(TenantKeyStoreContractTest, SetMinDecryptVersionRefusesBadValuesAndChangesNothing) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(store().RotateDek("acme", 2, TestDek("acme", 3)));
  KMS_ASSERT_OK(store().SetMinDecryptVersion("acme", 3, 2));
  const int64_t epoch = Epoch(health());

  // Past the primary.
  EXPECT_EQ(store().SetMinDecryptVersion("acme", 4, 4).code(), StatusCode::kFailedPrecondition);
  // Down: a retirement is never undone.
  EXPECT_EQ(store().SetMinDecryptVersion("acme", 4, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store().SetMinDecryptVersion("acme", 4, 0).code(), StatusCode::kInvalidArgument);
  // A stale row_version, an unknown tenant.
  EXPECT_EQ(store().SetMinDecryptVersion("acme", 3, 3).code(), StatusCode::kAborted);
  EXPECT_EQ(store().SetMinDecryptVersion("nobody", 1, 1).code(), StatusCode::kNotFound);

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->min_decrypt_version, 2u);
  EXPECT_EQ(tenant->row_version, 4);
  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  EXPECT_EQ((*deks)[0].state, DekState::kRetired);
  EXPECT_EQ((*deks)[1].state, DekState::kActive);
  EXPECT_EQ((*deks)[2].state, DekState::kActive);
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(TenantKeyStoreContractTest, SetMinDecryptVersionOfAShreddedTenantIsFailedPrecondition) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(store().SetTenantState("acme", 2, TenantState::kShredded));
  EXPECT_EQ(store().SetMinDecryptVersion("acme", 3, 2).code(), StatusCode::kFailedPrecondition);
  auto deks = store().ListDeks("acme");
  ASSERT_TRUE(deks.ok()) << deks.status();
  for (const DekRecord& d : *deks) EXPECT_EQ(d.state, DekState::kDestroyed) << d.version;
}

TEST_P(TenantKeyStoreContractTest, ConcurrentMinVersionChangesFromTheSameRowVersionHaveOneWinner) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(store().RotateDek("acme", 2, TestDek("acme", 3)));
  constexpr int kThreads = 6;
  std::latch start(kThreads);
  std::atomic<int> ok{0}, aborted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      absl::Status st = store().SetMinDecryptVersion("acme", 3, 2 + i % 2);
      if (st.ok()) ++ok;
      if (absl::IsAborted(st)) ++aborted;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 1);
  EXPECT_EQ(aborted.load(), kThreads - 1);
  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->row_version, 4);
}

// --- Usage counters

TEST_P(TenantKeyStoreContractTest, AddEncryptionsAccumulatesPerVersion) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_EXPECT_OK(store().AddEncryptions("acme", 1, 5));
  KMS_EXPECT_OK(store().AddEncryptions("acme", 2, 1000));
  KMS_EXPECT_OK(store().AddEncryptions("acme", 2, 234));
  KMS_EXPECT_OK(store().AddEncryptions("acme", 2, 0));

  auto v1 = store().GetTenantDek("acme", 1);
  auto v2 = store().GetTenantDek("acme", 0);
  ASSERT_TRUE(v1.ok()) << v1.status();
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v1->dek.encryptions, 5u);
  EXPECT_EQ(v2->dek.encryptions, 1234u);
}

// The periodic flush: many DEK versions, one call; a version listed twice gets both.
TEST_P(TenantKeyStoreContractTest, AddEncryptionsBatchAddsEveryCount) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(CreateTestTenant(store(), "globex"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  const std::vector<store::EncryptionCount> counts = {
      {"acme", 1, 5}, {"acme", 2, 1000}, {"globex", 1, 7}, {"acme", 2, 234}};
  KMS_EXPECT_OK(store().AddEncryptionsBatch(counts));
  KMS_EXPECT_OK(store().AddEncryptionsBatch({}));
  auto a1 = store().GetTenantDek("acme", 1);
  auto a2 = store().GetTenantDek("acme", 2);
  auto g1 = store().GetTenantDek("globex", 1);
  ASSERT_TRUE(a1.ok() && a2.ok() && g1.ok());
  EXPECT_EQ(a1->dek.encryptions, 5u);
  EXPECT_EQ(a2->dek.encryptions, 1234u);
  EXPECT_EQ(g1->dek.encryptions, 7u);
}

// One flush is one transaction: when its last count names an unknown DEK version, the
// counts before it are rolled back too (a statement per count in autocommit would have
// kept them). The flush retries the whole batch later, so nothing is counted twice.
TEST_P(TenantKeyStoreContractTest, OneFlushIsOneTransaction) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(CreateTestTenant(store(), "globex"));
  const std::vector<store::EncryptionCount> counts = {
      {"acme", 1, 5}, {"globex", 1, 7}, {"acme", 9, 1}};
  EXPECT_EQ(store().AddEncryptionsBatch(counts).code(), StatusCode::kNotFound);
  const std::vector<store::EncryptionCount> too_big = {
      {"acme", 1, 5}, {"globex", 1, uint64_t{1} << 63}};
  EXPECT_EQ(store().AddEncryptionsBatch(too_big).code(), StatusCode::kInvalidArgument);
  auto a1 = store().GetTenantDek("acme", 1);
  auto g1 = store().GetTenantDek("globex", 1);
  ASSERT_TRUE(a1.ok() && g1.ok());
  EXPECT_EQ(a1->dek.encryptions, 0u);
  EXPECT_EQ(g1->dek.encryptions, 0u);
}

// Contract decision: the encryption count is usage, not key state. Counting neither
// moves the epoch (replicas would drop their caches at every flush) nor the tenant's
// row_version (a rotation racing a flush would lose its compare-and-set).
TEST_P(TenantKeyStoreContractTest, AddEncryptionsMovesNeitherTheEpochNorTheRowVersion) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  const int64_t epoch = Epoch(health());
  KMS_ASSERT_OK(store().AddEncryptions("acme", 1, 42));
  EXPECT_EQ(Epoch(health()), epoch);
  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->row_version, 1);
  KMS_EXPECT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
}

TEST_P(TenantKeyStoreContractTest, EmptyStoreHasNoTenants) {
  auto page = store().ListTenants("", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->tenants.empty());
  EXPECT_TRUE(page->next_after.empty());
  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 0u);
  auto deks = store().ListDeksWrappedUnder(1, DekKey{}, 10);
  ASSERT_TRUE(deks.ok()) << deks.status();
  EXPECT_TRUE(deks->deks.empty());
  EXPECT_FALSE(deks->more);
}

// --- Bulk creation (CreateTenants)

NewTenant TestNewTenant(const std::string& id) { return {TestTenant(id), TestDek(id, 1)}; }

std::vector<CreateTenantResult> CreateMany(TenantKeyStore& store, const std::vector<NewTenant>& rows) {
  auto results = store.CreateTenants(rows);
  EXPECT_TRUE(results.ok()) << results.status();
  return results.ok() ? *results : std::vector<CreateTenantResult>();
}

TEST_P(TenantKeyStoreContractTest, CreateTenantsCreatesEachTenantAndLeavesTakenIdsAsTheyWere) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  KMS_ASSERT_OK(CreateTestTenant(store(), "shredded"));
  KMS_ASSERT_OK(store().SetTenantState("shredded", 1, TenantState::kShredded));
  const int64_t epoch = Epoch(health());

  std::vector<NewTenant> rows = {TestNewTenant("b-1"), TestNewTenant("acme"),
                                 TestNewTenant("a-2"), TestNewTenant("shredded")};
  rows[1].first_dek.wrapped = TestBlob(99);  // must not replace acme's DEK
  rows[1].first_dek.kek_version = 7;
  rows[2].first_dek.kek_version = 2;
  EXPECT_EQ(CreateMany(store(), rows),
            (std::vector<CreateTenantResult>{
                CreateTenantResult::kCreated, CreateTenantResult::kAlreadyExists,
                CreateTenantResult::kCreated, CreateTenantResult::kAlreadyExists}));
  EXPECT_EQ(Epoch(health()), epoch + 1) << "one epoch bump per call";

  for (const NewTenant& row : {rows[0], rows[2]}) {
    SCOPED_TRACE(row.tenant.id);
    auto td = store().GetTenantDek(row.tenant.id, 0);
    ASSERT_TRUE(td.ok()) << td.status();
    EXPECT_EQ(td->tenant.state, TenantState::kActive);
    EXPECT_EQ(td->tenant.primary_dek_version, 1u);
    EXPECT_EQ(td->tenant.min_decrypt_version, 1u);
    EXPECT_EQ(td->tenant.created_at, row.tenant.created_at);
    EXPECT_EQ(td->tenant.row_version, 1);
    ExpectSameDek(td->dek, row.first_dek);
  }
  auto acme = store().GetTenantDek("acme", 0);
  ASSERT_TRUE(acme.ok()) << acme.status();
  ExpectSameDek(acme->dek, TestDek("acme", 1));
  auto shredded = store().GetTenant("shredded");
  ASSERT_TRUE(shredded.ok()) << shredded.status();
  EXPECT_EQ(shredded->state, TenantState::kShredded);
  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 4u);

  // Run again (a load resumed after a crash): nothing new, and the epoch stays.
  const int64_t after = Epoch(health());
  EXPECT_EQ(CreateMany(store(), rows),
            std::vector<CreateTenantResult>(rows.size(), CreateTenantResult::kAlreadyExists));
  EXPECT_EQ(Epoch(health()), after);
  KMS_EXPECT_OK(store().CreateTenants({}).status());
  EXPECT_EQ(Epoch(health()), after);
}

// One call is one transaction: a row the database refuses (a destroyed DEK that still
// holds key bytes breaks the DEK table's check) rolls back the tenants before it.
TEST_P(TenantKeyStoreContractTest, CreateTenantsIsOneTransaction) {
  const int64_t epoch = Epoch(health());
  std::vector<NewTenant> rows = {TestNewTenant("t-1"), TestNewTenant("t-2"), TestNewTenant("t-3")};
  rows[2].first_dek.state = DekState::kDestroyed;
  auto results = store().CreateTenants(rows);
  EXPECT_FALSE(results.ok());
  for (const char* id : {"t-1", "t-2", "t-3"}) {
    EXPECT_EQ(store().GetTenant(id).status().code(), StatusCode::kNotFound) << id;
  }
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(TenantKeyStoreContractTest, CreateTenantsRefusesABadBatchAndWritesNothingOfIt) {
  std::vector<NewTenant> twice = {TestNewTenant("x"), TestNewTenant("y"), TestNewTenant("x")};
  EXPECT_EQ(store().CreateTenants(twice).status().code(), StatusCode::kInvalidArgument);
  std::vector<NewTenant> bad = {TestNewTenant("x"), TestNewTenant("y")};
  bad[1].first_dek.version = 0;
  EXPECT_EQ(store().CreateTenants(bad).status().code(), StatusCode::kInvalidArgument);
  std::vector<NewTenant> too_many;
  for (size_t i = 0; i <= kMaxCreateTenantsBatch; ++i) too_many.push_back(TestNewTenant(absl::StrCat("t", i)));
  EXPECT_EQ(store().CreateTenants(too_many).status().code(), StatusCode::kInvalidArgument);
  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 0u);
}

TEST_P(TenantKeyStoreContractTest, AFullCreateTenantsBatchCreatesEveryTenant) {
  std::vector<NewTenant> rows;
  for (size_t i = 0; i < kMaxCreateTenantsBatch; ++i) {
    rows.push_back(TestNewTenant(absl::StrCat("tenant-", i)));
    rows.back().first_dek.wrapped = TestBlob(static_cast<uint8_t>(i), 60);
  }
  EXPECT_EQ(CreateMany(store(), rows),
            std::vector<CreateTenantResult>(rows.size(), CreateTenantResult::kCreated));
  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, kMaxCreateTenantsBatch);
  for (size_t i : {size_t{0}, size_t{517}, kMaxCreateTenantsBatch - 1}) {
    auto td = store().GetTenantDek(rows[i].tenant.id, 1);
    ASSERT_TRUE(td.ok()) << td.status();
    ExpectSameDek(td->dek, rows[i].first_dek);
  }
}

// --- KEK re-wrap: listing

DekRecord DekUnder(const std::string& tenant_id, uint32_t version, uint32_t kek_version) {
  DekRecord dek = TestDek(tenant_id, version);
  dek.kek_version = kek_version;
  return dek;
}

std::string KeyOf(const DekRecord& dek) { return absl::StrCat(dek.tenant_id, "/", dek.version); }

// Every key ListDeksWrappedUnder(kek_version) gives, page by page from `after`.
std::vector<std::string> WalkWrappedUnder(TenantKeyStore& store, uint32_t kek_version,
                                          DekKey after, int limit,
                                          std::vector<size_t>* page_sizes = nullptr) {
  std::vector<std::string> keys;
  for (int guard = 0; guard < 1000; ++guard) {
    auto page = store.ListDeksWrappedUnder(kek_version, after, limit);
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    if (page_sizes != nullptr) page_sizes->push_back(page->deks.size());
    for (const DekRecord& d : page->deks) keys.push_back(KeyOf(d));
    if (!page->more) break;
    after = DekKey{page->deks.back().tenant_id, page->deks.back().version};
  }
  return keys;
}

TEST_P(TenantKeyStoreContractTest, ListDeksWrappedUnderPagesInKeyOrderAfterACursor) {
  // Tenants created out of order; "t1" and "t10" check bytewise id order, versions 2
  // and 10 check numeric version order.
  for (const std::string id : {"t2", "t10", "t1", "u"}) {
    KMS_ASSERT_OK(store().CreateTenant(TestTenant(id), DekUnder(id, 1, 1)));
  }
  KMS_ASSERT_OK(store().RotateDek("t1", 1, DekUnder("t1", 2, 1)));
  KMS_ASSERT_OK(store().RotateDek("t1", 2, DekUnder("t1", 10, 1)));
  KMS_ASSERT_OK(store().RotateDek("t2", 1, DekUnder("t2", 2, 2)));  // under another KEK
  KMS_ASSERT_OK(store().CreateTenant(TestTenant("gone"), DekUnder("gone", 1, 1)));
  KMS_ASSERT_OK(store().SetTenantState("gone", 1, TenantState::kShredded));  // no blob left

  const std::vector<std::string> all = {"t1/1", "t1/2", "t1/10", "t10/1", "t2/1", "u/1"};
  std::vector<size_t> sizes;
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{}, 2, &sizes), all);
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 2}));  // a full last page ends the walk
  sizes.clear();
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{}, 4, &sizes), all);
  EXPECT_EQ(sizes, (std::vector<size_t>{4, 2}));
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{}, 100), all);

  // Resuming from a cursor: strictly after it, also when the cursor row is gone.
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{"t1", 2}, 2),
            (std::vector<std::string>{"t1/10", "t10/1", "t2/1", "u/1"}));
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{"t11", 0}, 2),
            (std::vector<std::string>{"t2/1", "u/1"}));
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{"u", 1}, 2), std::vector<std::string>{});

  EXPECT_EQ(WalkWrappedUnder(store(), 2, DekKey{}, 10), (std::vector<std::string>{"t2/2"}));
  EXPECT_EQ(WalkWrappedUnder(store(), 9, DekKey{}, 10), std::vector<std::string>{});

  // The rows come back whole.
  auto page = store().ListDeksWrappedUnder(2, DekKey{}, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->deks.size(), 1u);
  ExpectSameDek(page->deks[0], DekUnder("t2", 2, 2));

  EXPECT_EQ(store().ListDeksWrappedUnder(1, DekKey{}, 0).status().code(),
            StatusCode::kInvalidArgument);
}

// --- KEK re-wrap: the bulk update

std::vector<DekRewrapResult> Rewrap(TenantKeyStore& store, const std::vector<DekRewrap>& rewraps) {
  auto results = store.UpdateDekWrappings(rewraps);
  EXPECT_TRUE(results.ok()) << results.status();
  return results.ok() ? *results : std::vector<DekRewrapResult>();
}

TEST_P(TenantKeyStoreContractTest, UpdateDekWrappingsRewrapsAndReportsEachRow) {
  using R = DekRewrapResult;
  KMS_ASSERT_OK(CreateTestTenant(store(), "a"));
  KMS_ASSERT_OK(store().RotateDek("a", 1, TestDek("a", 2)));
  KMS_ASSERT_OK(store().AddEncryptions("a", 1, 9));
  KMS_ASSERT_OK(CreateTestTenant(store(), "gone"));
  KMS_ASSERT_OK(store().SetTenantState("gone", 1, TenantState::kShredded));
  const int64_t epoch = Epoch(health());

  const std::vector<DekRewrap> rewraps = {
      TestRewrap("a", 1, 1, 2, 11),
      TestRewrap("a", 2, 5, 6, 12),      // stale: the row is not under KEK 5
      TestRewrap("gone", 1, 1, 2, 13),   // destroyed: no blob to re-wrap
      TestRewrap("nobody", 1, 1, 2, 14),
      TestRewrap("a", 3, 1, 2, 15),      // no such version
      TestRewrap("a", 2, 1, 2, 16),
  };
  EXPECT_EQ(Rewrap(store(), rewraps),
            (std::vector<R>{R::kUpdated, R::kSkipped, R::kSkipped, R::kNotFound, R::kNotFound,
                            R::kUpdated}));

  auto v1 = store().GetTenantDek("a", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  DekRecord want = TestDek("a", 1);
  want.kek_version = 2;
  want.wrapped = rewraps[0].wrapped;
  want.encryptions = 9;  // everything but the wrapping is kept
  ExpectSameDek(v1->dek, want);
  auto v2 = store().GetTenantDek("a", 2);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->dek.kek_version, 2u);
  EXPECT_EQ(v2->dek.wrapped, rewraps[5].wrapped);
  auto gone = store().GetTenantDek("gone", 1);
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->dek.state, DekState::kDestroyed);
  EXPECT_TRUE(gone->dek.wrapped.empty());

  // Contract decision: a re-wrap changes no key, so neither the epoch nor the tenant's
  // row_version moves (a rotation from the row_version read before still wins).
  EXPECT_EQ(Epoch(health()), epoch);
  EXPECT_EQ(v1->tenant.row_version, 2);

  // Again: the rows already moved are skipped, nothing changes.
  EXPECT_EQ(Rewrap(store(), rewraps),
            (std::vector<R>{R::kSkipped, R::kSkipped, R::kSkipped, R::kNotFound, R::kNotFound,
                            R::kSkipped}));
  auto again = store().GetTenantDek("a", 1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->dek.wrapped, rewraps[0].wrapped);
  EXPECT_TRUE(Rewrap(store(), {}).empty());
  KMS_EXPECT_OK(store().RotateDek("a", 2, TestDek("a", 3)));
}

TEST_P(TenantKeyStoreContractTest, UpdateDekWrappingsRefusesABadBatchAndWritesNothingOfIt) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "a"));
  const DekRewrap good = TestRewrap("a", 1, 1, 2, 11);
  DekRewrap empty_blob = TestRewrap("a", 1, 1, 2, 12);
  empty_blob.wrapped.clear();
  DekRewrap same_kek = TestRewrap("a", 1, 1, 1, 13);
  DekRewrap version0 = TestRewrap("a", 0, 1, 2, 14);
  DekRewrap no_tenant = TestRewrap("", 1, 1, 2, 15);
  DekRewrap to0 = TestRewrap("a", 1, 1, 0, 16);
  for (const DekRewrap& bad : {empty_blob, same_kek, version0, no_tenant, to0}) {
    const std::vector<DekRewrap> batch = {good, bad};
    EXPECT_EQ(store().UpdateDekWrappings(batch).status().code(), StatusCode::kInvalidArgument);
  }
  std::vector<DekRewrap> too_many(kMaxDekRewrapBatch + 1, good);
  EXPECT_EQ(store().UpdateDekWrappings(too_many).status().code(), StatusCode::kInvalidArgument);

  auto dek = store().GetTenantDek("a", 1);
  ASSERT_TRUE(dek.ok()) << dek.status();
  ExpectSameDek(dek->dek, TestDek("a", 1));
}

// A full batch, listed and re-wrapped the way the re-wrap job does it.
TEST_P(TenantKeyStoreContractTest, AFullBatchRewrapsEveryListedRow) {
  constexpr int kTenants = static_cast<int>(kMaxDekRewrapBatch) / 2;
  for (int i = 0; i < kTenants; ++i) {
    const std::string id = absl::StrCat("tenant-", i);
    KMS_ASSERT_OK(CreateTestTenant(store(), id));
    KMS_ASSERT_OK(store().RotateDek(id, 1, TestDek(id, 2)));
  }
  auto page = store().ListDeksWrappedUnder(1, DekKey{}, static_cast<int>(kMaxDekRewrapBatch));
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->deks.size(), kMaxDekRewrapBatch);
  EXPECT_FALSE(page->more);
  std::vector<DekRewrap> rewraps;
  for (const DekRecord& d : page->deks) {
    rewraps.push_back(TestRewrap(d.tenant_id, d.version, 1, 2, static_cast<uint8_t>(d.version)));
  }
  const auto results = Rewrap(store(), rewraps);
  EXPECT_EQ(std::count(results.begin(), results.end(), DekRewrapResult::kUpdated),
            static_cast<long>(kMaxDekRewrapBatch));
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{}, 100), std::vector<std::string>{});
  EXPECT_EQ(WalkWrappedUnder(store(), 2, DekKey{}, 1000).size(), kMaxDekRewrapBatch);
}

// The compare-and-set per row: rows changed between the listing and the re-wrap (by a
// shred, or by another replica's re-wrap) are skipped and keep what the other change
// wrote; a tenant rotation in between does not stop the re-wrap of its older rows.
TEST_P(TenantKeyStoreContractTest, UpdateDekWrappingsSkipsRowsChangedAfterTheyWereListed) {
  using R = DekRewrapResult;
  for (const std::string id : {"a", "b", "c"}) KMS_ASSERT_OK(CreateTestTenant(store(), id));
  auto page = store().ListDeksWrappedUnder(1, DekKey{}, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->deks.size(), 3u);

  KMS_ASSERT_OK(store().SetTenantState("a", 1, TenantState::kShredded));
  const std::vector<DekRewrap> other_replica = {TestRewrap("b", 1, 1, 2, 77)};
  ASSERT_EQ(Rewrap(store(), other_replica), std::vector<R>{R::kUpdated});
  KMS_ASSERT_OK(store().RotateDek("c", 1, DekUnder("c", 2, 2)));

  std::vector<DekRewrap> mine;
  for (const DekRecord& d : page->deks) mine.push_back(TestRewrap(d.tenant_id, d.version, 1, 2, 5));
  EXPECT_EQ(Rewrap(store(), mine), (std::vector<R>{R::kSkipped, R::kSkipped, R::kUpdated}));

  auto a = store().GetTenantDek("a", 1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->dek.state, DekState::kDestroyed);
  EXPECT_TRUE(a->dek.wrapped.empty());
  auto b = store().GetTenantDek("b", 1);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->dek.wrapped, other_replica[0].wrapped);
  auto c1 = store().GetTenantDek("c", 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->dek.kek_version, 2u);
  EXPECT_EQ(c1->dek.wrapped, mine[2].wrapped);
  auto c2 = store().GetTenantDek("c", 0);
  ASSERT_TRUE(c2.ok()) << c2.status();
  ExpectSameDek(c2->dek, DekUnder("c", 2, 2));
}

TEST_P(TenantKeyStoreContractTest, ConcurrentRewrapsOfTheSameRowsHaveOneWinnerPerRow) {
  constexpr int kThreads = 4;
  constexpr int kTenants = 40;
  for (int i = 0; i < kTenants; ++i) {
    KMS_ASSERT_OK(CreateTestTenant(store(), absl::StrCat("t", i)));
  }
  // Each thread re-wraps every row with its own bytes, in its own order.
  std::vector<std::vector<DekRewrap>> batches(kThreads);
  std::mt19937 rng(3);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kTenants; ++i) {
      batches[t].push_back(TestRewrap(absl::StrCat("t", i), 1, 1, 2, static_cast<uint8_t>(t)));
    }
    std::shuffle(batches[t].begin(), batches[t].end(), rng);
  }
  std::latch start(kThreads);
  std::vector<absl::StatusOr<std::vector<DekRewrapResult>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      results[t] = store().UpdateDekWrappings(batches[t]);
    });
  }
  for (auto& th : threads) th.join();

  std::map<std::string, int> winner;  // tenant -> thread whose re-wrap was applied
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(results[t].ok()) << "thread " << t << ": " << results[t].status();
    ASSERT_EQ(results[t]->size(), batches[t].size());
    for (size_t i = 0; i < batches[t].size(); ++i) {
      const DekRewrapResult r = (*results[t])[i];
      ASSERT_NE(r, DekRewrapResult::kNotFound);
      if (r == DekRewrapResult::kUpdated) {
        EXPECT_TRUE(winner.emplace(batches[t][i].tenant_id, t).second)
            << batches[t][i].tenant_id << " re-wrapped twice";
      }
    }
  }
  ASSERT_EQ(winner.size(), static_cast<size_t>(kTenants));
  for (const auto& [tenant, t] : winner) {
    auto dek = store().GetTenantDek(tenant, 1);
    ASSERT_TRUE(dek.ok()) << dek.status();
    EXPECT_EQ(dek->dek.wrapped, TestBlob(static_cast<uint8_t>(t), 48)) << tenant;
  }
}

// A re-wrap job racing tenant rotations and shreds on other threads: no shredded DEK
// gets bytes back, no new DEK is overwritten, and nothing stays under the old KEK.
TEST_P(TenantKeyStoreContractTest, ARewrapRacingRotationsAndShredsNeverOverwritesTheirChanges) {
  constexpr int kTenants = 60;
  for (int i = 0; i < kTenants; ++i) {
    const std::string id = absl::StrCat("t", i);
    KMS_ASSERT_OK(CreateTestTenant(store(), id));
    KMS_ASSERT_OK(store().RotateDek(id, 1, TestDek(id, 2)));
  }
  std::latch start(2);
  absl::Status rewrap_status;
  std::thread rewrapper([&] {
    start.arrive_and_wait();
    DekKey after;
    for (;;) {
      auto page = store().ListDeksWrappedUnder(1, after, 7);
      if (!page.ok()) {
        rewrap_status = page.status();
        return;
      }
      std::vector<DekRewrap> batch;
      for (const DekRecord& d : page->deks) {
        batch.push_back(TestRewrap(d.tenant_id, d.version, 1, 2, 0x42));
      }
      auto results = store().UpdateDekWrappings(batch);
      if (!results.ok()) {
        rewrap_status = results.status();
        return;
      }
      if (!page->more) return;
      after = DekKey{page->deks.back().tenant_id, page->deks.back().version};
    }
  });
  absl::Status other_status;
  std::thread other([&] {
    start.arrive_and_wait();
    for (int i = 0; i < kTenants && other_status.ok(); ++i) {
      const std::string id = absl::StrCat("t", i);
      other_status = i % 2 == 0 ? store().SetTenantState(id, 2, TenantState::kShredded)
                                : store().RotateDek(id, 2, DekUnder(id, 3, 2));
    }
  });
  rewrapper.join();
  other.join();
  KMS_ASSERT_OK(rewrap_status);
  KMS_ASSERT_OK(other_status);

  for (int i = 0; i < kTenants; ++i) {
    const std::string id = absl::StrCat("t", i);
    auto deks = store().ListDeks(id);
    ASSERT_TRUE(deks.ok()) << deks.status();
    for (const DekRecord& d : *deks) {
      SCOPED_TRACE(KeyOf(d));
      if (i % 2 == 0) {
        EXPECT_EQ(d.state, DekState::kDestroyed);
        EXPECT_TRUE(d.wrapped.empty());
      } else if (d.version == 3) {
        ExpectSameDek(d, DekUnder(id, 3, 2));
      } else {
        // Listed before or after the rotation: either way the re-wrap moved it.
        EXPECT_EQ(d.kek_version, 2u);
        EXPECT_EQ(d.wrapped, TestBlob(0x42, 48));
      }
    }
  }
  EXPECT_EQ(WalkWrappedUnder(store(), 1, DekKey{}, 100), std::vector<std::string>{});
}
// --- Scheduled DEK rotation (ListTenantsDueForRotation, tenant rotation periods)

namespace {
std::vector<std::string> DueIds(const DueTenantPage& page) {
  std::vector<std::string> ids;
  for (const DueTenant& t : page.tenants) ids.push_back(t.tenant_id);
  return ids;
}
}  // namespace

TEST_P(TenantKeyStoreContractTest, TenantsDueForRotationAreThoseWhosePrimaryDekIsOlderThanThePeriod) {
  // TestDek(v).created_at = 1700000200 + v.
  for (const char* id : {"a", "b", "c", "d"}) KMS_ASSERT_OK(CreateTestTenant(store(), id));
  KMS_ASSERT_OK(store().RotateDek("b", 1, TestDek("b", 5)));  // newer primary: 1700000205
  KMS_ASSERT_OK(store().SetTenantState("d", 1, TenantState::kShredded));

  const int64_t period = 1000;
  auto page = store().ListTenantsDueForRotation(1700000201 + period - 1, period, "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->tenants.empty());  // nothing before the period

  page = store().ListTenantsDueForRotation(1700000201 + period, period, "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"a", "c"}));  // b is newer, d shredded
  EXPECT_FALSE(page->more);
  EXPECT_EQ(page->tenants[0].primary_dek_version, 1u);
  EXPECT_EQ(page->tenants[0].dek_created_at, 1700000201);
  EXPECT_EQ(page->tenants[0].period_seconds, period);
  EXPECT_EQ(page->tenants[0].row_version, 1);

  page = store().ListTenantsDueForRotation(1700000205 + period, period, "", 10);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_P(TenantKeyStoreContractTest, TenantsDueForRotationPageInIdOrderAfterTheCursor) {
  for (const char* id : {"e", "a", "d", "b", "c"}) KMS_ASSERT_OK(CreateTestTenant(store(), id));
  const int64_t now = 1700000201 + 10;
  auto page = store().ListTenantsDueForRotation(now, 10, "", 2);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(page->more);
  page = store().ListTenantsDueForRotation(now, 10, "b", 2);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"c", "d"}));
  EXPECT_TRUE(page->more);
  page = store().ListTenantsDueForRotation(now, 10, "d", 2);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"e"}));
  EXPECT_FALSE(page->more);
  EXPECT_EQ(store().ListTenantsDueForRotation(now, 10, "", 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store().ListTenantsDueForRotation(now, 0, "", 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(TenantKeyStoreContractTest, ATenantsOwnRotationPeriodOverridesTheDefault) {
  for (const char* id : {"short", "long", "dflt"}) KMS_ASSERT_OK(CreateTestTenant(store(), id));
  const int64_t epoch = Epoch(health());
  KMS_ASSERT_OK(store().SetTenantRotationPeriod("short", 100));
  KMS_ASSERT_OK(store().SetTenantRotationPeriod("long", 100000));
  EXPECT_EQ(Epoch(health()), epoch);  // a setting, not a key change
  auto period = store().GetTenantRotationPeriod("short");
  ASSERT_TRUE(period.ok()) << period.status();
  EXPECT_EQ(*period, 100);
  period = store().GetTenantRotationPeriod("dflt");
  ASSERT_TRUE(period.ok());
  EXPECT_EQ(*period, 0);
  auto tenant = store().GetTenant("short");
  ASSERT_TRUE(tenant.ok());
  EXPECT_EQ(tenant->row_version, 1);  // a racing rotation keeps its compare-and-set

  auto page = store().ListTenantsDueForRotation(1700000201 + 100, 10000, "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"short"}));
  EXPECT_EQ(page->tenants[0].period_seconds, 100);
  page = store().ListTenantsDueForRotation(1700000201 + 10000, 10000, "", 10);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(DueIds(*page), (std::vector<std::string>{"dflt", "short"}));

  KMS_ASSERT_OK(store().SetTenantRotationPeriod("short", 0));  // back to the default
  page = store().ListTenantsDueForRotation(1700000201 + 100, 10000, "", 10);
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->tenants.empty());
}

TEST_P(TenantKeyStoreContractTest, SetTenantRotationPeriodRefusesUnknownShreddedAndNegative) {
  KMS_ASSERT_OK(CreateTestTenant(store(), "acme"));
  EXPECT_EQ(store().SetTenantRotationPeriod("nobody", 10).code(), StatusCode::kNotFound);
  EXPECT_EQ(store().GetTenantRotationPeriod("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().SetTenantRotationPeriod("acme", -1).code(), StatusCode::kInvalidArgument);
  KMS_ASSERT_OK(store().SetTenantState("acme", 1, TenantState::kShredded));
  EXPECT_EQ(store().SetTenantRotationPeriod("acme", 10).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kms::store::contract
