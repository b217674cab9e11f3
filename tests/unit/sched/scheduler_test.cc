// The Scheduler on a simulated clock: the test moves time and calls RunDue(); nothing
// sleeps. Only StopIsPrompt runs the real thread.
#include "src/sched/scheduler.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/sched/sched_fakes.h"

namespace kms::sched {
namespace {

using namespace std::chrono_literals;
using Kind = coord::InvalidationEvent::Kind;
using kms::testing::FakeBus;
using kms::testing::FakeEpochSource;
using kms::testing::FakeLeader;
using kms::testing::RecordingSink;

constexpr auto kPoll = 10s;
constexpr auto kLead = 2s;

class SchedulerTest : public ::testing::Test {
 protected:
  std::unique_ptr<Scheduler> Make(coord::InvalidationBus* bus = nullptr) {
    return std::make_unique<Scheduler>(
        clock_, epoch_, sink_, bus, leader_,
        Scheduler::Options{.poll_interval = kPoll, .leader_interval = kLead});
  }
  // A job that counts its runs and remembers the leadership it was told.
  std::unique_ptr<Job> Counting(std::string name, std::chrono::milliseconds interval,
                                bool leader_only = false) {
    return MakeJob(std::move(name), interval, leader_only, [this](const JobContext& c) {
      ++runs_;
      seen_leader_.push_back(c.leader);
      return absl::OkStatus();
    });
  }
  JobStatus StatusOf(const Scheduler& s, const std::string& name) {
    for (const JobStatus& j : s.Jobs()) {
      if (j.name == name) return j;
    }
    ADD_FAILURE() << "no job " << name;
    return {};
  }

