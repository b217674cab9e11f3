// KeyManager against the real parts: HsmKekRing over Pkcs11Hsm on a SoftHSM2 token, and a
// SQLite file. The KeyManager suite (tests/unit/keys/key_manager_suite.h) runs here on
// these parts as it runs on fakes in tests/unit/keys; below it, what only the real parts
// show: KEK blobs on the token, the re-wrap through the HSM, and a second replica's ring.
//
// One SoftHSM2 token for the whole program (RSA-4096 master key generation costs
// seconds), created on first use; every test opens its own Pkcs11Hsm sessions on it.
#include "src/keys/key_manager.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "src/hsm/pkcs11_hsm.h"
#include "src/keys/kek_ring.h"
#include "src/keys/wrapped_dek.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/test_common/simulated_clock.h"
#include "tests/test_common/softhsm_token.h"
#include "tests/test_common/temp_dir.h"
#include "tests/unit/keys/key_manager_suite.h"

namespace kms::keys {
namespace {

using ::kms::test::SoftHsmToken;
using ::kms::testing::InjectingKeyStore;
using suite::Bytes;
using suite::KeyManagerSuiteTest;
using suite::T;


absl::StatusOr<std::unique_ptr<hsm::Pkcs11Hsm>> OpenHsm() {
  KMS_ASSIGN_OR_RETURN(SoftHsmToken * token, test::SharedSoftHsmToken("kmsd-keys-test"));
  return hsm::Pkcs11Hsm::Open(token->Options(hsm::MasterKeyKind::kRsa4096));
}

// --- The suite on SoftHSM2 + SQLite

class SoftHsmRig final : public suite::KeyManagerRig {
 public:
  static absl::StatusOr<std::unique_ptr<suite::KeyManagerRig>> Make(const Clock* clock) {
    auto rig = std::unique_ptr<SoftHsmRig>(new SoftHsmRig(clock));
    KMS_RETURN_IF_ERROR(rig->Open());
    return std::unique_ptr<suite::KeyManagerRig>(std::move(rig));
  }

  KekRing& ring() override { return *ring_; }
  InjectingKeyStore& store() override { return *store_; }
  store::KeyStore& raw_store() override { return *sqlite_; }
  absl::StatusOr<uint32_t> RotateKek() override { return ring_->Rotate(); }
  absl::StatusOr<uint32_t> RotateKekOnAnotherReplica() override {
    KMS_ASSIGN_OR_RETURN(std::unique_ptr<hsm::Pkcs11Hsm> hsm, OpenHsm());
    KMS_ASSIGN_OR_RETURN(std::unique_ptr<HsmKekRing> ring,
                         HsmKekRing::Create(hsm.get(), store_.get(), clock_));
    return ring->Rotate();
  }
  uint64_t hsm_opens() const override { return hsm_->stats().opens; }
  absl::Status Restart() override { return Open(); }

 private:
  explicit SoftHsmRig(const Clock* clock) : clock_(clock) {}

  // (Re)opens every part on the same token and database file, as a restarted process.
  absl::Status Open() {
    ring_.reset();
    hsm_.reset();
    store_.reset();
    sqlite_.reset();
    KMS_ASSIGN_OR_RETURN(hsm_, OpenHsm());
    KMS_ASSIGN_OR_RETURN(sqlite_, store::SqliteKeyStore::Open(dir_.Join("kmsd.db")));
    store_ = std::make_unique<InjectingKeyStore>(sqlite_.get());
    KMS_ASSIGN_OR_RETURN(ring_, HsmKekRing::Create(hsm_.get(), store_.get(), clock_));
    return absl::OkStatus();
  }

