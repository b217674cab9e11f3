#include "tests/integration/store/store_contract.h"

#include <algorithm>
#include <atomic>
#include <latch>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kms::store::contract {

#define KMS_EXPECT_OK(expr)                \
  do {                                     \
    const ::absl::Status kms_st_ = (expr); \
    EXPECT_TRUE(kms_st_.ok()) << kms_st_;  \
  } while (0)
#define KMS_ASSERT_OK(expr)                \
  do {                                     \
    const ::absl::Status kms_st_ = (expr); \
    ASSERT_TRUE(kms_st_.ok()) << kms_st_;  \
  } while (0)

void PrintTo(const KeyStoreBackend& backend, std::ostream* os) { *os << backend.name; }

std::string KeyStoreBackendName(const ::testing::TestParamInfo<KeyStoreBackend>& info) {
  return info.param.name;
}

void KeyStoreContractTest::SetUp() {
  auto made = GetParam().make();
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_NE(*made, nullptr);
  store_ = std::move(*made);
}

std::vector<uint8_t> TestBlob(uint8_t seed, size_t size) {
  std::vector<uint8_t> blob(size);
  for (size_t i = 0; i < size; ++i) blob[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  blob[size / 2] = 0x00;
  blob[size - 1] = 0xff;
  return blob;
}

KekRecord TestKek(uint32_t version) {
  KekRecord kek;
  kek.version = version;
  kek.wrapped = TestBlob(static_cast<uint8_t>(100 + version), 512);
  kek.state = KekState::kActive;
  kek.created_at = 1700000000 + version;
  return kek;
}

TenantRecord TestTenant(const std::string& id) {
  TenantRecord tenant;
  tenant.id = id;
  tenant.state = TenantState::kActive;
  tenant.primary_dek_version = 1;
  tenant.min_decrypt_version = 1;
  tenant.created_at = 1700000100;
  return tenant;
}

DekRecord TestDek(const std::string& tenant_id, uint32_t version) {
  DekRecord dek;
  dek.tenant_id = tenant_id;
  dek.version = version;
  dek.kek_version = 1;
  dek.wrapped = TestBlob(static_cast<uint8_t>(tenant_id.size() * 13 + version));
  dek.state = DekState::kActive;
  dek.created_at = 1700000200 + version;
  return dek;
}

JwtKeyRecord TestJwtKey(const std::string& kid, int64_t activate_at) {
  JwtKeyRecord key;
  key.kid = kid;
  key.public_jwk = absl::StrCat(R"({"kty":"EC","crv":"P-256","kid":")", kid, R"("})");
  key.wrapped_private = TestBlob(static_cast<uint8_t>(kid.size() * 17 + activate_at % 251), 96);
  key.kek_version = 1;
  key.created_at = activate_at - 300;
  key.activate_at = activate_at;
  key.retire_at = 0;
  key.row_version = 1;
  return key;
}

void WriteReopenSample(KeyStore& store, int64_t* epoch) {
  ASSERT_TRUE(store.InsertKek(TestKek(1)).ok());
  ASSERT_TRUE(store.CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  ASSERT_TRUE(store.RotateDek("acme", 1, TestDek("acme", 2)).ok());
  ASSERT_TRUE(store.AddEncryptions("acme", 2, 17).ok());
  auto current = store.GetEpoch();
  ASSERT_TRUE(current.ok()) << current.status();
  *epoch = *current;
}

void ExpectReopenSample(KeyStore& store, int64_t epoch) {
  auto keks = store.ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].wrapped, TestKek(1).wrapped);

  auto td = store.GetTenantDek("acme", 0);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_EQ(td->tenant.primary_dek_version, 2u);
  EXPECT_EQ(td->tenant.row_version, 2);
  EXPECT_EQ(td->dek.wrapped, TestDek("acme", 2).wrapped);
  EXPECT_EQ(td->dek.encryptions, 17u);
  EXPECT_EQ(*store.GetEpoch(), epoch);
}

