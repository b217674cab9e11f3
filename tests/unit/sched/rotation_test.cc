// Scheduled rotation, the KEK re-wrap job and KEK retirement (src/sched/rotation.h), on a
// simulated clock against a real KeyManager, JwtService and HsmKekRing over a FakeHsm and
// a real store wrapped by InjectingKeyStore for outages: SQLite in memory (unit), or,
// built with KMS_ROTATION_TEST_POSTGRES, PostgreSQL in a schema of each test's own
// (tests/integration/sched, on the test runner's server).
#include "src/sched/rotation.h"

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "src/keys/kek_ring.h"
#include "src/keys/wrapped_dek.h"
#include "src/sched/key_jobs.h"
#include "src/sched/scheduler.h"
#include "src/sched/store_epoch.h"
#include "src/store/sqlite/sqlite_key_store.h"
#ifdef KMS_ROTATION_TEST_POSTGRES
#include "src/store/postgres/postgres_key_store.h"
#endif
#include "tests/fakes/fake_hsm.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/unit/sched/sched_fakes.h"

namespace kms::sched {
namespace {

using namespace std::chrono_literals;
using store::RotationJobRecord;
using store::RotationJobState;

constexpr int64_t kKekPeriod = 10 * 86400;
constexpr int64_t kDekPeriod = 5 * 86400;

class RotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifdef KMS_ROTATION_TEST_POSTGRES
    const char* conninfo = std::getenv("KMS_TEST_PG_CONNINFO");
    const char* password_file = std::getenv("KMS_TEST_PG_PASSWORD_FILE");
    ASSERT_TRUE(conninfo != nullptr && password_file != nullptr)
        << "KMS_TEST_PG_CONNINFO / KMS_TEST_PG_PASSWORD_FILE are not set: run through tools/test.sh";
    std::mt19937_64 rng(std::random_device{}());
    auto opened = store::PostgresKeyStore::Open(store::PostgresOptions{
        .conninfo = conninfo,
        .password_file = password_file,
        .schema = absl::StrCat("rotation_test_", rng() % 1000000000)});
#else
    auto opened = store::SqliteKeyStore::Open(":memory:");
#endif
    ASSERT_TRUE(opened.ok()) << opened.status();
    real_ = std::move(*opened);
    store_ = std::make_unique<testing::InjectingKeyStore>(real_.get());
    auto ring = keys::HsmKekRing::Create(&hsm_, store_.get(), &clock_);
    ASSERT_TRUE(ring.ok()) << ring.status();
    ring_ = std::move(*ring);
    keys::KeyManagerOptions ko;
    ko.dek_encryption_budget = 3;
    auto keys = keys::KeyManager::Create(ring_.get(), store_.get(), &clock_, ko);
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = std::move(*keys);
    jwt::JwtServiceOptions jo;
    jo.issuer = "https://iam.example";
    auto made = jwt::JwtService::Create(ring_.get(), store_.get(), store_.get(), &clock_, jo);
    ASSERT_TRUE(made.ok()) << made.status();
    jwt_ = std::move(*made);
    ASSERT_TRUE(jwt_->Load().ok());
    options_.kek_period_seconds = kKekPeriod;
    options_.dek_period_seconds = kDekPeriod;
    options_.rewrap_rate_per_second = 0;
    options_.retire_grace = 0s;
    rotation_ = NewService();
  }

  std::unique_ptr<RotationService> NewService() {
    std::vector<std::unique_ptr<RewrapTarget>> targets;
    targets.push_back(std::make_unique<DekRewrapTarget>(ring_.get(), store_.get(), store_.get(), 2));
    targets.push_back(std::make_unique<JwtRewrapTarget>(jwt_.get(), store_.get()));
    auto s = std::make_unique<RotationService>(clock_, *store_, *ring_, *keys_, jwt_.get(),
                                               std::move(targets), options_);
    s->SetOnJobCreated([this] { ++jobs_created_; });
    return s;
  }

  void CreateTenants(int n, const std::string& prefix = "t") {
    for (int i = 0; i < n; ++i) {
      auto id = keys::TenantId::Parse(absl::StrCat(prefix, 1000 + i));
      ASSERT_TRUE(id.ok());
      ASSERT_TRUE(keys_->CreateTenant(*id).ok());
    }
  }

