// KeyManager against the real parts: a SoftHSM2 token and a SQLite store.
#include "src/keys/key_manager.h"

#include "src/keys/kek_ring.h"
#include "src/keys/wrapped_dek.h"

#include <latch>
#include <thread>

#include "gtest/gtest.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/test_common/simulated_clock.h"
#include "tests/test_common/softhsm_token.h"
#include "tests/test_common/temp_dir.h"

namespace kms::keys {
namespace {

using ::kms::testing::SimulatedClock;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TenantId T(const std::string& id) { return TenantId::Parse(id).value(); }

EncryptionContext Ctx(const std::vector<crypto::ContextPair>& pairs) {
  EncryptionContext ctx;
  for (const auto& [k, v] : pairs) EXPECT_TRUE(ctx.Add(k, v).ok());
  return ctx;
}

class KeyManagerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto token = test::SoftHsmToken::Create("kmsd-keys-test");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = token->release();
  }
  static void TearDownTestSuite() {
    delete token_;
    token_ = nullptr;
  }

  void SetUp() override { Open(); }

  // (Re)opens every part, as a restarted process would.
  void Open(bool auto_create = false, uint64_t budget = uint64_t{1} << 31) {
    keys_.reset();
    ring_.reset();
    hsm_.reset();
    store_.reset();
    sqlite_.reset();
    auto hsm = hsm::Pkcs11Hsm::Open(token_->Options(hsm::MasterKeyKind::kRsa4096));
    ASSERT_TRUE(hsm.ok()) << hsm.status();
    hsm_ = std::move(*hsm);
    auto sqlite = store::SqliteKeyStore::Open(dir_.Join("kmsd.db"));
    ASSERT_TRUE(sqlite.ok()) << sqlite.status();
    sqlite_ = std::move(*sqlite);
    store_ = std::make_unique<testing::InjectingKeyStore>(sqlite_.get());
    auto ring = HsmKekRing::Create(hsm_.get(), store_.get(), &clock_);
    ASSERT_TRUE(ring.ok()) << ring.status();
    ring_ = std::move(*ring);
    auto keys = KeyManager::Create(ring_.get(), store_.get(), &clock_,
                                   KeyManagerOptions{.auto_create_tenants = auto_create,
                                                     .dek_encryption_budget = budget});
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = std::move(*keys);
  }

  std::string Encrypt(const std::string& tenant, const std::string& plaintext,
                      std::vector<crypto::ContextPair> context = {}) {
    auto result = keys_->Encrypt(T(tenant), Ctx(context), Bytes(plaintext));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->ciphertext : "";
  }

  absl::StatusOr<std::string> Decrypt(const std::string& tenant, const std::string& ct,
                                      std::vector<crypto::ContextPair> context = {}) {
    KMS_ASSIGN_OR_RETURN(DecryptResult result, keys_->Decrypt(T(tenant), Ctx(context), Bytes(ct)));
    return result.plaintext;
  }

  static test::SoftHsmToken* token_;
  test::TempDir dir_;
  SimulatedClock clock_;
  std::unique_ptr<hsm::Pkcs11Hsm> hsm_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<testing::InjectingKeyStore> store_;
  std::unique_ptr<HsmKekRing> ring_;
  std::unique_ptr<KeyManager> keys_;
};

test::SoftHsmToken* KeyManagerTest::token_ = nullptr;

TEST_F(KeyManagerTest, FirstStartCreatesKekVersionOneStoredOnlyWrapped) {
  auto keks = sqlite_->ListKeks();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].version, 1u);
  EXPECT_EQ(keys_->primary_kek_version(), 1u);
  // RSA-4096 OAEP output is one modulus long, plus the two header bytes.
  EXPECT_EQ((*keks)[0].wrapped.size(), 2u + 512u);
}

TEST_F(KeyManagerTest, RoundTripsWithAndWithoutContext) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string ct = Encrypt("acme", "alice@example.com");
  EXPECT_EQ(Decrypt("acme", ct).value(), "alice@example.com");
  std::vector<crypto::ContextPair> ctx = {{"table", "users"}, {"column", "email"}};
  std::string ct2 = Encrypt("acme", "bob@example.com", ctx);
  EXPECT_EQ(Decrypt("acme", ct2, ctx).value(), "bob@example.com");
}

TEST_F(KeyManagerTest, CiphertextSurvivesARestart) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string ct = Encrypt("acme", "+1 555 0100");
  Open();
  EXPECT_EQ(Decrypt("acme", ct).value(), "+1 555 0100");
  EXPECT_EQ(keys_->primary_kek_version(), 1u);  // no second KEK on restart
}