namespace {

using ::absl::StatusCode;

// Creates tenant `id` with DEK version 1.
absl::Status Create(KeyStore& store, const std::string& id) {
  return store.CreateTenant(TestTenant(id), TestDek(id, 1));
}

int64_t Epoch(KeyStore& store) {
  auto epoch = store.GetEpoch();
  EXPECT_TRUE(epoch.ok()) << epoch.status();
  return epoch.ok() ? *epoch : -1;
}

void ExpectSameDek(const DekRecord& actual, const DekRecord& expected) {
  EXPECT_EQ(actual.tenant_id, expected.tenant_id);
  EXPECT_EQ(actual.version, expected.version);
  EXPECT_EQ(actual.kek_version, expected.kek_version);
  EXPECT_EQ(actual.wrapped, expected.wrapped);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.created_at, expected.created_at);
  EXPECT_EQ(actual.encryptions, expected.encryptions);
}

// --- Empty store

TEST_P(KeyStoreContractTest, EmptyStoreListsNothing) {
  EXPECT_FALSE(store().backend_name().empty());
  KMS_EXPECT_OK(store().Ping());

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  EXPECT_TRUE(keks->empty());

  auto page = store().ListTenants("", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->tenants.empty());
  EXPECT_TRUE(page->next_after.empty());

  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 0u);

  auto epoch = store().GetEpoch();
  ASSERT_TRUE(epoch.ok()) << epoch.status();
  EXPECT_GE(*epoch, 0);
}

// --- KEKs

TEST_P(KeyStoreContractTest, InsertedKeksListInVersionOrderWithExactBytes) {
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

TEST_P(KeyStoreContractTest, InsertingAnExistingKekVersionIsAlreadyExistsAndKeepsTheFirst) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KekRecord other = TestKek(1);
  other.wrapped = TestBlob(7);
  EXPECT_EQ(store().InsertKek(other).code(), StatusCode::kAlreadyExists);

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].wrapped, TestKek(1).wrapped);
}

TEST_P(KeyStoreContractTest, UpdateKekStateMovesFromTheExpectedState) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_EXPECT_OK(store().UpdateKekState(1, KekState::kActive, KekState::kRetired));

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].state, KekState::kRetired);
  EXPECT_EQ((*keks)[0].wrapped, TestKek(1).wrapped);
}

TEST_P(KeyStoreContractTest, UpdateKekStateFromTheWrongStateIsAborted) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  const int64_t epoch = Epoch(store());
  EXPECT_EQ(store().UpdateKekState(1, KekState::kRetired, KekState::kActive).code(),
            StatusCode::kAborted);

  auto keks = store().ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  EXPECT_EQ((*keks)[0].state, KekState::kActive);
  EXPECT_EQ(Epoch(store()), epoch);
}

TEST_P(KeyStoreContractTest, UpdateKekStateOfAnUnknownVersionIsNotFound) {
  EXPECT_EQ(store().UpdateKekState(9, KekState::kActive, KekState::kRetired).code(),
            StatusCode::kNotFound);
}

// --- Tenants

TEST_P(KeyStoreContractTest, CreatedTenantReadsBackWithItsFirstDek) {
  KMS_ASSERT_OK(Create(store(), "acme"));

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

TEST_P(KeyStoreContractTest, CreatingAnExistingTenantIsAlreadyExistsAndKeepsTheFirstDek) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  const int64_t epoch = Epoch(store());

  DekRecord other = TestDek("acme", 1);
  other.wrapped = TestBlob(99);
  other.kek_version = 2;
  EXPECT_EQ(store().CreateTenant(TestTenant("acme"), other).code(),
            StatusCode::kAlreadyExists);

  auto td = store().GetTenantDek("acme", 0);
  ASSERT_TRUE(td.ok()) << td.status();
  ExpectSameDek(td->dek, TestDek("acme", 1));
  EXPECT_EQ(td->tenant.row_version, 1);
  EXPECT_EQ(Epoch(store()), epoch);
}

TEST_P(KeyStoreContractTest, TenantIdsAreStoredVerbatim) {
  const std::string id = "o'brien\"; DROP TABLE tenants; -- \xc3\xa9";
  KMS_ASSERT_OK(Create(store(), id));
  auto tenant = store().GetTenant(id);
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->id, id);
  EXPECT_EQ(store().GetTenant("o'brien").status().code(), StatusCode::kNotFound);
}

