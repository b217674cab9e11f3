// The RotationJobStore contract (include/kms/store/rotation_job_store.h): see
// store_contract.h.
#include <latch>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store::contract {
namespace {

using ::absl::StatusCode;

RotationJobProgress Progress(const std::string& phase, const std::string& key, uint32_t version,
                             uint64_t done) {
  RotationJobProgress p;
  p.phase = phase;
  p.cursor_key = key;
  p.cursor_version = version;
  p.done = done;
  p.skipped = done / 10;
  p.total = 1000;
  return p;
}

void ExpectSameProgress(const RotationJobProgress& actual, const RotationJobProgress& expected) {
  EXPECT_EQ(actual.phase, expected.phase);
  EXPECT_EQ(actual.cursor_key, expected.cursor_key);
  EXPECT_EQ(actual.cursor_version, expected.cursor_version);
  EXPECT_EQ(actual.done, expected.done);
  EXPECT_EQ(actual.skipped, expected.skipped);
  EXPECT_EQ(actual.total, expected.total);
}

void ExpectSameJob(const RotationJobRecord& actual, const RotationJobRecord& expected) {
  EXPECT_EQ(actual.id, expected.id);
  EXPECT_EQ(actual.kind, expected.kind);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.from_kek_version, expected.from_kek_version);
  EXPECT_EQ(actual.to_kek_version, expected.to_kek_version);
  ExpectSameProgress(actual.progress, expected.progress);
  EXPECT_EQ(actual.error, expected.error);
  EXPECT_EQ(actual.created_at, expected.created_at);
  EXPECT_EQ(actual.updated_at, expected.updated_at);
  EXPECT_EQ(actual.finished_at, expected.finished_at);
  EXPECT_EQ(actual.row_version, expected.row_version);
}

TEST_P(RotationJobStoreContractTest, EmptyStoreHasNoJobs) {
  auto jobs = store().ListRotationJobs(0, 10);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->empty());
  EXPECT_EQ(store().GetRunningRotationJob(RotationJobKind::kKekRewrap).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store().GetRotationJob(1).status().code(), StatusCode::kNotFound);
}

TEST_P(RotationJobStoreContractTest, ACreatedJobReadsBackRunningWithItsIdAndRowVersionOne) {
  RotationJobRecord job = TestRotationJob(1, 2, 1700000000);
  // Fields the store sets itself, whatever the caller passes.
  job.id = 99;
  job.state = RotationJobState::kDone;
  job.error = "ignored";
  job.updated_at = 5;
  job.finished_at = 6;
  job.row_version = 7;
  auto created = store().CreateRotationJob(job);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_GT(created->id, 0);
  EXPECT_EQ(created->state, RotationJobState::kRunning);
  EXPECT_EQ(created->error, "");
  EXPECT_EQ(created->updated_at, 1700000000);
  EXPECT_EQ(created->finished_at, 0);
  EXPECT_EQ(created->row_version, 1);
  ExpectSameProgress(created->progress, job.progress);

  auto read = store().GetRotationJob(created->id);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectSameJob(*read, *created);
  auto running = store().GetRunningRotationJob(RotationJobKind::kKekRewrap);
  ASSERT_TRUE(running.ok()) << running.status();
  ExpectSameJob(*running, *created);
}

TEST_P(RotationJobStoreContractTest, OnlyOneJobOfAKindRunsAtATime) {
  auto first = store().CreateRotationJob(TestRotationJob(1, 2, 1700000000));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(store().CreateRotationJob(TestRotationJob(2, 3, 1700000100)).status().code(),
            StatusCode::kAlreadyExists);
  auto running = store().GetRunningRotationJob(RotationJobKind::kKekRewrap);
  ASSERT_TRUE(running.ok()) << running.status();
  EXPECT_EQ(running->id, first->id);

  // Once it is finished, the next one may start; ids increase.
  KMS_ASSERT_OK(store().FinishRotationJob(first->id, 1, RotationJobState::kDone, first->progress,
                                          "", 1700000200));
  auto second = store().CreateRotationJob(TestRotationJob(2, 3, 1700000300));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_GT(second->id, first->id);
}