  uint32_t PrimaryDek(const std::string& tenant) {
    auto t = real_->GetTenant(tenant);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? t->primary_dek_version : 0;
  }

  // KEK version -> DEKs + JWT keys wrapped under it.
  std::map<uint32_t, uint64_t> Usage() {
    std::map<uint32_t, uint64_t> out;
    auto usage = real_->ListKekUsage();
    EXPECT_TRUE(usage.ok());
    if (usage.ok()) {
      for (const auto& u : *usage) out[u.kek_version] = u.deks + u.jwt_keys;
    }
    return out;
  }

  store::KekState KekState(uint32_t version) {
    auto keks = real_->ListKeks();
    EXPECT_TRUE(keks.ok());
    for (const auto& k : *keks) {
      if (k.version == version) return k.state;
    }
    ADD_FAILURE() << "no KEK version " << version;
    return store::KekState::kActive;
  }

  RotationJobRecord Job(int64_t id = 0) {
    auto job = rotation_->GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : RotationJobRecord{};
  }

  RotationKindStatus Kind(const std::string& kind) {
    for (const auto& k : rotation_->Status().kinds) {
      if (k.kind == kind) return k;
    }
    ADD_FAILURE() << kind;
    return {};
  }

  std::string Encrypt(const std::string& tenant, const std::string& plaintext) {
    auto r = keys_->Encrypt(keys::TenantId::Parse(tenant).value(), {},
                            {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->ciphertext : "";
  }

  testing::SimulatedClock clock_;
  testing::FakeHsm hsm_;
  std::unique_ptr<store::KeyStore> real_;
  std::unique_ptr<testing::InjectingKeyStore> store_;
  std::unique_ptr<keys::HsmKekRing> ring_;
  std::unique_ptr<keys::KeyManager> keys_;
  std::unique_ptr<jwt::JwtService> jwt_;
  RotationOptions options_;
  std::unique_ptr<RotationService> rotation_;
  int jobs_created_ = 0;
};

// --- Scheduler decisions

TEST_F(RotationTest, NothingRotatesBeforeThePeriod) {
  CreateTenants(3);
  clock_.Advance(std::chrono::seconds(kDekPeriod - 1));
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(ring_->primary_version(), 1u);
  EXPECT_EQ(PrimaryDek("t1000"), 1u);
  EXPECT_EQ(jobs_created_, 0);
  EXPECT_EQ(rotation_->GetJob(0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Kind("kek").due_in_seconds, kKekPeriod - (kDekPeriod - 1));
  EXPECT_TRUE(Kind("kek").known);
  EXPECT_EQ(Kind("dek").pending, 0u);
  EXPECT_TRUE(Kind("jwt").known);
  EXPECT_GT(Kind("jwt").due_in_seconds, 0);
}

TEST_F(RotationTest, EachTenantsDekRotatesOnceItIsOlderThanThePeriod) {
  CreateTenants(3);
  clock_.Advance(std::chrono::seconds(kDekPeriod));
  ASSERT_TRUE(rotation_->Check().ok());
  for (const char* t : {"t1000", "t1001", "t1002"}) EXPECT_EQ(PrimaryDek(t), 2u) << t;
  EXPECT_EQ(Kind("dek").pending, 3u);
  EXPECT_EQ(ring_->primary_version(), 1u);  // the KEK's period is longer
  // The new DEKs are young: the next check rotates nothing.
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(PrimaryDek("t1000"), 2u);
  EXPECT_EQ(Kind("dek").pending, 0u);
}

TEST_F(RotationTest, ATenantsOwnPeriodWinsOverTheDefault) {
  CreateTenants(2);
  ASSERT_TRUE(store_->SetTenantRotationPeriod("t1001", 3600).ok());
  clock_.Advance(3600s);
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(PrimaryDek("t1000"), 1u);
  EXPECT_EQ(PrimaryDek("t1001"), 2u);
}

TEST_F(RotationTest, DueTenantsAreSpreadOverChecksInIdOrderResumingWhereTheLastStopped) {
  options_.dek_rotations_per_check = 4;
  rotation_ = NewService();
  CreateTenants(10);
  clock_.Advance(std::chrono::seconds(kDekPeriod));
  auto rotated = [&] {
    int n = 0;
    for (int i = 0; i < 10; ++i) n += PrimaryDek(absl::StrCat("t", 1000 + i)) == 2 ? 1 : 0;
    return n;
  };
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(rotated(), 4);
  EXPECT_EQ(PrimaryDek("t1003"), 2u);
  EXPECT_EQ(PrimaryDek("t1004"), 1u);
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(rotated(), 8);
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(rotated(), 10);
}

TEST_F(RotationTest, ADekPastItsEncryptionBudgetRotatesAtTheUsageFlushBeforeItsPeriod) {
  CreateTenants(1);
  for (int i = 0; i < 4; ++i) Encrypt("t1000", "x");  // budget 3
  auto flushed = keys_->FlushEncryptionCounts();
  ASSERT_TRUE(flushed.ok()) << flushed.status();
  EXPECT_EQ(*flushed, 1);
  EXPECT_EQ(PrimaryDek("t1000"), 2u);
}

TEST_F(RotationTest, TheKekRotatesAfterItsPeriodAndARewrapJobStarts) {
  CreateTenants(5);
  clock_.Advance(std::chrono::seconds(kKekPeriod));
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(ring_->primary_version(), 2u);
  EXPECT_EQ(jobs_created_, 1);
  RotationJobRecord job = Job();
  EXPECT_EQ(job.state, RotationJobState::kRunning);
  EXPECT_EQ(job.from_kek_version, 1u);
  EXPECT_EQ(job.to_kek_version, 2u);
  EXPECT_EQ(job.progress.total, 5u + 1u);  // 5 DEKs (rotated DEKs are new, under KEK 2) + 1 JWT key
  EXPECT_EQ(Kind("kek").due_in_seconds, kKekPeriod);
}

TEST_F(RotationTest, WhileTheStoreIsDownTheCheckSkipsAndReportsTheRotationOverdue) {
  CreateTenants(2);
  clock_.Advance(std::chrono::seconds(kKekPeriod - 10));
  ASSERT_TRUE(rotation_->Check().ok());
  store_->SetUnavailable(true);
  clock_.Advance(20s);
  absl::Status st = rotation_->Check();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_EQ(ring_->primary_version(), 1u);
  RotationKindStatus kek = Kind("kek");
  EXPECT_EQ(kek.due_in_seconds, -10);  // overdue, from the last known primary
  EXPECT_EQ(kek.skipped_since_unix, clock_.UnixSeconds());
  EXPECT_NE(kek.last_error.find("key store"), std::string::npos) << kek.last_error;
  clock_.Advance(100s);
  EXPECT_FALSE(rotation_->Check().ok());
  EXPECT_EQ(Kind("kek").due_in_seconds, -110);
  EXPECT_EQ(Kind("kek").skipped_since_unix, clock_.UnixSeconds() - 100);

  store_->SetUnavailable(false);
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(ring_->primary_version(), 2u);
  EXPECT_EQ(Kind("kek").skipped_since_unix, 0);
}

TEST_F(RotationTest, WhileTheHsmIsDownNothingRotatesAndRotateKekIsRefused) {
  CreateTenants(1);
  clock_.Advance(std::chrono::seconds(kKekPeriod));
  hsm_.SetUnavailable(true);
  EXPECT_EQ(rotation_->Check().code(), absl::StatusCode::kUnavailable);
  auto manual = rotation_->StartKekRotation();
  EXPECT_EQ(manual.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(manual.status().message().find("HSM"), std::string::npos);
  EXPECT_EQ(PrimaryDek("t1000"), 1u);
  EXPECT_EQ(jobs_created_, 0);
  hsm_.SetUnavailable(false);
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(ring_->primary_version(), 2u);
}

TEST_F(RotationTest, TheChecksRunOnlyOnTheLeaderThroughTheScheduler) {
  testing::FakeEpochSource epoch;
  testing::RecordingSink sink;
  testing::FakeLeader leader;
  leader.set_available(false);
  Scheduler scheduler(clock_, epoch, sink, nullptr, leader, Scheduler::Options{});
  ASSERT_TRUE(scheduler.AddJob(MakeRotationCheckJob(*rotation_)).ok());
  ASSERT_TRUE(scheduler.AddJob(MakeKekRewrapJob(*rotation_)).ok());
  scheduler.StartWithoutThread();
  CreateTenants(2);
  clock_.Advance(std::chrono::seconds(kKekPeriod));
  scheduler.RunDue();
  EXPECT_EQ(ring_->primary_version(), 1u);  // a follower holds the job
  leader.set_available(true);
  clock_.Advance(3s);  // the next leadership check
  scheduler.RunDue();
  EXPECT_EQ(ring_->primary_version(), 2u);
  clock_.Advance(2s);
  scheduler.RunDue();  // the re-wrap job
  EXPECT_EQ(Job().state, RotationJobState::kDone);
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
  scheduler.Stop();
}

// --- The re-wrap job

TEST_F(RotationTest, RotateKekRewrapsEveryKeyOnceRetiresTheOldKekAndUnloadsIt) {
  CreateTenants(25);
  std::map<std::string, std::string> corpus;
  for (int i = 0; i < 25; i += 5) {
    const std::string t = absl::StrCat("t", 1000 + i);
    corpus[t] = Encrypt(t, "secret " + t);
  }
  auto started = rotation_->StartKekRotation();
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(jobs_created_, 1);
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  RotationJobRecord job = Job(started->id);
  EXPECT_EQ(job.state, RotationJobState::kDone) << job.error;
  EXPECT_EQ(job.progress.done, 26u);  // 25 DEKs + 1 JWT key, each exactly once
  EXPECT_EQ(job.progress.skipped, 0u);
  EXPECT_EQ(Usage()[1], 0u);
  EXPECT_EQ(Usage()[2], 26u);
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
  EXPECT_FALSE(hsm_.HasKek(1));  // its session object is gone

  // Every ciphertext made before still decrypts, through freshly loaded DEKs.
  keys_->ApplyInvalidation(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kAll});
  for (const auto& [tenant, ct] : corpus) {
    auto pt = keys_->Decrypt(keys::TenantId::Parse(tenant).value(), {},
                             {reinterpret_cast<const uint8_t*>(ct.data()), ct.size()});
    ASSERT_TRUE(pt.ok()) << pt.status();
    EXPECT_EQ(pt->plaintext, "secret " + tenant);
  }
  // The JWT key was re-sealed: a service loading from the store signs.
  jwt::JwtServiceOptions jo;
  jo.issuer = "https://iam.example";
  auto fresh = jwt::JwtService::Create(ring_.get(), store_.get(), store_.get(), &clock_, jo);
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE((*fresh)->Load().ok());
}

TEST_F(RotationTest, AnotherReplicaUnloadsTheRetiredKekWhenItRereadsItsKeks) {
  testing::FakeHsm other_hsm;  // another replica's session objects
  auto other = keys::HsmKekRing::Create(&other_hsm, store_.get(), &clock_);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(other_hsm.HasKek(1));
  CreateTenants(2);
  ASSERT_TRUE(rotation_->StartKekRotation().ok());
  ASSERT_TRUE((*other)->Refresh().ok());  // sees KEK 2 (the epoch poll or the bus)
  EXPECT_TRUE(other_hsm.HasKek(2));
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  ASSERT_EQ(KekState(1), store::KekState::kRetired);
  EXPECT_TRUE(other_hsm.HasKek(1));
  ASSERT_TRUE((*other)->Refresh().ok());  // the retirement moved the epoch
  EXPECT_FALSE(other_hsm.HasKek(1));
  EXPECT_TRUE(other_hsm.HasKek(2));
}

TEST_F(RotationTest, TwoRotationsAtOnceAreRefusedWhileTheRewrapRuns) {
  CreateTenants(3);
  auto first = rotation_->StartKekRotation();
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = rotation_->StartKekRotation();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted);
  EXPECT_NE(second.status().message().find(absl::StrCat("job ", first->id)), std::string::npos);
  EXPECT_EQ(ring_->primary_version(), 2u);  // nothing changed
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  auto third = rotation_->StartKekRotation();
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->to_kek_version, 3u);
  EXPECT_EQ(Job().id, third->id);  // the newest
}

TEST_F(RotationTest, TheJobResumesFromItsCheckpointAfterARestart) {
  options_.rewrap_batch_size = 4;
  options_.rewrap_max_batches_per_run = 2;
  rotation_ = NewService();
  CreateTenants(20);
  auto started = rotation_->StartKekRotation();
  ASSERT_TRUE(started.ok());
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  RotationJobRecord job = Job(started->id);
  EXPECT_EQ(job.state, RotationJobState::kRunning);
  EXPECT_EQ(job.progress.done, 8u);
  EXPECT_EQ(job.progress.phase, "deks");
  EXPECT_EQ(job.progress.cursor_key, "1:t1007");
  EXPECT_EQ(Usage()[1], 12u + 1u);

  // "Restart": a new service (another replica or process) picks the job up from the store.
  rotation_ = NewService();
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  EXPECT_EQ(Job(started->id).progress.done, 16u);
  rotation_ = NewService();
  for (int i = 0; i < 5 && Job(started->id).state == RotationJobState::kRunning; ++i) {
    ASSERT_TRUE(rotation_->RunRewrap().ok());
  }
  job = Job(started->id);
  EXPECT_EQ(job.state, RotationJobState::kDone);
  EXPECT_EQ(job.progress.done, 21u);  // every key once: no batch was redone
  EXPECT_EQ(Usage()[1], 0u);
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
}

TEST_F(RotationTest, ATenantRotatedOrShreddedDuringTheJobIsSkippedSafely) {
  options_.rewrap_batch_size = 3;
  options_.rewrap_max_batches_per_run = 1;
  rotation_ = NewService();
  CreateTenants(9);
  const std::string before = Encrypt("t1005", "kept");
  auto started = rotation_->StartKekRotation();
  ASSERT_TRUE(started.ok());
  ASSERT_TRUE(rotation_->RunRewrap().ok());  // t1000..t1002 done
  // Meanwhile: t1005 rotates (its new DEK under KEK 2; version 1 stays under KEK 1 for
  // the job), t1007 is shredded (its blob destroyed).
  ASSERT_TRUE(keys_->RotateTenantDek(keys::TenantId::Parse("t1005").value()).ok());
  ASSERT_TRUE(keys_->ShredTenant(keys::TenantId::Parse("t1007").value()).ok());
  for (int i = 0; i < 10 && Job(started->id).state == RotationJobState::kRunning; ++i) {
    ASSERT_TRUE(rotation_->RunRewrap().ok());
  }
  RotationJobRecord job = Job(started->id);
  EXPECT_EQ(job.state, RotationJobState::kDone) << job.error;
  EXPECT_EQ(job.progress.done, 8u + 1u);  // 9 tenants - 1 shredded, + the JWT key
  EXPECT_EQ(Usage()[1], 0u);
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
  keys_->ApplyInvalidation(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kAll});
  auto pt = keys_->Decrypt(keys::TenantId::Parse("t1005").value(), {},
                           {reinterpret_cast<const uint8_t*>(before.data()), before.size()});
  ASSERT_TRUE(pt.ok()) << pt.status();
  EXPECT_EQ(pt->plaintext, "kept");
}