TEST_P(KeyStoreContractTest, UnknownTenantIsNotFoundEverywhere) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  const int64_t epoch = Epoch(store());

  EXPECT_EQ(store().GetTenant("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().GetTenantDek("nobody", 0).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().GetTenantDek("nobody", 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().ListDeks("nobody").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().RotateDek("nobody", 1, TestDek("nobody", 2)).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store().SetTenantState("nobody", 1, TenantState::kShredded).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store().AddEncryptions("nobody", 1, 5).code(), StatusCode::kNotFound);
  EXPECT_EQ(Epoch(store()), epoch);
}

TEST_P(KeyStoreContractTest, UnknownDekVersionIsNotFound) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  EXPECT_EQ(store().GetTenantDek("acme", 2).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store().AddEncryptions("acme", 2, 5).code(), StatusCode::kNotFound);
}

TEST_P(KeyStoreContractTest, ListTenantsPagesInIdOrder) {
  std::vector<std::string> ids;
  for (int i = 0; i < 25; ++i) ids.push_back(absl::StrCat("tenant-", i < 10 ? "0" : "", i));
  std::vector<std::string> shuffled = ids;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(42));
  for (const auto& id : shuffled) KMS_ASSERT_OK(Create(store(), id));

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

TEST_P(KeyStoreContractTest, ListTenantsEndsWithoutAnEmptyPageWhenTheLastPageIsFull) {
  for (int i = 0; i < 20; ++i) KMS_ASSERT_OK(Create(store(), absl::StrCat("t", 10 + i)));
  auto first = store().ListTenants("", 10);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->next_after, "t19");
  auto second = store().ListTenants(first->next_after, 10);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->tenants.size(), 10u);
  EXPECT_EQ(second->tenants.front().id, "t20");
  EXPECT_TRUE(second->next_after.empty());
}

TEST_P(KeyStoreContractTest, CountTenantsCountsEveryTenant) {
  for (int i = 0; i < 7; ++i) KMS_ASSERT_OK(Create(store(), absl::StrCat("t", i)));
  auto shredded = store().GetTenant("t3");
  ASSERT_TRUE(shredded.ok()) << shredded.status();
  KMS_ASSERT_OK(store().SetTenantState("t3", shredded->row_version, TenantState::kShredded));

  auto count = store().CountTenants();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 7u);
}

// --- DEK rotation

TEST_P(KeyStoreContractTest, RotateDekMovesThePrimaryAndKeepsTheOldVersionReadable) {
  KMS_ASSERT_OK(Create(store(), "acme"));
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

TEST_P(KeyStoreContractTest, RotateDekWithAStaleRowVersionIsAbortedAndChangesNothing) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  const int64_t epoch = Epoch(store());

  EXPECT_EQ(store().RotateDek("acme", 1, TestDek("acme", 3)).code(), StatusCode::kAborted);

  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->primary_dek_version, 2u);
  EXPECT_EQ(tenant->row_version, 2);
  EXPECT_EQ(store().GetTenantDek("acme", 3).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(Epoch(store()), epoch);
}

