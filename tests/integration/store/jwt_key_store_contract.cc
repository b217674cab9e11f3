// The JwtKeyStore contract (include/kms/store/jwt_key_store.h): see store_contract.h.
#include <algorithm>
#include <atomic>
#include <latch>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store::contract {
namespace {

using ::absl::StatusCode;

// --- JWT signing keys

std::vector<JwtKeyRecord> JwtKeys(JwtKeyStore& store) {
  auto keys = store.ListJwtKeys();
  EXPECT_TRUE(keys.ok()) << keys.status();
  return keys.ok() ? *keys : std::vector<JwtKeyRecord>();
}

TEST_P(JwtKeyStoreContractTest, EmptyStoreHasNoJwtKeys) { EXPECT_TRUE(JwtKeys(store()).empty()); }

TEST_P(JwtKeyStoreContractTest, FirstJwtKeyReadsBackWithRowVersionOne) {
  const JwtKeyRecord key = TestJwtKey("kid-a", 1700000000);
  KMS_ASSERT_OK(store().InsertFirstJwtKey(key));
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  ExpectSameJwtKey(keys[0], key);
  EXPECT_EQ(keys[0].row_version, 1);
}

TEST_P(JwtKeyStoreContractTest, SecondFirstJwtKeyIsAlreadyExistsAndKeepsTheFirst) {
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

TEST_P(JwtKeyStoreContractTest, RotateJwtKeyRetiresTheCurrentAndInsertsTheNext) {
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

TEST_P(JwtKeyStoreContractTest, RotateJwtKeyWithAStaleRowVersionIsAbortedAndChangesNothing) {
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  KMS_ASSERT_OK(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-b", 1700000300)));
  const auto before = JwtKeys(store());
  const int64_t epoch = Epoch(health());

  EXPECT_EQ(store().RotateJwtKey("kid-a", 1, 1700009999, TestJwtKey("kid-c", 1700000600)).code(),
            StatusCode::kAborted);
  auto after = JwtKeys(store());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    ExpectSameJwtKey(after[i], before[i]);
    EXPECT_EQ(after[i].row_version, before[i].row_version);
  }
  EXPECT_EQ(Epoch(health()), epoch);
}

TEST_P(JwtKeyStoreContractTest, RotateJwtKeyOfAnUnknownKidIsNotFound) {
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  EXPECT_EQ(store().RotateJwtKey("kid-x", 1, 1700001260, TestJwtKey("kid-b", 1700000300)).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(JwtKeys(store()).size(), 1u);
}

TEST_P(JwtKeyStoreContractTest, RotateJwtKeyToAnExistingKidIsAlreadyExistsAndChangesNothing) {
  const JwtKeyRecord first = TestJwtKey("kid-a", 1700000000);
  KMS_ASSERT_OK(store().InsertFirstJwtKey(first));
  EXPECT_EQ(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-a", 1700000300)).code(),
            StatusCode::kAlreadyExists);
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  ExpectSameJwtKey(keys[0], first);
  EXPECT_EQ(keys[0].row_version, 1);
}

TEST_P(JwtKeyStoreContractTest, ConcurrentJwtRotationsFromTheSameRowVersionHaveExactlyOneWinner) {
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

TEST_P(JwtKeyStoreContractTest, JwtKeysListInActivationOrderThenKid) {
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

TEST_P(JwtKeyStoreContractTest, UpdateJwtKeyWrappingIsACompareAndSet) {
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  const std::vector<uint8_t> rewrapped = TestBlob(0x42, 120);
  KMS_ASSERT_OK(store().UpdateJwtKeyWrapping("kid-a", 1, 2, rewrapped));
  auto keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].kek_version, 2u);
  EXPECT_EQ(keys[0].wrapped_private, rewrapped);
  EXPECT_EQ(keys[0].row_version, 2);
  EXPECT_EQ(keys[0].activate_at, 1700000000);

  const int64_t epoch = Epoch(health());
  EXPECT_EQ(store().UpdateJwtKeyWrapping("kid-a", 1, 3, TestBlob(0x43, 120)).code(),
            StatusCode::kAborted);
  EXPECT_EQ(store().UpdateJwtKeyWrapping("kid-x", 1, 3, TestBlob(0x43, 120)).code(),
            StatusCode::kNotFound);
  keys = JwtKeys(store());
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].kek_version, 2u);
  EXPECT_EQ(keys[0].wrapped_private, rewrapped);
  EXPECT_EQ(keys[0].row_version, 2);
  EXPECT_EQ(Epoch(health()), epoch);

  // A rotation from the old row_version after a re-wrap loses.
  EXPECT_EQ(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-b", 1700000300)).code(),
            StatusCode::kAborted);
  KMS_EXPECT_OK(store().RotateJwtKey("kid-a", 2, 1700001260, TestJwtKey("kid-b", 1700000300)));
}

TEST_P(JwtKeyStoreContractTest, EveryJwtKeyChangeIncreasesTheEpochAndReadsAndRejectionsDoNot) {
  int64_t last = Epoch(health());
  auto expect_increased = [&](const char* what) {
    const int64_t now = Epoch(health());
    EXPECT_GT(now, last) << what;
    last = now;
  };
  KMS_ASSERT_OK(store().InsertFirstJwtKey(TestJwtKey("kid-a", 1700000000)));
  expect_increased("InsertFirstJwtKey");
  (void)JwtKeys(store());
  EXPECT_EQ(Epoch(health()), last) << "after ListJwtKeys";
  KMS_ASSERT_OK(store().RotateJwtKey("kid-a", 1, 1700001260, TestJwtKey("kid-b", 1700000300)));
  expect_increased("RotateJwtKey");
  KMS_ASSERT_OK(store().UpdateJwtKeyWrapping("kid-b", 1, 2, TestBlob(9, 64)));
  expect_increased("UpdateJwtKeyWrapping");

  EXPECT_FALSE(store().InsertFirstJwtKey(TestJwtKey("kid-c", 1700000000)).ok());
  EXPECT_FALSE(store().RotateJwtKey("kid-b", 1, 1, TestJwtKey("kid-c", 1700000600)).ok());
  EXPECT_FALSE(store().UpdateJwtKeyWrapping("kid-b", 1, 3, TestBlob(9, 64)).ok());
  EXPECT_EQ(Epoch(health()), last) << "after rejected changes";
}

}  // namespace
}  // namespace kms::store::contract
