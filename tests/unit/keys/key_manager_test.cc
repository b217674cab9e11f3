// KeyManager on fakes: FakeKekRing (over FakeHsm) and a real SQLite ":memory:" store
// behind InjectingKeyStore. The KeyManager suite (key_manager_suite.h) runs here on
// these fakes; below it, what only fakes and mocks can show: the calls KeyManager makes
// to the KEK ring, and an HSM outage.
#include "src/keys/key_manager.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/fake_kek_ring.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/mocks/mock_kek_ring.h"
#include "tests/unit/keys/key_manager_suite.h"

namespace kms::keys {
namespace {

using ::absl::StatusCode;
using ::kms::testing::FakeKekRing;
using ::kms::testing::InjectingKeyStore;
using ::kms::testing::MockKekRing;
using ::testing::_;
using ::testing::AnyNumber;
using ::testing::Mock;
using ::testing::Return;
using ::testing::StrictMock;
using Kind = coord::InvalidationEvent::Kind;
using suite::Bytes;
using suite::KeyManagerSuiteTest;
using suite::T;

// --- The suite on fakes

class FakeRig final : public suite::KeyManagerRig {
 public:
  static absl::StatusOr<std::unique_ptr<suite::KeyManagerRig>> Make(const Clock*) {
    auto rig = std::unique_ptr<FakeRig>(new FakeRig());
    KMS_ASSIGN_OR_RETURN(rig->sqlite_, store::SqliteKeyStore::Open(":memory:"));
    rig->store_ = std::make_unique<InjectingKeyStore>(rig->sqlite_.get());
    KMS_RETURN_IF_ERROR(rig->ring_->CreateKek(1));
    return std::unique_ptr<suite::KeyManagerRig>(std::move(rig));
  }

  KekRing& ring() override { return *ring_; }
  InjectingKeyStore& store() override { return *store_; }
  store::KeyStore& raw_store() override { return *sqlite_; }
  absl::StatusOr<uint32_t> RotateKek() override {
    const uint32_t next = table_->MaxVersion() + 1;
    KMS_RETURN_IF_ERROR(ring_->CreateKek(next));
    return next;
  }
  absl::StatusOr<uint32_t> RotateKekOnAnotherReplica() override {
    FakeKekRing other(table_);
    const uint32_t next = table_->MaxVersion() + 1;
    KMS_RETURN_IF_ERROR(other.CreateKek(next));
    return next;
  }
  uint64_t hsm_opens() const override { return ring_->hsm().opens(); }
  // The KEK table and the in-memory database stay; the ring and its HSM are new.
  absl::Status Restart() override {
    ring_ = std::make_unique<FakeKekRing>(table_);
    return ring_->Refresh();
  }

 private:
  FakeRig() = default;

  std::shared_ptr<FakeKekRing::Table> table_ = std::make_shared<FakeKekRing::Table>();
  std::unique_ptr<FakeKekRing> ring_ = std::make_unique<FakeKekRing>(table_);
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<InjectingKeyStore> store_;
};

INSTANTIATE_TEST_SUITE_P(Fakes, KeyManagerSuiteTest,
                         ::testing::Values(suite::KeyManagerRigMaker{"fakes", &FakeRig::Make}),
                         suite::KeyManagerRigName);

// --- What only fakes and mocks show

class KeyManagerOnFakesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sqlite = store::SqliteKeyStore::Open(":memory:");
    ASSERT_TRUE(sqlite.ok()) << sqlite.status();
    sqlite_ = std::move(*sqlite);
    store_ = std::make_unique<InjectingKeyStore>(sqlite_.get());
    ASSERT_TRUE(fake_ring_.CreateKek(1).ok());
    ring_.DelegateTo(&fake_ring_);
  }

  // A KeyManager on the mocked ring, which forwards every call to the fake ring; each
  // test states which calls it allows.
  std::unique_ptr<KeyManager> Keys() {
    EXPECT_CALL(ring_, primary_version()).Times(AnyNumber());
    auto keys = KeyManager::Create(&ring_, store_.get(), &clock_, KeyManagerOptions{});
    EXPECT_TRUE(keys.ok()) << keys.status();
    Mock::VerifyAndClearExpectations(&ring_);
    return keys.ok() ? std::move(*keys) : nullptr;
  }

  // Creates `tenant` and encrypts for it once, so its DEK is cached; allows the ring
  // calls that takes (one Seal, one Open), then allows none.
  void CreateAndCache(KeyManager& keys, const std::string& tenant) {
    EXPECT_CALL(ring_, primary_version()).Times(AnyNumber());
    EXPECT_CALL(ring_, Seal(1, _, _)).Times(1);
    EXPECT_CALL(ring_, Open(1, _, _)).Times(1);
    ASSERT_TRUE(keys.CreateTenant(T(tenant)).ok());
    ASSERT_TRUE(keys.Encrypt(T(tenant), {}, Bytes("warm up")).ok());
    ASSERT_TRUE(Mock::VerifyAndClearExpectations(&ring_));
  }

  testing::SimulatedClock clock_;
  FakeKekRing fake_ring_;
  StrictMock<MockKekRing> ring_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<InjectingKeyStore> store_;
};