TEST_P(KeyStoreContractTest, RotateDekToAVersionNotAboveThePrimaryIsFailedPrecondition) {
  KMS_ASSERT_OK(Create(store(), "acme"));
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

TEST_P(KeyStoreContractTest, ConcurrentRotationsFromTheSameRowVersionHaveExactlyOneWinner) {
  constexpr int kThreads = 8;
  // Several rounds with the new versions shuffled: a store that only refused versions
  // below the primary, without compare-and-set, would let more than one through in
  // almost every round.
  constexpr int kRounds = 6;
  std::mt19937 rng(7);
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string id = absl::StrCat("race-", round);
    KMS_ASSERT_OK(Create(store(), id));
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
TEST_P(KeyStoreContractTest, ShreddingDestroysEveryDekBlobAndStaysReadable) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  KMS_ASSERT_OK(Create(store(), "other"));
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

TEST_P(KeyStoreContractTest, ShreddingIsFinal) {
  KMS_ASSERT_OK(Create(store(), "acme"));
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

TEST_P(KeyStoreContractTest, SetTenantStateWithAStaleRowVersionIsAbortedAndDestroysNothing) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  EXPECT_EQ(store().SetTenantState("acme", 1, TenantState::kShredded).code(),
            StatusCode::kAborted);
  auto td = store().GetTenantDek("acme", 1);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_EQ(td->tenant.state, TenantState::kActive);
  ExpectSameDek(td->dek, TestDek("acme", 1));
}

// --- Usage counters

TEST_P(KeyStoreContractTest, AddEncryptionsAccumulatesPerVersion) {
  KMS_ASSERT_OK(Create(store(), "acme"));
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

// Contract decision: the encryption count is usage, not key state. Counting neither
// moves the epoch (replicas would drop their caches at every flush) nor the tenant's
// row_version (a rotation racing a flush would lose its compare-and-set).
TEST_P(KeyStoreContractTest, AddEncryptionsMovesNeitherTheEpochNorTheRowVersion) {
  KMS_ASSERT_OK(Create(store(), "acme"));
  const int64_t epoch = Epoch(store());
  KMS_ASSERT_OK(store().AddEncryptions("acme", 1, 42));
  EXPECT_EQ(Epoch(store()), epoch);
  auto tenant = store().GetTenant("acme");
  ASSERT_TRUE(tenant.ok()) << tenant.status();
  EXPECT_EQ(tenant->row_version, 1);
  KMS_EXPECT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
}

// --- Coherence

TEST_P(KeyStoreContractTest, EveryStateChangeIncreasesTheEpochAndReadsDoNot) {
  int64_t last = Epoch(store());
  auto expect_increased = [&](const char* what) {
    const int64_t now = Epoch(store());
    EXPECT_GT(now, last) << what;
    last = now;
  };
  auto reads = [&] {
    (void)store().ListKeks();
    (void)store().GetTenant("acme");
    (void)store().GetTenantDek("acme", 0);
    (void)store().ListDeks("acme");
    (void)store().ListTenants("", 5);
    (void)store().CountTenants();
    (void)store().Ping();
    EXPECT_EQ(Epoch(store()), last) << "after reads";
  };

  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  expect_increased("InsertKek");
  reads();
  KMS_ASSERT_OK(store().UpdateKekState(1, KekState::kActive, KekState::kRetired));
  expect_increased("UpdateKekState");
  KMS_ASSERT_OK(Create(store(), "acme"));
  expect_increased("CreateTenant");
  reads();
  KMS_ASSERT_OK(store().RotateDek("acme", 1, TestDek("acme", 2)));
  expect_increased("RotateDek");
  KMS_ASSERT_OK(store().SetTenantState("acme", 2, TenantState::kShredded));
  expect_increased("SetTenantState");
  reads();
}

TEST_P(KeyStoreContractTest, RejectedChangesLeaveTheEpoch) {
  KMS_ASSERT_OK(store().InsertKek(TestKek(1)));
  KMS_ASSERT_OK(Create(store(), "acme"));
  const int64_t epoch = Epoch(store());

  EXPECT_FALSE(store().InsertKek(TestKek(1)).ok());
  EXPECT_FALSE(store().UpdateKekState(1, KekState::kRetired, KekState::kActive).ok());
  EXPECT_FALSE(Create(store(), "acme").ok());
  EXPECT_FALSE(store().RotateDek("acme", 7, TestDek("acme", 2)).ok());
  EXPECT_FALSE(store().SetTenantState("acme", 7, TenantState::kShredded).ok());
  EXPECT_EQ(Epoch(store()), epoch);
}


// --- JWT signing keys

void ExpectSameJwtKey(const JwtKeyRecord& actual, const JwtKeyRecord& expected) {
  EXPECT_EQ(actual.kid, expected.kid);
  EXPECT_EQ(actual.public_jwk, expected.public_jwk);
  EXPECT_EQ(actual.wrapped_private, expected.wrapped_private);
  EXPECT_EQ(actual.kek_version, expected.kek_version);
  EXPECT_EQ(actual.created_at, expected.created_at);
  EXPECT_EQ(actual.activate_at, expected.activate_at);
  EXPECT_EQ(actual.retire_at, expected.retire_at);
}

std::vector<JwtKeyRecord> JwtKeys(KeyStore& store) {
  auto keys = store.ListJwtKeys();
  EXPECT_TRUE(keys.ok()) << keys.status();
  return keys.ok() ? *keys : std::vector<JwtKeyRecord>();
}

TEST_P(KeyStoreContractTest, EmptyStoreHasNoJwtKeys) { EXPECT_TRUE(JwtKeys(store()).empty()); }

TEST_P(KeyStoreContractTest, FirstJwtKeyReadsBackWithRowVersionOne) {
  const JwtKeyRecord key = TestJwtKey("kid-a", 1700000000);
  KMS_ASSERT_OK(store().InsertFirstJwtKey(key));
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  ExpectSameJwtKey(keys[0], key);
  EXPECT_EQ(keys[0].row_version, 1);
}

TEST_P(KeyStoreContractTest, SecondFirstJwtKeyIsAlreadyExistsAndKeepsTheFirst) {
  const JwtKeyRecord first = TestJwtKey("kid-a", 1700000000);
  KMS_ASSERT_OK(store().InsertFirstJwtKey(first));
  // Another replica's first key, with another kid: still refused.
  EXPECT_EQ(store().InsertFirstJwtKey(TestJwtKey("kid-b", 1700000001)).code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(store().InsertFirstJwtKey(first).code(), StatusCode::kAlreadyExists);
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  ExpectSameJwtKey(keys[0], first);
}

TEST_P(KeyStoreContractTest, RotateJwtKeyRetiresTheCurrentAndInsertsTheNext) {
  const JwtKeyRecord first = TestJwtKey("kid-a", 1700000000);
  KMS_ASSERT_OK(store().InsertFirstJwtKey(first));
  const JwtKeyRecord next = TestJwtKey("kid-b", 1700000300);
  KMS_ASSERT_OK(store().RotateJwtKey("kid-a", 1, 1700001260, next));

  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 2u);
  JwtKeyRecord retired = first;
  retired.retire_at = 1700001260;
  ExpectSameJwtKey(keys[0], retired);
  EXPECT_EQ(keys[0].row_version, 2);
  ExpectSameJwtKey(keys[1], next);
  EXPECT_EQ(keys[1].row_version, 1);
}

TEST_P(KeyStoreContractTest, RotateJwtKeyWithAStaleRowVersionIsAbortedAndChangesNothing) {
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  KMS_ASSERT_OK(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-b", 1700000300)));
  const auto before = JwtKeys(store());
  const int64_t epoch = Epoch(store());

  EXPECT_EQ(store().RotateJwtKey("kid-a", 1, 1700009999, TestJwtKey("kid-c", 1700000600)).code(),
            StatusCode::kAborted);
  auto after = JwtKeys(store());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    ExpectSameJwtKey(after[i], before[i]);
    EXPECT_EQ(after[i].row_version, before[i].row_version);
  }
  EXPECT_EQ(Epoch(store()), epoch);
}

TEST_P(KeyStoreContractTest, RotateJwtKeyOfAnUnknownKidIsNotFound) {
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  EXPECT_EQ(store().RotateJwtKey("kid-x", 1, 1700001260, TestJwtKey("kid-b", 1700000300)).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(JwtKeys(store()).size(), 1u);
}

TEST_P(KeyStoreContractTest, RotateJwtKeyToAnExistingKidIsAlreadyExistsAndChangesNothing) {
  const JwtKeyRecord first = TestJwtKey("kid-a", 1700000000);
  KMS_ASSERT_OK(store().InsertFirstJwtKey(first));
  EXPECT_EQ(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-a", 1700000300)).code(),
            StatusCode::kAlreadyExists);
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  ExpectSameJwtKey(keys[0], first);
  EXPECT_EQ(keys[0].row_version, 1);
}

TEST_P(KeyStoreContractTest, ConcurrentJwtRotationsFromTheSameRowVersionHaveExactlyOneWinner) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 4;
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("round-0", 1700000000)));
  std::string current = "round-0";
  for (int round = 1; round <= kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    std::latch all_read(kThreads);
    std::vector<absl::Status> results(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        auto keys = store().ListJwtKeys();
        if (!keys.ok() || keys->empty()) {
          all_read.count_down();
          results[i] = keys.ok() ? absl::InternalError("no keys") : keys.status();
          return;
        }
        const JwtKeyRecord& cur = keys->back();
        all_read.arrive_and_wait();
        results[i] = store().RotateJwtKey(
            cur.kid, cur.row_version, 1700000000 + round * 1000 + 500,
            TestJwtKey(absl::StrCat("round-", round, "-t", i), 1700000000 + round * 1000));
      });
    }
    for (auto& t : threads) t.join();

    int ok = 0;
    int winner = -1;
    for (int i = 0; i < kThreads; ++i) {
      if (results[i].ok()) {
        ++ok;
        winner = i;
      } else {
        EXPECT_EQ(results[i].code(), StatusCode::kAborted) << "thread " << i << ": " << results[i];
      }
    }
    ASSERT_EQ(ok, 1);
    auto keys = JwtKeys(store());
    ASSERT_EQ(keys.size(), static_cast<size_t>(round + 1));
    EXPECT_EQ(keys.back().kid, absl::StrCat("round-", round, "-t", winner));
    EXPECT_EQ(keys[keys.size() - 2].kid, current);
    EXPECT_EQ(keys[keys.size() - 2].retire_at, 1700000000 + round * 1000 + 500);
    EXPECT_EQ(keys[keys.size() - 2].row_version, 2);
    current = keys.back().kid;
  }
}