TEST_F(RotationTest, AFinalPassCatchesAKeyWrittenUnderTheOldKekBehindTheCursor) {
  options_.rewrap_batch_size = 2;
  options_.rewrap_max_batches_per_run = 1;
  rotation_ = NewService();
  CreateTenants(4);
  auto started = rotation_->StartKekRotation();
  ASSERT_TRUE(started.ok());
  ASSERT_TRUE(rotation_->RunRewrap().ok());  // t1000, t1001 done; cursor after t1001
  // A replica that had not seen the rotation creates tenant "a0" under KEK 1: before
  // the cursor, so the first pass never lists it.
  auto dek = crypto::RandomSecret(keys::kDekSize);
  ASSERT_TRUE(dek.ok());
  auto wrapped = keys::WrapDek(*ring_, 1, "a0", 1, *dek);
  ASSERT_TRUE(wrapped.ok());
  store::TenantRecord t{.id = "a0", .primary_dek_version = 1, .created_at = clock_.UnixSeconds()};
  ASSERT_TRUE(store_
                  ->CreateTenant(t, store::DekRecord{.tenant_id = "a0",
                                                     .version = 1,
                                                     .kek_version = 1,
                                                     .wrapped = *wrapped,
                                                     .created_at = clock_.UnixSeconds()})
                  .ok());
  for (int i = 0; i < 10 && Job(started->id).state == RotationJobState::kRunning; ++i) {
    ASSERT_TRUE(rotation_->RunRewrap().ok());
  }
  RotationJobRecord job = Job(started->id);
  EXPECT_EQ(job.state, RotationJobState::kDone) << job.error;
  EXPECT_EQ(job.progress.done, 6u);  // 4 + a0 + the JWT key
  EXPECT_EQ(Usage()[1], 0u);
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
}

