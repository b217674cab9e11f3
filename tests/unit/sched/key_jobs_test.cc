// The key jobs and the scheduler's adapters, run by a Scheduler on a simulated clock
// against a real KeyManager and JwtService (FakeHsm, SQLite in memory).
#include "src/sched/key_jobs.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "src/sched/scheduler.h"
#include "src/sched/store_epoch.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "src/keys/kek_ring.h"
#include "tests/fakes/fake_hsm.h"
#include "tests/unit/sched/sched_fakes.h"

namespace kms::sched {
namespace {

using namespace std::chrono_literals;

constexpr auto kPoll = 10s;

class KeyJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::SqliteKeyStore::Open(":memory:");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = std::move(*opened);
    auto ring = keys::HsmKekRing::Create(&hsm_, store_.get(), &clock_);
    ASSERT_TRUE(ring.ok()) << ring.status();
    ring_ = std::move(*ring);
    keys_ = NewKeyManager();
    ASSERT_NE(keys_, nullptr);
    jwt::JwtServiceOptions o;
    o.issuer = "https://iam.example";
    auto made = jwt::JwtService::Create(ring_.get(), store_.get(), store_.get(), &clock_, o);
    ASSERT_TRUE(made.ok()) << made.status();
    jwt_ = std::move(*made);
    ASSERT_TRUE(jwt_->Load().ok());
    epoch_ = std::make_unique<StoreEpochSource>(*store_);
    sink_ = std::make_unique<KeyManagerSink>(*keys_);
    scheduler_ = std::make_unique<Scheduler>(clock_, *epoch_, *sink_, nullptr, leader_,
                                             Scheduler::Options{.poll_interval = kPoll});
  }

  std::unique_ptr<keys::KeyManager> NewKeyManager() {
    auto made = keys::KeyManager::Create(ring_.get(), store_.get(), &clock_, {});
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? std::move(*made) : nullptr;
  }

  void Encrypt(keys::KeyManager& keys, const std::string& tenant) {
    const std::string plaintext = "4111 1111 1111 1111";
    ASSERT_TRUE(keys.Encrypt(keys::TenantId::Parse(tenant).value(), {},
                             {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()})
                    .ok());
  }

  uint64_t StoredEncryptions(const std::string& tenant) {
    auto dek = store_->GetTenantDek(tenant, 0);
    EXPECT_TRUE(dek.ok()) << dek.status();
    return dek.ok() ? dek->dek.encryptions : 0;
  }

  size_t PublishedJwtKeys() { return jwt_->Status().keys.size(); }

  testing::SimulatedClock clock_;
  kms::testing::FakeHsm hsm_;
  kms::testing::FakeLeader leader_;
  std::unique_ptr<store::KeyStore> store_;
  std::unique_ptr<keys::HsmKekRing> ring_;
  std::unique_ptr<keys::KeyManager> keys_;
  std::unique_ptr<jwt::JwtService> jwt_;
  std::unique_ptr<StoreEpochSource> epoch_;
  std::unique_ptr<KeyManagerSink> sink_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(KeyJobsTest, TheUsageFlushJobAddsThisReplicasCountsToTheStoreEveryTenSeconds) {
  ASSERT_TRUE(scheduler_->AddJob(MakeDekUsageFlushJob(*keys_)).ok());
  ASSERT_TRUE(keys_->CreateTenant(keys::TenantId::Parse("acme").value()).ok());
  scheduler_->StartWithoutThread();
  // A count that reached the usage flush's minimum (KeyManagerOptions) goes out at the
  // next run; smaller ones wait for their max age (key_manager_suite.cc).
  const int n = static_cast<int>(keys::KeyManagerOptions{}.usage_flush_min_count);
  for (int i = 0; i < n; ++i) Encrypt(*keys_, "acme");
  scheduler_->RunDue();
  clock_.Advance(kDekUsageFlushInterval - 1s);
  scheduler_->RunDue();
  EXPECT_EQ(StoredEncryptions("acme"), 0u);
  clock_.Advance(1s);
  scheduler_->RunDue();
  EXPECT_EQ(StoredEncryptions("acme"), static_cast<uint64_t>(n));
}

TEST_F(KeyJobsTest, TheJwtJobRotatesADueKeyOnlyOnTheLeader) {
  ASSERT_TRUE(scheduler_->AddJob(MakeJwtTickJob(*jwt_, 30s)).ok());
  scheduler_->StartWithoutThread();
  ASSERT_EQ(PublishedJwtKeys(), 1u);
  leader_.set_available(false);
  clock_.Advance(std::chrono::seconds(jwt_->options().rotation_period_seconds));
  scheduler_->RunDue();
  EXPECT_EQ(scheduler_->Jobs()[0].runs, 1);
  EXPECT_TRUE(scheduler_->Jobs()[0].last_result.ok()) << scheduler_->Jobs()[0].last_result;
  EXPECT_EQ(PublishedJwtKeys(), 1u);  // a follower refreshes but does not rotate

  leader_.set_available(true);
  clock_.Advance(30s);
  scheduler_->RunDue();
  EXPECT_EQ(scheduler_->Jobs()[0].runs, 2);
  EXPECT_EQ(PublishedJwtKeys(), 2u);  // the leader published the next key
}

TEST_F(KeyJobsTest, AnotherReplicasChangeSeenThroughTheStoreEpochRevalidatesTheCache) {
  ASSERT_TRUE(keys_->CreateTenant(keys::TenantId::Parse("acme").value()).ok());
  scheduler_->StartWithoutThread();  // baseline epoch taken here
  Encrypt(*keys_, "acme");
  ASSERT_EQ(keys_->cached_deks(), 1u);

  std::unique_ptr<keys::KeyManager> other = NewKeyManager();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->RotateTenantDek(keys::TenantId::Parse("acme").value()).ok());
  auto encrypting_version = [&] {
    const std::string plaintext = "x";
    auto r = keys_->Encrypt(keys::TenantId::Parse("acme").value(), {},
                            {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()});
    return r.ok() ? r->dek_version : 0u;
  };
  clock_.Advance(kPoll - 1s);
  scheduler_->RunDue();
  EXPECT_EQ(encrypting_version(), 1u);  // not polled yet: the cached DEK
  clock_.Advance(1s);
  scheduler_->RunDue();
  // The flush keeps the entry (marked stale, issue 9) and the next use reloads it.
  EXPECT_EQ(encrypting_version(), 2u);
  EXPECT_GT(scheduler_->last_epoch(), 0);
}

}  // namespace
}  // namespace kms::sched