  testing::SimulatedClock clock_;
  FakeEpochSource epoch_;
  RecordingSink sink_;
  FakeLeader leader_;
  int runs_ = 0;
  std::vector<bool> seen_leader_;
};

TEST_F(SchedulerTest, NothingRunsBeforeItsInterval) {
  auto s = Make();
  ASSERT_TRUE(s->AddJob(Counting("a", 30s)).ok());
  s->StartWithoutThread();
  s->RunDue();
  EXPECT_EQ(runs_, 0);
  clock_.Advance(30s - 1ms);
  s->RunDue();
  EXPECT_EQ(runs_, 0);
  clock_.Advance(1ms);
  s->RunDue();
  EXPECT_EQ(runs_, 1);
}

TEST_F(SchedulerTest, AJobRunsOnceEachIntervalAndRunDueSaysWhenWorkIsNext) {
  auto s = Make();
  ASSERT_TRUE(s->AddJob(Counting("a", 5s)).ok());
  const auto start = clock_.Now();
  s->StartWithoutThread();
  // Leadership is checked at once; then the next leadership check (2 s) is the first work.
  EXPECT_EQ(s->RunDue(), start + kLead);
  EXPECT_EQ(leader_.tries(), 1);
  clock_.Advance(5s);
  s->RunDue();
  s->RunDue();  // the same instant again: nothing more is due
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(StatusOf(*s, "a").next_due, start + 10s);
  clock_.Advance(12s);  // one late step runs it once, not twice
  s->RunDue();
  EXPECT_EQ(runs_, 2);
  EXPECT_EQ(StatusOf(*s, "a").next_due, clock_.Now() + 5s);
  EXPECT_EQ(StatusOf(*s, "a").runs, 2);
}

TEST_F(SchedulerTest, LeaderOnlyJobsRunOnlyWhileLeading) {
  leader_.set_available(false);
  auto s = Make();
  ASSERT_TRUE(s->AddJob(Counting("rotate", 60s, /*leader_only=*/true)).ok());
  s->StartWithoutThread();
  s->RunDue();
  clock_.Advance(60s);
  s->RunDue();
  EXPECT_EQ(runs_, 0);
  EXPECT_TRUE(StatusOf(*s, "rotate").waiting_for_leadership);
  // A follower's wake-up is the next leadership check, not the held job.
  EXPECT_EQ(s->RunDue(), clock_.Now() + kLead);

  // Taking over at the next leadership check runs the held job in the same step.
  leader_.set_available(true);
  clock_.Advance(kLead);
  s->RunDue();
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(seen_leader_, std::vector<bool>{true});
  EXPECT_FALSE(StatusOf(*s, "rotate").waiting_for_leadership);

  // Losing leadership holds it again.
  leader_.set_available(false);
  clock_.Advance(60s);
  s->RunDue();
  EXPECT_EQ(runs_, 1);
}

TEST_F(SchedulerTest, OtherJobsRunOnEveryReplicaAndAreToldWhetherItLeads) {
  leader_.set_available(false);
  auto s = Make();
  ASSERT_TRUE(s->AddJob(Counting("jwt", 30s)).ok());
  s->StartWithoutThread();
  s->RunDue();
  clock_.Advance(30s);
  s->RunDue();
  leader_.set_available(true);
  clock_.Advance(30s);
  s->RunDue();
  EXPECT_EQ(seen_leader_, (std::vector<bool>{false, true}));
}

TEST_F(SchedulerTest, AnEpochChangeTriggersOneFullInvalidation) {
  epoch_.Set(5);
  auto s = Make();
  s->StartWithoutThread();
  EXPECT_EQ(s->last_epoch(), 5);
  clock_.Advance(kPoll);
  s->RunDue();
  EXPECT_TRUE(sink_.events().empty());  // unchanged epoch: nothing dropped

  epoch_.Set(6);
  clock_.Advance(kPoll - 1ms);
  s->RunDue();
  EXPECT_TRUE(sink_.events().empty());  // not polled before the interval
  clock_.Advance(1ms);
  s->RunDue();
  ASSERT_EQ(sink_.events().size(), 1u);
  EXPECT_EQ(sink_.events()[0].kind, Kind::kAll);
  EXPECT_EQ(s->last_epoch(), 6);

  clock_.Advance(kPoll);
  s->RunDue();
  clock_.Advance(kPoll);
  s->RunDue();
  EXPECT_EQ(sink_.events().size(), 1u);  // exactly once per change
}

TEST_F(SchedulerTest, AStoreDownAtStartInvalidatesAtItsFirstAnswerAndAnOutageChangesNothing) {
  epoch_.Fail(absl::UnavailableError("store down"));
  auto s = Make();
  s->StartWithoutThread();
  EXPECT_EQ(s->last_epoch(), -1);
  clock_.Advance(kPoll);
  s->RunDue();
  EXPECT_TRUE(sink_.events().empty());  // still down: keep serving from cache

  epoch_.Set(3);
  clock_.Advance(kPoll);
  s->RunDue();
  EXPECT_EQ(sink_.count(Kind::kAll), 1);  // no baseline: anything cached may be stale

  epoch_.Fail(absl::UnavailableError("store down"));
  clock_.Advance(kPoll);
  s->RunDue();
  EXPECT_EQ(sink_.count(Kind::kAll), 1);
  EXPECT_EQ(s->last_epoch(), 3);
  epoch_.Set(3);
  clock_.Advance(kPoll);
  s->RunDue();
  EXPECT_EQ(sink_.count(Kind::kAll), 1);  // back with the same epoch: nothing moved
}

TEST_F(SchedulerTest, BusEventsAreAppliedAsTheyCome) {
  FakeBus bus;
  auto s = Make(&bus);
  EXPECT_TRUE(s->has_bus());
  s->StartWithoutThread();
  EXPECT_TRUE(bus.started());
  bus.Deliver({.kind = Kind::kTenant, .tenant_id = "acme", .origin = "node-2"});
  bus.Deliver({.kind = Kind::kKek, .origin = "node-2"});
  std::vector<coord::InvalidationEvent> events = sink_.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::kTenant);
  EXPECT_EQ(events[0].tenant_id, "acme");
  EXPECT_EQ(events[1].kind, Kind::kKek);