TEST_F(KeyManagerOnFakesTest, CreateRefusesARingThatIsNotLoaded) {
  FakeKekRing empty;  // no KEK: primary version 0
  auto keys = KeyManager::Create(&empty, store_.get(), &clock_, KeyManagerOptions{});
  EXPECT_EQ(keys.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(KeyManagerOnFakesTest, ANewTenantsDekIsSealedUnderTheRingsPrimaryVersion) {
  ASSERT_TRUE(fake_ring_.CreateKek(2).ok());
  ASSERT_TRUE(fake_ring_.CreateKek(3).ok());
  fake_ring_.set_primary(2);  // the primary is the ring's word, not the newest version
  auto keys = Keys();
  ASSERT_NE(keys, nullptr);
  EXPECT_CALL(ring_, primary_version()).Times(AnyNumber());
  EXPECT_CALL(ring_, Seal(2, _, _)).Times(1);
  ASSERT_TRUE(keys->CreateTenant(T("acme")).ok());
  EXPECT_EQ(sqlite_->GetTenantDek("acme", 1)->dek.kek_version, 2u);
}

TEST_F(KeyManagerOnFakesTest, EncryptAndDecryptOfACachedTenantMakeNoKekRingCall) {
  auto keys = Keys();
  ASSERT_NE(keys, nullptr);
  ASSERT_NO_FATAL_FAILURE(CreateAndCache(*keys, "acme"));
  // From here the StrictMock fails the test on any call to the ring.
  std::vector<ContextPair> ctx = {{"column", "email"}};
  for (int i = 0; i < 50; ++i) {
    auto sealed = keys->Encrypt(T("acme"), suite::Ctx(ctx), Bytes("alice@example.com"));
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    auto opened = keys->Decrypt(T("acme"), suite::Ctx(ctx), Bytes(sealed->ciphertext));
    ASSERT_TRUE(opened.ok()) << opened.status();
  }
  EXPECT_EQ(keys->stats().encryptions, 51u);
}

TEST_F(KeyManagerOnFakesTest, AKekInvalidationRefreshesTheRingExactlyOnce) {
  auto keys = Keys();
  ASSERT_NE(keys, nullptr);
  ASSERT_NO_FATAL_FAILURE(CreateAndCache(*keys, "acme"));
  EXPECT_CALL(ring_, Refresh()).Times(1);
  keys->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kKek});
  ASSERT_TRUE(Mock::VerifyAndClearExpectations(&ring_));
  // A KEK event leaves the DEK cache alone: still no ring call for a cached tenant.
  EXPECT_TRUE(keys->Encrypt(T("acme"), {}, Bytes("x")).ok());
}

TEST_F(KeyManagerOnFakesTest, AnAllInvalidationRefreshesTheRingOnceAndOthersNotAtAll) {
  auto keys = Keys();
  ASSERT_NE(keys, nullptr);
  ASSERT_NO_FATAL_FAILURE(CreateAndCache(*keys, "acme"));
  // No ring call for these two (StrictMock).
  keys->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kTenant, .tenant_id = "acme"});
  keys->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kJwt});
  ASSERT_TRUE(Mock::VerifyAndClearExpectations(&ring_));
  EXPECT_CALL(ring_, Refresh()).Times(1);
  keys->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kAll});
}

TEST_F(KeyManagerOnFakesTest, AFailedRingRefreshLeavesTheNodeServing) {
  auto keys = Keys();
  ASSERT_NE(keys, nullptr);
  ASSERT_NO_FATAL_FAILURE(CreateAndCache(*keys, "acme"));
  EXPECT_CALL(ring_, Refresh()).WillOnce(Return(absl::UnavailableError("HSM is down")));
  keys->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kKek});
  EXPECT_TRUE(keys->Encrypt(T("acme"), {}, Bytes("x")).ok());
}

TEST_F(KeyManagerOnFakesTest, HsmOutageServesCachedTenantsAndFailsOthersWithUnavailable) {
  auto keys = KeyManager::Create(&fake_ring_, store_.get(), &clock_, KeyManagerOptions{});
  ASSERT_TRUE(keys.ok()) << keys.status();
  KeyManager& km = **keys;
  ASSERT_TRUE(km.CreateTenant(T("cached")).ok());
  ASSERT_TRUE(km.CreateTenant(T("cold")).ok());
  auto ct = km.Encrypt(T("cached"), {}, Bytes("still here"));
  ASSERT_TRUE(ct.ok()) << ct.status();
  fake_ring_.hsm().SetUnavailable(true);
  auto opened = km.Decrypt(T("cached"), {}, Bytes(ct->ciphertext));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->plaintext, "still here");
  EXPECT_EQ(km.Encrypt(T("cold"), {}, Bytes("x")).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(km.CreateTenant(T("new")).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(km.RotateTenantDek(T("cached")).status().code(), StatusCode::kUnavailable);
  fake_ring_.hsm().SetUnavailable(false);
  EXPECT_TRUE(km.Encrypt(T("cold"), {}, Bytes("x")).ok());
}

}  // namespace
}  // namespace kms::keys