TEST_F(KeyManagerTest, AnotherTenantsCiphertextFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  std::string ct = Encrypt("acme", "secret");
  auto r = Decrypt("globex", ct);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_EQ(r.status().message(), "decryption failed");
}

TEST_F(KeyManagerTest, WrongOrMissingContextFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::vector<crypto::ContextPair> ctx = {{"column", "email"}};
  std::string ct = Encrypt("acme", "secret", ctx);
  EXPECT_EQ(Decrypt("acme", ct).status().message(), "decryption failed");
  std::vector<crypto::ContextPair> other = {{"column", "phone"}};
  EXPECT_EQ(Decrypt("acme", ct, other).status().message(), "decryption failed");
}

TEST_F(KeyManagerTest, UnknownDekVersionFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string ct = Encrypt("acme", "secret");
  ct[4] = 9;  // DEK version 9 in the header
  EXPECT_EQ(Decrypt("acme", ct).status().message(), "decryption failed");
}

TEST_F(KeyManagerTest, UnknownTenantIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(keys_->Encrypt(T("nobody"), {}, Bytes("x")).status()));
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string acme_ct = Encrypt("acme", "x");
  EXPECT_TRUE(absl::IsNotFound(Decrypt("nobody", acme_ct).status()));
}

TEST_F(KeyManagerTest, DuplicateTenantIsAlreadyExists) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(keys_->CreateTenant(T("acme")).status()));
}

TEST_F(KeyManagerTest, MalformedTenantIdCannotBeNamed) {
  EXPECT_TRUE(absl::IsInvalidArgument(TenantId::Parse("no spaces").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(TenantId::Parse("../etc").status()));
}

TEST_F(KeyManagerTest, AutoCreateMakesTheTenantOnFirstEncrypt) {
  Open(/*auto_create=*/true);
  std::string ct = Encrypt("newco", "hello");
  EXPECT_EQ(Decrypt("newco", ct).value(), "hello");
  EXPECT_TRUE(sqlite_->GetTenant("newco").ok());
}

TEST_F(KeyManagerTest, BurstOfConcurrentEncryptsForAnUncachedTenantLoadsTheDekOnce) {
  ASSERT_TRUE(keys_->CreateTenant(T("burst")).ok());
  keys_->cache().Clear();
  const uint64_t reads_before = store_->tenant_dek_reads();
  const uint64_t opens_before = hsm_->stats().opens;
  constexpr int kRequests = 1000;
  std::latch start(kRequests);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  threads.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      if (keys_->Encrypt(T("burst"), {}, Bytes("555-0100")).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(store_->tenant_dek_reads() - reads_before, 1u);
  EXPECT_EQ(hsm_->stats().opens - opens_before, 1u);
}

TEST_F(KeyManagerTest, StoreOutageServesCachedTenantsAndFailsFastForOthers) {
  ASSERT_TRUE(keys_->CreateTenant(T("cached")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("cold")).ok());
  std::string ct = Encrypt("cached", "still here");
  keys_->cache().InvalidateTenant("cold");
  store_->SetUnavailable(true);
  EXPECT_EQ(Decrypt("cached", ct).value(), "still here");
  Encrypt("cached", "new write");
  EXPECT_TRUE(absl::IsUnavailable(keys_->Encrypt(T("cold"), {}, Bytes("x")).status()));
  // Past the 1 h TTL the cached DEK is still served while the store is down.
  clock_.Advance(std::chrono::hours(2));
  EXPECT_EQ(Decrypt("cached", ct).value(), "still here");
  store_->SetUnavailable(false);
}

TEST_F(KeyManagerTest, EncryptionCountsReachTheStoreAndABudgetRotatesTheDek) {
  Open(/*auto_create=*/false, /*budget=*/10);
  ASSERT_TRUE(keys_->CreateTenant(T("counted")).ok());
  for (int i = 0; i < 6; ++i) Encrypt("counted", "x");
  ASSERT_EQ(keys_->FlushEncryptionCounts().value(), 0);
  EXPECT_EQ(sqlite_->GetTenantDek("counted", 1)->dek.encryptions, 6u);
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 0);  // nothing new: nothing added
  EXPECT_EQ(sqlite_->GetTenantDek("counted", 1)->dek.encryptions, 6u);

  for (int i = 0; i < 5; ++i) Encrypt("counted", "x");  // 11 > budget of 10
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 1);
  EXPECT_EQ(sqlite_->GetTenant("counted")->primary_dek_version, 2u);
  auto result = keys_->Encrypt(T("counted"), {}, Bytes("y"));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->dek_version, 2u);
}

