// HsmKekRing on FakeHsm and SQLite ":memory:" (behind InjectingKeyStore): the first
// start, rotation and the races between replicas, especially the failure paths, where a
// KEK this node created but could not commit must never be used.
#include "src/keys/kek_ring.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/fake_hsm.h"
#include "tests/fakes/injecting_key_store.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::keys {
namespace {

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

class KekRingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sqlite = store::SqliteKeyStore::Open(":memory:");
    ASSERT_TRUE(sqlite.ok()) << sqlite.status();
    sqlite_ = std::move(*sqlite);
    store_ = std::make_unique<testing::InjectingKeyStore>(sqlite_.get());
  }
  std::unique_ptr<HsmKekRing> Ring(testing::FakeHsm& hsm) {
    auto ring = HsmKekRing::Create(&hsm, store_.get(), &clock_);
    EXPECT_TRUE(ring.ok()) << ring.status();
    return ring.ok() ? std::move(*ring) : nullptr;
  }

  testing::SimulatedClock clock_;
  std::unique_ptr<store::SqliteKeyStore> sqlite_;
  std::unique_ptr<testing::InjectingKeyStore> store_;
};

TEST_F(KekRingTest, AFailedFirstInsertLeavesNoKekLoadedAndARetryUsesTheStoredOne) {
  testing::FakeHsm hsm_a;
  store_->FailNextInsertKek(absl::UnavailableError("store went away"));
  EXPECT_TRUE(absl::IsUnavailable(HsmKekRing::Create(&hsm_a, store_.get(), &clock_).status()));
  EXPECT_FALSE(hsm_a.HasKek(1));  // ours was not committed: not left loaded

  // Meanwhile replica B creates KEK 1; A's retry must use B's, not a stale one of its own.
  testing::FakeHsm hsm_b;
  auto ring_b = Ring(hsm_b);
  ASSERT_NE(ring_b, nullptr);
  auto sealed = ring_b->Seal(1, Bytes("dek"), Bytes("aad"));
  ASSERT_TRUE(sealed.ok());
  auto ring_a = Ring(hsm_a);
  ASSERT_NE(ring_a, nullptr);
  auto opened = ring_a->Open(1, *sealed, Bytes("aad"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->size(), 3u);
}

TEST_F(KekRingTest, LosingTheFirstStartRaceUsesTheWinnersKek) {
  testing::FakeHsm hsm_a, hsm_b;
  std::unique_ptr<HsmKekRing> ring_b;
  // B creates KEK 1 while A is between generating its own and inserting it.
  store_->BeforeNextInsertKek([&] { ring_b = Ring(hsm_b); });
  auto ring_a = Ring(hsm_a);
  ASSERT_NE(ring_a, nullptr);
  ASSERT_NE(ring_b, nullptr);
  auto sealed = ring_b->Seal(1, Bytes("x"), Bytes("aad"));
  ASSERT_TRUE(sealed.ok());
  EXPECT_TRUE(ring_a->Open(1, *sealed, Bytes("aad")).ok());
}

TEST_F(KekRingTest, LosingARotationRaceIsAbortedAndTheOtherReplicasKekIsUsed) {
  testing::FakeHsm hsm_a, hsm_b;
  auto ring_a = Ring(hsm_a);
  auto ring_b = Ring(hsm_b);
  ASSERT_NE(ring_a, nullptr);
  ASSERT_NE(ring_b, nullptr);
  // B rotates to KEK 2 while A is between creating its KEK 2 and inserting it.
  store_->BeforeNextInsertKek([&] { ASSERT_EQ(ring_b->Rotate().value(), 2u); });
  EXPECT_TRUE(absl::IsAborted(ring_a->Rotate().status()));
  EXPECT_FALSE(hsm_a.HasKek(2));  // A's own KEK 2 was unloaded
  EXPECT_EQ(ring_a->primary_version(), 1u);

  // A key B sealed under its KEK 2 opens on A (A loads B's KEK 2 from the store).
  auto sealed = ring_b->Seal(2, Bytes("jwt key"), Bytes("aad"));
  ASSERT_TRUE(sealed.ok());
  auto opened = ring_a->Open(2, *sealed, Bytes("aad"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  ASSERT_TRUE(ring_a->Refresh().ok());
  EXPECT_EQ(ring_a->primary_version(), 2u);
}

TEST_F(KekRingTest, AVersionTheStoreDoesNotHoldIsNeverUsed) {
  testing::FakeHsm hsm;
  auto ring = Ring(hsm);
  ASSERT_NE(ring, nullptr);
  // A KEK loaded in the HSM under a number the store does not know (as an uncommitted
  // rotation would leave it) does not count as part of the ring.
  ASSERT_TRUE(hsm.CreateKek(5).ok());
  EXPECT_TRUE(absl::IsDataLoss(ring->EnsureLoaded(5)));
  EXPECT_FALSE(ring->Seal(5, Bytes("x"), Bytes("aad")).ok());
}

TEST_F(KekRingTest, RotationTellsTheListenerOnceAndListsBothVersions) {
  testing::FakeHsm hsm;
  auto ring = Ring(hsm);
  ASSERT_NE(ring, nullptr);
  int told = 0;
  ring->SetChangeListener([&](const coord::InvalidationEvent& e) {
    EXPECT_EQ(e.kind, coord::InvalidationEvent::Kind::kKek);
    ++told;
  });
  ASSERT_EQ(ring->Rotate().value(), 2u);
  EXPECT_EQ(told, 1);
  auto keks = ring->List();
  ASSERT_TRUE(keks.ok());
  ASSERT_EQ(keks->size(), 2u);
  EXPECT_EQ((*keks)[1].version, 2u);
  EXPECT_NE((*keks)[1].mechanism, "unknown");
}

}  // namespace
}  // namespace kms::keys