TEST_F(RotationTest, AKeyThatDoesNotOpenFailsTheJobAndKeepsTheOldKekNamingTheCount) {
  CreateTenants(3);
  // A damaged blob under KEK 1 (another tenant's blob: its AAD does not match).
  auto other = real_->GetTenantDek("t1000", 1);
  ASSERT_TRUE(other.ok());
  store::TenantRecord t{.id = "bad", .primary_dek_version = 1, .created_at = clock_.UnixSeconds()};
  ASSERT_TRUE(store_
                  ->CreateTenant(t, store::DekRecord{.tenant_id = "bad",
                                                     .version = 1,
                                                     .kek_version = 1,
                                                     .wrapped = other->dek.wrapped,
                                                     .created_at = clock_.UnixSeconds()})
                  .ok());
  auto started = rotation_->StartKekRotation();
  ASSERT_TRUE(started.ok());
  for (int i = 0; i < 5 && Job(started->id).state == RotationJobState::kRunning; ++i) {
    ASSERT_TRUE(rotation_->RunRewrap().ok());
  }
  RotationJobRecord job = Job(started->id);
  EXPECT_EQ(job.state, RotationJobState::kFailed);
  EXPECT_NE(job.error.find("1 keys under KEK versions below 2"), std::string::npos) << job.error;
  EXPECT_EQ(KekState(1), store::KekState::kActive);
  absl::Status retire = store_->RetireKek(1, clock_.UnixSeconds());
  EXPECT_EQ(retire.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(retire.message().find("1 DEKs"), std::string::npos) << retire;
}

TEST_F(RotationTest, TheJobPausesWhileTheStoreIsDownAndGoesOnAfter) {
  CreateTenants(4);
  auto started = rotation_->StartKekRotation();
  ASSERT_TRUE(started.ok());
  store_->SetUnavailable(true);
  EXPECT_EQ(rotation_->RunRewrap().code(), absl::StatusCode::kUnavailable);
  store_->SetUnavailable(false);
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  EXPECT_EQ(Job(started->id).state, RotationJobState::kDone);
}

TEST_F(RotationTest, RetiredKekBlobsAreDestroyedAfterTheKeepPeriod) {
  options_.kek_period_seconds = 100 * 86400;
  rotation_ = NewService();
  CreateTenants(2);
  ASSERT_TRUE(rotation_->StartKekRotation().ok());
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
  clock_.Advance(std::chrono::hours(24 * options_.retired_kek_keep_days - 1));
  ASSERT_TRUE(rotation_->Check().ok());
  EXPECT_EQ(real_->ListKeks()->size(), 2u);
  clock_.Advance(2h);
  ASSERT_TRUE(rotation_->Check().ok());
  auto keks = real_->ListKeks();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].version, 2u);
}

