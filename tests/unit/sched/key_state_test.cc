// KeyStateCache against a real KeyManager and KEK ring (FakeHsm, SQLite in memory, a
// simulated clock): the primary KEK's and the oldest primary DEK's creation times, the
// re-wrap backlog after a KEK rotation, and that a store outage keeps the last values.
#include "src/sched/key_state.h"

#include <chrono>
#include <memory>

#include "gtest/gtest.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/fake_hsm.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::sched {
namespace {

using namespace std::chrono_literals;

// Counts the reads of every DEK's KEK version (ListKekUsage), which Refresh must not make:
// it runs at start-up and every minute, and that count grows with the store.
class CountingStore : public testing::InjectingKeyStore {
 public:
  using testing::InjectingKeyStore::InjectingKeyStore;
  absl::StatusOr<std::vector<store::KekUsage>> ListKekUsage() override {
    ++full_counts;
    return testing::InjectingKeyStore::ListKekUsage();
  }
  int full_counts = 0;
};

class KeyStateCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::SqliteKeyStore::Open(":memory:");
    ASSERT_TRUE(opened.ok()) << opened.status();
    inner_ = std::move(*opened);
    store_ = std::make_unique<CountingStore>(inner_.get());
    auto ring = keys::HsmKekRing::Create(&hsm_, store_.get(), &clock_);
    ASSERT_TRUE(ring.ok()) << ring.status();
    ring_ = std::move(*ring);
    auto made = keys::KeyManager::Create(ring_.get(), store_.get(), &clock_, {});
    ASSERT_TRUE(made.ok()) << made.status();
    keys_ = std::move(*made);
    cache_ = std::make_unique<KeyStateCache>(*store_, *store_,
                                             [this] { return ring_->primary_version(); });
    cache_->set_now_for_refresh([this] { return clock_.UnixSeconds(); });
  }
  void CreateTenant(const char* id) {
    ASSERT_TRUE(keys_->CreateTenant(keys::TenantId::Parse(id).value()).ok());
  }

  testing::SimulatedClock clock_;
  testing::FakeHsm hsm_;
  std::unique_ptr<store::KeyStore> inner_;
  std::unique_ptr<CountingStore> store_;
  std::unique_ptr<keys::HsmKekRing> ring_;
  std::unique_ptr<keys::KeyManager> keys_;
  std::unique_ptr<KeyStateCache> cache_;
};

TEST_F(KeyStateCacheTest, ReadsThePrimaryKekAndTheOldestPrimaryDek) {
  const int64_t t0 = clock_.UnixSeconds();
  EXPECT_EQ(cache_->kek_primary_created_at(), 0);  // nothing read yet
  ASSERT_TRUE(cache_->Refresh().ok());
  EXPECT_EQ(cache_->kek_primary_created_at(), t0);
  EXPECT_EQ(cache_->dek_oldest_primary_created_at(), 0);  // no tenant
  EXPECT_EQ(cache_->rewrap_backlog(), 0u);

  clock_.Advance(100s);
  CreateTenant("acme");
  clock_.Advance(50s);
  CreateTenant("globex");
  ASSERT_TRUE(cache_->Refresh().ok());
  EXPECT_EQ(cache_->dek_oldest_primary_created_at(), t0 + 100);
  EXPECT_EQ(cache_->last_refresh_unix(), t0 + 150);

  // acme's new primary DEK is younger; globex's is now the oldest.
  clock_.Advance(10s);
  ASSERT_TRUE(keys_->RotateTenantDek(keys::TenantId::Parse("acme").value()).ok());
  ASSERT_TRUE(cache_->Refresh().ok());
  EXPECT_EQ(cache_->dek_oldest_primary_created_at(), t0 + 150);
}

TEST_F(KeyStateCacheTest, AKekRotationLeavesABacklogOfDeksUnderTheOldVersion) {
  CreateTenant("acme");
  CreateTenant("globex");
  clock_.Advance(200s);
  auto rotated = ring_->Rotate();
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  ASSERT_TRUE(cache_->Refresh().ok());
  EXPECT_EQ(cache_->kek_primary_created_at(), clock_.UnixSeconds());
  EXPECT_EQ(cache_->rewrap_backlog(), 2u);  // both first DEKs are still under KEK v1
  EXPECT_EQ(store_->full_counts, 0) << "Refresh counted every DEK (a scan of the store)";
}

TEST_F(KeyStateCacheTest, AStoreOutageKeepsTheLastValues) {
  CreateTenant("acme");
  ASSERT_TRUE(cache_->Refresh().ok());
  const int64_t kek = cache_->kek_primary_created_at();
  const int64_t dek = cache_->dek_oldest_primary_created_at();
  store_->SetUnavailable(true);
  clock_.Advance(60s);
  absl::Status s = cache_->Refresh();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_EQ(cache_->kek_primary_created_at(), kek);
  EXPECT_EQ(cache_->dek_oldest_primary_created_at(), dek);
}

TEST_F(KeyStateCacheTest, RotationPeriodsAreSetPerKey) {
  EXPECT_EQ(cache_->rotation_period(RotatingKey::kKek), 0);
  cache_->SetRotationPeriod(RotatingKey::kKek, 7776000);
  cache_->SetRotationPeriod(RotatingKey::kJwt, 86400);
  EXPECT_EQ(cache_->rotation_period(RotatingKey::kKek), 7776000);
  EXPECT_EQ(cache_->rotation_period(RotatingKey::kJwt), 86400);
  EXPECT_EQ(RotatingKeyName(RotatingKey::kDek), "dek");
}

}  // namespace
}  // namespace kms::sched