  EXPECT_TRUE(s->bus_healthy());
  bus.set_healthy(false);
  EXPECT_FALSE(s->bus_healthy());
  s->Stop();
  EXPECT_TRUE(bus.stopped());
}

TEST_F(SchedulerTest, PublishGoesToTheBusAndAFailedPublishIsOnlyLogged) {
  FakeBus bus;
  auto s = Make(&bus);
  s->Publish({.kind = Kind::kTenant, .tenant_id = "acme"});
  bus.set_publish_status(absl::UnavailableError("redis down"));
  s->Publish({.kind = Kind::kJwt});
  ASSERT_EQ(bus.published().size(), 2u);
  EXPECT_EQ(bus.published()[0].tenant_id, "acme");

  auto without_bus = Make();
  EXPECT_FALSE(without_bus->has_bus());
  EXPECT_FALSE(without_bus->bus_healthy());
  without_bus->Publish({.kind = Kind::kAll});  // no bus: nothing to do
}

TEST_F(SchedulerTest, AFailingJobIsRecordedAndRetriedAtTheNextInterval) {
  auto s = Make();
  int calls = 0;
  ASSERT_TRUE(s->AddJob(MakeJob("flush", 10s, false, [&](const JobContext&) {
                 ++calls;
                 return calls <= 2 ? absl::UnavailableError("store down") : absl::OkStatus();
               })).ok());
  s->StartWithoutThread();
  const int64_t t0 = clock_.UnixSeconds();

  clock_.Advance(10s);
  s->RunDue();
  JobStatus st = StatusOf(*s, "flush");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(st.last_result.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.consecutive_failures, 1);
  EXPECT_EQ(st.failing_since_unix, t0 + 10);
  EXPECT_EQ(st.last_run_unix, t0 + 10);
  EXPECT_EQ(st.last_success_unix, 0);
  EXPECT_EQ(st.next_due, clock_.Now() + 10s);

  clock_.Advance(9s);
  s->RunDue();
  EXPECT_EQ(calls, 1);  // no retry before the interval
  clock_.Advance(1s);
  s->RunDue();
  st = StatusOf(*s, "flush");
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(st.consecutive_failures, 2);
  EXPECT_EQ(st.failing_since_unix, t0 + 10);  // overdue since the first failure

  clock_.Advance(10s);
  s->RunDue();
  st = StatusOf(*s, "flush");
  EXPECT_EQ(calls, 3);
  EXPECT_TRUE(st.last_result.ok());
  EXPECT_EQ(st.consecutive_failures, 0);
  EXPECT_EQ(st.failing_since_unix, 0);
  EXPECT_EQ(st.last_success_unix, t0 + 30);
  EXPECT_EQ(st.runs, 3);
}

TEST_F(SchedulerTest, TriggerMakesAJobDueNow) {
  auto s = Make();
  ASSERT_TRUE(s->AddJob(Counting("rewrap", 1h)).ok());
  s->StartWithoutThread();
  clock_.Advance(1s);
  s->RunDue();
  EXPECT_EQ(runs_, 0);
  ASSERT_TRUE(s->Trigger("rewrap").ok());
  EXPECT_EQ(s->RunDue(), clock_.Now() + kLead);
  EXPECT_EQ(runs_, 1);
  EXPECT_EQ(s->Trigger("nope").code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, ATriggerDuringARunMakesTheJobRunAgainRightAfter) {
  auto s = Make();
  int runs = 0;
  Scheduler* self = s.get();
  // The job's first run triggers it again (as a KEK rotation would while a re-wrap runs).
  ASSERT_TRUE(s->AddJob(MakeJob("rewrap", 1h, /*leader_only=*/false,
                                [&](const JobContext&) {
                                  if (++runs == 1) EXPECT_TRUE(self->Trigger("rewrap").ok());
                                  return absl::OkStatus();
                                }))
                  .ok());
  s->StartWithoutThread();
  ASSERT_TRUE(s->Trigger("rewrap").ok());
  s->RunDue();
  EXPECT_EQ(runs, 1);
  s->RunDue();  // no time passes: due again at once, not an hour later
  EXPECT_EQ(runs, 2);
  s->RunDue();
  EXPECT_EQ(runs, 2);  // and then on its interval
}

TEST_F(SchedulerTest, JobsAreCheckedWhenAdded) {
  auto s = Make();
  ASSERT_TRUE(s->AddJob(Counting("a", 1s)).ok());
  EXPECT_EQ(s->AddJob(Counting("a", 1s)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddJob(Counting("", 1s)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddJob(Counting("zero", 0s)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddJob(nullptr).code(), absl::StatusCode::kInvalidArgument);
  s->StartWithoutThread();
  EXPECT_EQ(s->AddJob(Counting("late", 1s)).code(), absl::StatusCode::kFailedPrecondition);
  std::vector<JobStatus> jobs = s->Jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].name, "a");
  EXPECT_EQ(jobs[0].interval, 1s);
}

TEST_F(SchedulerTest, StopIsPromptAndResigns) {
  FakeBus bus;
  // Every piece of work is an hour of (simulated, hence real-timeout) time away.
  auto s =
      std::make_unique<Scheduler>(clock_, epoch_, sink_, &bus, leader_,
                                  Scheduler::Options{.poll_interval = 1h, .leader_interval = 1h});
  ASSERT_TRUE(s->AddJob(Counting("a", 1h)).ok());
  s->Start();
  const auto begin = std::chrono::steady_clock::now();
  s->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
  EXPECT_TRUE(bus.stopped());
  EXPECT_EQ(leader_.resigns(), 1);
  EXPECT_FALSE(s->is_leader());
  s->Stop();  // idempotent
  EXPECT_EQ(leader_.resigns(), 1);
  EXPECT_EQ(runs_, 0);
}

TEST(AlwaysLeaderTest, Leads) {
  AlwaysLeader leader;
  EXPECT_TRUE(leader.is_leader());
  EXPECT_TRUE(*leader.TryLead());
}

}  // namespace
}  // namespace kms::sched