TEST_P(RotationJobStoreContractTest, ConcurrentCreatesHaveExactlyOneWinner) {
  constexpr int kThreads = 8;
  std::latch start(kThreads);
  std::vector<absl::StatusOr<RotationJobRecord>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = store().CreateRotationJob(TestRotationJob(1, 2, 1700000000 + i));
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  int64_t winner = 0;
  for (int i = 0; i < kThreads; ++i) {
    if (results[i].ok()) {
      ++ok;
      winner = results[i]->id;
    } else {
      EXPECT_EQ(results[i].status().code(), StatusCode::kAlreadyExists)
          << "thread " << i << ": " << results[i].status();
    }
  }
  ASSERT_EQ(ok, 1);
  auto jobs = store().ListRotationJobs(0, 100);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id, winner);
}

TEST_P(RotationJobStoreContractTest, ProgressIsACompareAndSetOnTheRowVersion) {
  auto job = store().CreateRotationJob(TestRotationJob(1, 2, 1700000000));
  ASSERT_TRUE(job.ok()) << job.status();
  const RotationJobProgress p1 = Progress("deks", "tenant-\xc3\xa9'x", 7, 500);
  KMS_ASSERT_OK(store().UpdateRotationJobProgress(job->id, 1, p1, 1700000060));

  auto read = store().GetRotationJob(job->id);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectSameProgress(read->progress, p1);
  EXPECT_EQ(read->updated_at, 1700000060);
  EXPECT_EQ(read->created_at, 1700000000);
  EXPECT_EQ(read->row_version, 2);
  EXPECT_EQ(read->state, RotationJobState::kRunning);

  // A replica still holding row_version 1 lost the job.
  EXPECT_EQ(store()
                .UpdateRotationJobProgress(job->id, 1, Progress("deks", "z", 1, 900), 1700000090)
                .code(),
            StatusCode::kAborted);
  EXPECT_EQ(store().UpdateRotationJobProgress(job->id + 1000, 1, p1, 1700000090).code(),
            StatusCode::kNotFound);
  read = store().GetRotationJob(job->id);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectSameProgress(read->progress, p1);
  EXPECT_EQ(read->row_version, 2);

  const RotationJobProgress p2 = Progress("jwt_keys", "kid-1", 0, 1000);
  KMS_EXPECT_OK(store().UpdateRotationJobProgress(job->id, 2, p2, 1700000120));
  read = store().GetRotationJob(job->id);
  ASSERT_TRUE(read.ok()) << read.status();
  ExpectSameProgress(read->progress, p2);
  EXPECT_EQ(read->row_version, 3);
}

TEST_P(RotationJobStoreContractTest, ConcurrentCheckpointsFromTheSameRowVersionHaveOneWinner) {
  constexpr int kThreads = 8;
  auto job = store().CreateRotationJob(TestRotationJob(1, 2, 1700000000));
  ASSERT_TRUE(job.ok()) << job.status();
  std::latch start(kThreads);
  std::vector<absl::Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = store().UpdateRotationJobProgress(
          job->id, 1, Progress("deks", absl::StrCat("t", i), 1, 10 * (i + 1)), 1700000000 + i);
    });
  }
  for (auto& t : threads) t.join();
  int winner = -1;
  for (int i = 0; i < kThreads; ++i) {
    if (results[i].ok()) {
      EXPECT_EQ(winner, -1) << "two winners";
      winner = i;
    } else {
      EXPECT_EQ(results[i].code(), StatusCode::kAborted) << "thread " << i << ": " << results[i];
    }
  }
  ASSERT_NE(winner, -1);
  auto read = store().GetRotationJob(job->id);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->progress.cursor_key, absl::StrCat("t", winner));
  EXPECT_EQ(read->row_version, 2);
}