TEST_P(KeyStoreContractTest, JwtKeysListInActivationOrderThenKid) {
  // Inserted out of order; equal activate_at is ordered by kid.
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("m", 1700000500)));
  KMS_ASSERT_OK(store().RotateJwtKey("m", 1, 1700009000, TestJwtKey("z", 1700000100)));
  KMS_ASSERT_OK(store().RotateJwtKey("z", 1, 1700009000, TestJwtKey("b", 1700000900)));
  KMS_ASSERT_OK(store().RotateJwtKey("b", 1, 1700009000, TestJwtKey("a", 1700000900)));
  auto keys = JwtKeys(store());
  std::vector<std::string> kids;
  for (const auto& k : keys) kids.push_back(k.kid);
  EXPECT_EQ(kids, (std::vector<std::string>{"z", "m", "a", "b"}));
}

TEST_P(KeyStoreContractTest, UpdateJwtKeyWrappingIsACompareAndSet) {
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  const std::vector<uint8_t> rewrapped = TestBlob(0x42, 120);
  KMS_ASSERT_OK(store().UpdateJwtKeyWrapping("kid-a", 1, 2, rewrapped));
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].kek_version, 2u);
  EXPECT_EQ(keys[0].wrapped_private, rewrapped);
  EXPECT_EQ(keys[0].row_version, 2);
  EXPECT_EQ(keys[0].activate_at, 1700000000);

  const int64_t epoch = Epoch(store());
  EXPECT_EQ(store().UpdateJwtKeyWrapping("kid-a", 1, 3, TestBlob(0x43, 120)).code(),
            StatusCode::kAborted);
  EXPECT_EQ(store().UpdateJwtKeyWrapping("kid-x", 1, 3, TestBlob(0x43, 120)).code(),
            StatusCode::kNotFound);
  keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].kek_version, 2u);
  EXPECT_EQ(keys[0].wrapped_private, rewrapped);
  EXPECT_EQ(keys[0].row_version, 2);
  EXPECT_EQ(Epoch(store()), epoch);

  // A rotation from the old row_version after a re-wrap loses.
  EXPECT_EQ(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-b", 1700000300)).code(),
            StatusCode::kAborted);
  KMS_EXPECT_OK(store().RotateJwtKey("kid-a", 2, 1700001260, TestJwtKey("kid-b", 1700000300)));
}

