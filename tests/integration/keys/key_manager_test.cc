// KeyManager against the real parts: a SoftHSM2 token and a SQLite store.
#include "src/keys/key_manager.h"

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
    auto keys = KeyManager::Create(hsm_.get(), store_.get(), &clock_,
                                   KeyManagerOptions{.auto_create_tenants = auto_create,
                                                     .dek_encryption_budget = budget});
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = std::move(*keys);
  }

  std::string Encrypt(const std::string& tenant, const std::string& plaintext,
                      std::vector<crypto::ContextPair> context = {}) {
    std::string ct;
    uint32_t version = 0;
    absl::Status s = keys_->Encrypt(tenant, context, Bytes(plaintext), &ct, &version);
    EXPECT_TRUE(s.ok()) << s;
    return ct;
  }

  absl::StatusOr<std::string> Decrypt(const std::string& tenant, const std::string& ct,
                                      std::vector<crypto::ContextPair> context = {}) {
    std::string pt;
    uint32_t version = 0;
    KMS_RETURN_IF_ERROR(keys_->Decrypt(tenant, context, Bytes(ct), &pt, &version));
    return pt;
  }

  static test::SoftHsmToken* token_;
  test::TempDir dir_;
  SimulatedClock clock_;
  std::unique_ptr<hsm::Pkcs11Hsm> hsm_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<testing::InjectingKeyStore> store_;
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
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  std::string ct = Encrypt("acme", "alice@example.com");
  EXPECT_EQ(Decrypt("acme", ct).value(), "alice@example.com");
  std::vector<crypto::ContextPair> ctx = {{"table", "users"}, {"column", "email"}};
  std::string ct2 = Encrypt("acme", "bob@example.com", ctx);
  EXPECT_EQ(Decrypt("acme", ct2, ctx).value(), "bob@example.com");
}

TEST_F(KeyManagerTest, CiphertextSurvivesARestart) {
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  std::string ct = Encrypt("acme", "+1 555 0100");
  Open();
  EXPECT_EQ(Decrypt("acme", ct).value(), "+1 555 0100");
  EXPECT_EQ(keys_->primary_kek_version(), 1u);  // no second KEK on restart
}

TEST_F(KeyManagerTest, AnotherTenantsCiphertextFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  ASSERT_TRUE(keys_->CreateTenant("globex").ok());
  std::string ct = Encrypt("acme", "secret");
  auto r = Decrypt("globex", ct);
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_EQ(r.status().message(), "decryption failed");
}

TEST_F(KeyManagerTest, WrongOrMissingContextFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  std::vector<crypto::ContextPair> ctx = {{"column", "email"}};
  std::string ct = Encrypt("acme", "secret", ctx);
  EXPECT_EQ(Decrypt("acme", ct).status().message(), "decryption failed");
  std::vector<crypto::ContextPair> other = {{"column", "phone"}};
  EXPECT_EQ(Decrypt("acme", ct, other).status().message(), "decryption failed");
}

TEST_F(KeyManagerTest, UnknownDekVersionFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  std::string ct = Encrypt("acme", "secret");
  ct[4] = 9;  // DEK version 9 in the header
  EXPECT_EQ(Decrypt("acme", ct).status().message(), "decryption failed");
}

TEST_F(KeyManagerTest, UnknownTenantIsNotFound) {
  std::string ct;
  uint32_t v;
  EXPECT_TRUE(absl::IsNotFound(keys_->Encrypt("nobody", {}, Bytes("x"), &ct, &v)));
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  std::string acme_ct = Encrypt("acme", "x");
  EXPECT_TRUE(absl::IsNotFound(Decrypt("nobody", acme_ct).status()));
}

TEST_F(KeyManagerTest, DuplicateTenantIsAlreadyExists) {
  ASSERT_TRUE(keys_->CreateTenant("acme").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(keys_->CreateTenant("acme").status()));
}

TEST_F(KeyManagerTest, MalformedTenantIdIsInvalidArgument) {
  EXPECT_TRUE(absl::IsInvalidArgument(keys_->CreateTenant("no spaces").status()));
  std::string ct;
  uint32_t v;
  EXPECT_TRUE(absl::IsInvalidArgument(keys_->Encrypt("../etc", {}, Bytes("x"), &ct, &v)));
}