  const Clock* const clock_;
  test::TempDir dir_;
  std::unique_ptr<hsm::Pkcs11Hsm> hsm_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<InjectingKeyStore> store_;
  std::unique_ptr<HsmKekRing> ring_;
};

INSTANTIATE_TEST_SUITE_P(SoftHsm, KeyManagerSuiteTest,
                         ::testing::Values(suite::KeyManagerRigMaker{"softhsm_sqlite",
                                                                     &SoftHsmRig::Make}),
                         suite::KeyManagerRigName);

// --- What only the real parts show

class KeyManagerOnSoftHsmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto hsm = OpenHsm();
    ASSERT_TRUE(hsm.ok()) << hsm.status();
    hsm_ = std::move(*hsm);
    auto sqlite = store::SqliteKeyStore::Open(dir_.Join("kmsd.db"));
    ASSERT_TRUE(sqlite.ok()) << sqlite.status();
    sqlite_ = std::move(*sqlite);
    auto ring = HsmKekRing::Create(hsm_.get(), sqlite_.get(), &clock_);
    ASSERT_TRUE(ring.ok()) << ring.status();
    ring_ = std::move(*ring);
    auto keys = KeyManager::Create(ring_.get(), sqlite_.get(), &clock_, KeyManagerOptions{});
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = std::move(*keys);
  }

  std::string Encrypt(const std::string& tenant, const std::string& plaintext) {
    auto result = keys_->Encrypt(T(tenant), {}, Bytes(plaintext));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? result->ciphertext : "";
  }

  test::TempDir dir_;
  testing::SimulatedClock clock_;
  std::unique_ptr<hsm::Pkcs11Hsm> hsm_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<HsmKekRing> ring_;
  std::unique_ptr<KeyManager> keys_;
};

TEST_F(KeyManagerOnSoftHsmTest, FirstStartCreatesKekVersionOneStoredOnlyWrapped) {
  auto keks = sqlite_->ListKeks();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].version, 1u);
  EXPECT_EQ(keys_->primary_kek_version(), 1u);
  // RSA-4096 OAEP output is one modulus long, plus the two header bytes.
  EXPECT_EQ((*keks)[0].wrapped.size(), 2u + 512u);
}

TEST_F(KeyManagerOnSoftHsmTest, RotatedKeksAreListedWithTheirWrapMechanism) {
  ASSERT_TRUE(ring_->Rotate().ok());
  auto keks = ring_->List();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 2u);
  EXPECT_EQ((*keks)[1].version, 2u);
  EXPECT_EQ((*keks)[1].mechanism, "rsa-oaep-sha1");  // SoftHSM2 2.6: no SHA-256 in OAEP
  EXPECT_EQ((*keks)[0].mechanism, (*keks)[1].mechanism);
}

TEST_F(KeyManagerOnSoftHsmTest, RewrapThroughTheHsmMovesADekToTheNewKek) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
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

TEST_F(KeyManagerOnSoftHsmTest, ARingSeesAKekAnotherReplicaCreatedOnFirstUseAndOnRefresh) {
  // A second replica on the same token and store.
  auto hsm_b = OpenHsm();
  ASSERT_TRUE(hsm_b.ok()) << hsm_b.status();
  auto ring_b = HsmKekRing::Create(hsm_b->get(), sqlite_.get(), &clock_);
  ASSERT_TRUE(ring_b.ok());
  ASSERT_TRUE(ring_->Rotate().ok());
  EXPECT_EQ((*ring_b)->primary_version(), 1u);  // not told yet
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());  // sealed under KEK 2 by replica A
  auto row = sqlite_->GetTenantDek("acme", 1);
  ASSERT_TRUE(row.ok());
  EXPECT_FALSE((*hsm_b)->HasKek(2));
  EXPECT_TRUE(UnwrapDek(**ring_b, "acme", 1, row->dek.wrapped).ok());  // loads KEK 2
  EXPECT_TRUE((*hsm_b)->HasKek(2));
  ASSERT_TRUE((*ring_b)->Refresh().ok());
  EXPECT_EQ((*ring_b)->primary_version(), 2u);
  EXPECT_TRUE(absl::IsDataLoss((*ring_b)->EnsureLoaded(9)));
}

}  // namespace
}  // namespace kms::keys