TEST_P(KeyStoreContractTest, EveryJwtKeyChangeIncreasesTheEpochAndReadsAndRejectionsDoNot) {
  int64_t last = Epoch(store());
  auto expect_increased = [&](const char* what) {
    const int64_t now = Epoch(store());
    EXPECT_GT(now, last) << what;
    last = now;
  };
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  expect_increased("InsertFirstJwtKey");
  (void)JwtKeys(store());
  EXPECT_EQ(Epoch(store()), last) << "after ListJwtKeys";
  KMS_ASSERT_OK(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-b", 1700000300)));
  expect_increased("RotateJwtKey");
  KMS_ASSERT_OK(store().UpdateJwtKeyWrapping("kid-b", 1, 2, TestBlob(9, 64)));
  expect_increased("UpdateJwtKeyWrapping");

  EXPECT_FALSE(store().InsertFirstJwtKey(TestJwtKey("kid-c", 1700000000)).ok());
  EXPECT_FALSE(store().RotateJwtKey("kid-b", 1, 1, TestJwtKey("kid-c", 1700000600)).ok());
  EXPECT_FALSE(store().UpdateJwtKeyWrapping("kid-b", 1, 3, TestBlob(9, 64)).ok());
  EXPECT_EQ(Epoch(store()), last) << "after rejected changes";
}

}  // namespace
}  // namespace kms::store::contract