TEST_F(KeyManagerTest, AutoCreateMakesTheTenantOnFirstEncrypt) {
  Open(/*auto_create=*/true);
  std::string ct = Encrypt("newco", "hello");
  EXPECT_EQ(Decrypt("newco", ct).value(), "hello");
  EXPECT_TRUE(sqlite_->GetTenant("newco").ok());
}

TEST_F(KeyManagerTest, BurstOfConcurrentEncryptsForAnUncachedTenantLoadsTheDekOnce) {
  ASSERT_TRUE(keys_->CreateTenant("burst").ok());
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
      std::string ct;
      uint32_t v;
      if (keys_->Encrypt("burst", {}, Bytes("555-0100"), &ct, &v).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(store_->tenant_dek_reads() - reads_before, 1u);
  EXPECT_EQ(hsm_->stats().opens - opens_before, 1u);
}

TEST_F(KeyManagerTest, StoreOutageServesCachedTenantsAndFailsFastForOthers) {
  ASSERT_TRUE(keys_->CreateTenant("cached").ok());
  ASSERT_TRUE(keys_->CreateTenant("cold").ok());
  std::string ct = Encrypt("cached", "still here");
  keys_->cache().InvalidateTenant("cold");
  store_->SetUnavailable(true);
  EXPECT_EQ(Decrypt("cached", ct).value(), "still here");
  Encrypt("cached", "new write");
  std::string out;
  uint32_t v;
  EXPECT_TRUE(absl::IsUnavailable(keys_->Encrypt("cold", {}, Bytes("x"), &out, &v)));
  // Past the 1 h TTL the cached DEK is still served while the store is down.
  clock_.Advance(std::chrono::hours(2));
  EXPECT_EQ(Decrypt("cached", ct).value(), "still here");
  store_->SetUnavailable(false);
}

TEST_F(KeyManagerTest, EncryptionCountsReachTheStoreAndABudgetRotatesTheDek) {
  Open(/*auto_create=*/false, /*budget=*/10);
  ASSERT_TRUE(keys_->CreateTenant("counted").ok());
  for (int i = 0; i < 6; ++i) Encrypt("counted", "x");
  ASSERT_EQ(keys_->FlushEncryptionCounts().value(), 0);
  EXPECT_EQ(sqlite_->GetTenantDek("counted", 1)->dek.encryptions, 6u);
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 0);  // nothing new: nothing added
  EXPECT_EQ(sqlite_->GetTenantDek("counted", 1)->dek.encryptions, 6u);

  for (int i = 0; i < 5; ++i) Encrypt("counted", "x");  // 11 > budget of 10
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 1);
  EXPECT_EQ(sqlite_->GetTenant("counted")->primary_dek_version, 2u);
  std::string ct;
  uint32_t version = 0;
  ASSERT_TRUE(keys_->Encrypt("counted", {}, Bytes("y"), &ct, &version).ok());
  EXPECT_EQ(version, 2u);
}

TEST_F(KeyManagerTest, CountsOfEntriesThatLeftTheCacheAreStillFlushed) {
  ASSERT_TRUE(keys_->CreateTenant("evicted").ok());
  for (int i = 0; i < 3; ++i) Encrypt("evicted", "x");
  keys_->cache().InvalidateTenant("evicted");  // as an epoch change or a bus event would
  for (int i = 0; i < 2; ++i) Encrypt("evicted", "x");
  keys_->cache().Clear();
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(sqlite_->GetTenantDek("evicted", 1)->dek.encryptions, 5u);
}

TEST_F(KeyManagerTest, CountsSurviveAStoreOutageUntilTheNextFlush) {
  ASSERT_TRUE(keys_->CreateTenant("outage").ok());
  for (int i = 0; i < 3; ++i) Encrypt("outage", "x");
  store_->SetUnavailable(true);
  EXPECT_FALSE(keys_->FlushEncryptionCounts().ok());
  store_->SetUnavailable(false);
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(sqlite_->GetTenantDek("outage", 1)->dek.encryptions, 3u);
}

}  // namespace
}  // namespace kms::keys