TEST_P(RotationJobStoreContractTest, FinishingIsFinal) {
  auto job = store().CreateRotationJob(TestRotationJob(3, 4, 1700000000));
  ASSERT_TRUE(job.ok()) << job.status();
  const RotationJobProgress last = Progress("jwt_keys", "kid-9", 0, 1000);
  EXPECT_EQ(store()
                .FinishRotationJob(job->id, 1, RotationJobState::kRunning, last, "", 1700000500)
                .code(),
            StatusCode::kInvalidArgument);
  KMS_ASSERT_OK(store().FinishRotationJob(job->id, 1, RotationJobState::kFailed, last,
                                          "HSM unavailable", 1700000500));
  auto read = store().GetRotationJob(job->id);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->state, RotationJobState::kFailed);
  EXPECT_EQ(read->error, "HSM unavailable");
  EXPECT_EQ(read->finished_at, 1700000500);
  EXPECT_EQ(read->updated_at, 1700000500);
  EXPECT_EQ(read->row_version, 2);
  ExpectSameProgress(read->progress, last);
  EXPECT_EQ(store().GetRunningRotationJob(RotationJobKind::kKekRewrap).status().code(),
            StatusCode::kNotFound);

  // From the current row_version: FAILED_PRECONDITION; from an old one: ABORTED.
  EXPECT_EQ(store().UpdateRotationJobProgress(job->id, 2, last, 1700000600).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      store().FinishRotationJob(job->id, 2, RotationJobState::kDone, last, "", 1700000600).code(),
      StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      store().FinishRotationJob(job->id, 1, RotationJobState::kDone, last, "", 1700000600).code(),
      StatusCode::kAborted);
  read = store().GetRotationJob(job->id);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->state, RotationJobState::kFailed);
  EXPECT_EQ(read->row_version, 2);
}

TEST_P(RotationJobStoreContractTest, JobsListNewestFirstInPages) {
  std::vector<int64_t> ids;
  for (uint32_t v = 1; v <= 5; ++v) {
    auto job = store().CreateRotationJob(TestRotationJob(v, v + 1, 1700000000 + v));
    ASSERT_TRUE(job.ok()) << job.status();
    ids.push_back(job->id);
    KMS_ASSERT_OK(store().FinishRotationJob(job->id, 1, RotationJobState::kDone, job->progress,
                                            "", 1700000000 + v));
  }
  std::vector<int64_t> seen;
  int64_t before = 0;
  for (int guard = 0; guard < 10; ++guard) {
    auto page = store().ListRotationJobs(before, 2);
    ASSERT_TRUE(page.ok()) << page.status();
    if (page->empty()) break;
    EXPECT_LE(page->size(), 2u);
    for (const auto& j : *page) seen.push_back(j.id);
    before = page->back().id;
  }
  EXPECT_EQ(seen, (std::vector<int64_t>{ids[4], ids[3], ids[2], ids[1], ids[0]}));
  auto newest = store().ListRotationJobs(0, 1);
  ASSERT_TRUE(newest.ok()) << newest.status();
  ASSERT_EQ(newest->size(), 1u);
  EXPECT_EQ((*newest)[0].from_kek_version, 5u);
  EXPECT_EQ((*newest)[0].state, RotationJobState::kDone);
}

TEST_P(RotationJobStoreContractTest, BadArgumentsAreInvalidArgumentAndStoreNothing) {
  EXPECT_EQ(store().CreateRotationJob(TestRotationJob(0, 2, 1700000000)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store().CreateRotationJob(TestRotationJob(1, 0, 1700000000)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store().CreateRotationJob(TestRotationJob(2, 2, 1700000000)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store().CreateRotationJob(TestRotationJob(1, 2, -1)).status().code(),
            StatusCode::kInvalidArgument);
  RotationJobRecord huge = TestRotationJob(1, 2, 1700000000);
  huge.progress.total = ~uint64_t{0};
  EXPECT_EQ(store().CreateRotationJob(huge).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store().ListRotationJobs(0, 0).status().code(), StatusCode::kInvalidArgument);
  auto jobs = store().ListRotationJobs(0, 10);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_TRUE(jobs->empty());
}

// Contract decision: job checkpoints are not key-state changes and leave the epoch.
TEST_P(RotationJobStoreContractTest, JobChangesLeaveTheEpoch) {
  const int64_t epoch = Epoch(health());
  auto job = store().CreateRotationJob(TestRotationJob(1, 2, 1700000000));
  ASSERT_TRUE(job.ok()) << job.status();
  KMS_ASSERT_OK(
      store().UpdateRotationJobProgress(job->id, 1, Progress("deks", "a", 1, 1), 1700000001));
  KMS_ASSERT_OK(store().FinishRotationJob(job->id, 2, RotationJobState::kDone, job->progress, "",
                                          1700000002));
  EXPECT_EQ(Epoch(health()), epoch);
}

}  // namespace
}  // namespace kms::store::contract