TEST_F(RotationTest, RetirementWaitsForTheGraceAfterTheNewKek) {
  options_.retire_grace = 60s;
  rotation_ = NewService();
  CreateTenants(2);
  ASSERT_TRUE(rotation_->StartKekRotation().ok());
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  EXPECT_EQ(Job().state, RotationJobState::kDone);
  EXPECT_EQ(KekState(1), store::KekState::kActive);  // another replica may not know KEK 2 yet
  clock_.Advance(60s);
  ASSERT_TRUE(rotation_->RunRewrap().ok());  // the job just finished: retire at the next run
  EXPECT_EQ(KekState(1), store::KekState::kRetired);
}

TEST_F(RotationTest, AThrottledJobSleepsToKeepItsRate) {
  std::vector<std::chrono::milliseconds> slept;
  options_.rewrap_rate_per_second = 100;
  options_.rewrap_batch_size = 10;
  options_.sleep = [&](std::chrono::milliseconds d) { slept.push_back(d); };
  rotation_ = NewService();
  CreateTenants(30);
  ASSERT_TRUE(rotation_->StartKekRotation().ok());
  ASSERT_TRUE(rotation_->RunRewrap().ok());
  ASSERT_GE(slept.size(), 3u);
  EXPECT_EQ(slept[0], 100ms);  // 10 keys at 100/s
}

}  // namespace
}  // namespace kms::sched