TEST_F(KeyManagerTest, CountsOfEntriesThatLeftTheCacheAreStillFlushed) {
  ASSERT_TRUE(keys_->CreateTenant(T("evicted")).ok());
  for (int i = 0; i < 3; ++i) Encrypt("evicted", "x");
  keys_->cache().InvalidateTenant("evicted");  // as an epoch change or a bus event would
  for (int i = 0; i < 2; ++i) Encrypt("evicted", "x");
  keys_->cache().Clear();
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(sqlite_->GetTenantDek("evicted", 1)->dek.encryptions, 5u);
}

TEST_F(KeyManagerTest, CountsSurviveAStoreOutageUntilTheNextFlush) {
  ASSERT_TRUE(keys_->CreateTenant(T("outage")).ok());
  for (int i = 0; i < 3; ++i) Encrypt("outage", "x");
  store_->SetUnavailable(true);
  EXPECT_FALSE(keys_->FlushEncryptionCounts().ok());
  store_->SetUnavailable(false);
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(sqlite_->GetTenantDek("outage", 1)->dek.encryptions, 3u);
}

// --- The KEK ring on SoftHSM2

TEST_F(KeyManagerTest, KekRotationMakesANewPrimaryAndOldDeksStillDecrypt) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string before = Encrypt("acme", "alice@example.com");
  auto rotated = ring_->Rotate();
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(*rotated, 2u);
  EXPECT_EQ(keys_->primary_kek_version(), 2u);
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  EXPECT_EQ(sqlite_->GetTenantDek("globex", 1)->dek.kek_version, 2u);
  EXPECT_EQ(sqlite_->GetTenantDek("acme", 1)->dek.kek_version, 1u);  // not moved by itself
  keys_->cache().Clear();
  EXPECT_EQ(Decrypt("acme", before).value(), "alice@example.com");
  auto keks = ring_->List();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 2u);
  EXPECT_FALSE((*keks)[1].mechanism.empty());
  EXPECT_NE((*keks)[1].mechanism, "unknown");
}

TEST_F(KeyManagerTest, RewrapThroughTheHsmMovesADekToTheNewKek) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string before = Encrypt("acme", "alice@example.com");
  ASSERT_TRUE(ring_->Rotate().ok());
  auto row = sqlite_->GetTenantDek("acme", 1);
  ASSERT_TRUE(row.ok());
  auto moved = RewrapDek(*ring_, 2, "acme", 1, row->dek.wrapped);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(WrappedDekKekVersion(*moved).value(), 2u);
  auto dek_old = UnwrapDek(*ring_, "acme", 1, row->dek.wrapped);
  auto dek_new = UnwrapDek(*ring_, "acme", 1, *moved);
  ASSERT_TRUE(dek_old.ok() && dek_new.ok());
  EXPECT_TRUE(dek_old->Equals(*dek_new));
  EXPECT_FALSE(RewrapDek(*ring_, 2, "globex", 1, row->dek.wrapped).ok());
}

TEST_F(KeyManagerTest, ARingSeesAKekAnotherReplicaCreatedOnFirstUseAndOnRefresh) {
  // A second replica on the same token and store.
  auto hsm_b = hsm::Pkcs11Hsm::Open(token_->Options(hsm::MasterKeyKind::kRsa4096));
  ASSERT_TRUE(hsm_b.ok()) << hsm_b.status();
  auto ring_b = HsmKekRing::Create(hsm_b->get(), store_.get(), &clock_);
  ASSERT_TRUE(ring_b.ok());
  ASSERT_TRUE(ring_->Rotate().ok());
  EXPECT_EQ((*ring_b)->primary_version(), 1u);  // not told yet
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());  // sealed under KEK 2 by replica A
  auto row = sqlite_->GetTenantDek("acme", 1);
  ASSERT_TRUE(row.ok());
  EXPECT_TRUE(UnwrapDek(**ring_b, "acme", 1, row->dek.wrapped).ok());  // loads KEK 2
  ASSERT_TRUE((*ring_b)->Refresh().ok());
  EXPECT_EQ((*ring_b)->primary_version(), 2u);
  EXPECT_TRUE(absl::IsDataLoss((*ring_b)->EnsureLoaded(9)));
}

}  // namespace
}  // namespace kms::keys
