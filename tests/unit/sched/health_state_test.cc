// HealthState (the one source of /readyz, grpc.health.v1 and GetStatus) and its probe
// job on a Scheduler driven by a simulated clock: phases, degraded mode and its
// duration, which backends count, and that listeners see each change once, in order.
#include "src/sched/health_state.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/sched/scheduler.h"
#include "tests/unit/sched/sched_fakes.h"

namespace kms::sched {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(HealthStateTest, LoadingIsNotServingAndSaysWhatItWaitsFor) {
  testing::SimulatedClock clock;
  HealthState h(clock, /*redis_configured=*/false);
  EXPECT_FALSE(h.Snapshot().serving());
  h.SetLoading("key store unavailable at start; retrying with backoff");
  HealthSnapshot s = h.Snapshot();
  EXPECT_EQ(s.phase, HealthPhase::kLoading);
  EXPECT_EQ(s.Describe(), "loading: key store unavailable at start; retrying with backoff\n");
  h.SetServing();
  EXPECT_TRUE(h.Snapshot().serving());
  EXPECT_EQ(h.Snapshot().Describe(), "ready\n");
  h.SetStopping();
  EXPECT_FALSE(h.Snapshot().serving());
}

TEST(HealthStateTest, StoreDownIsDegradedNamesTheStoreAndCountsTheSeconds) {
  testing::SimulatedClock clock;
  HealthState h(clock, false);
  h.SetServing();
  h.Report(Backend::kStore, absl::UnavailableError("connection refused to 10.0.0.5"));
  clock.Advance(90s);
  HealthSnapshot s = h.Snapshot();
  EXPECT_TRUE(s.serving());  // still ready: cached keys are served
  EXPECT_TRUE(s.degraded);
  EXPECT_EQ(s.degraded_seconds(), 90);
  EXPECT_FALSE(s.Find(Backend::kStore)->up);
  EXPECT_EQ(s.Find(Backend::kStore)->detail, "UNAVAILABLE");  // the code, not the backend's text
  EXPECT_TRUE(s.Find(Backend::kHsm)->up);
  EXPECT_THAT(s.Describe(), StartsWith("degraded: store down since "));
  EXPECT_THAT(s.Describe(), ::testing::Not(HasSubstr("10.0.0.5")));

  // The HSM going down too does not restart the clock of degraded mode.
  h.Report(Backend::kHsm, absl::UnavailableError("token gone"));
  clock.Advance(10s);
  EXPECT_EQ(h.Snapshot().degraded_seconds(), 100);
  h.Report(Backend::kStore, absl::OkStatus());
  EXPECT_TRUE(h.Snapshot().degraded);
  h.Report(Backend::kHsm, absl::OkStatus());
  s = h.Snapshot();
  EXPECT_FALSE(s.degraded);
  EXPECT_EQ(s.degraded_seconds(), 0);
  EXPECT_EQ(s.Describe(), "ready\n");
}

TEST(HealthStateTest, RedisDownIsReportedButNotDegraded) {
  testing::SimulatedClock clock;
  HealthState h(clock, /*redis_configured=*/true);
  h.SetServing();
  h.Report(Backend::kRedis, absl::UnavailableError("unreachable"));
  HealthSnapshot s = h.Snapshot();
  EXPECT_FALSE(s.degraded);
  ASSERT_NE(s.Find(Backend::kRedis), nullptr);
  EXPECT_FALSE(s.Find(Backend::kRedis)->up);
  EXPECT_THAT(s.Describe(), StartsWith("ready; redis down since "));
}

TEST(HealthStateTest, WithoutRedisThereIsNoRedisBackend) {
  testing::SimulatedClock clock;
  HealthState h(clock, false);
  EXPECT_EQ(h.Snapshot().Find(Backend::kRedis), nullptr);
  EXPECT_EQ(h.Snapshot().backends.size(), 2u);
}

TEST(HealthStateTest, TheListenerSeesEachChangeOnce) {
  testing::SimulatedClock clock;
  HealthState h(clock, false);
  std::vector<std::string> seen;
  h.SetListener([&](const HealthSnapshot& s) { seen.push_back(s.Describe().substr(0, 8)); });
  h.SetServing();
  h.Report(Backend::kStore, absl::OkStatus());  // no change: no call
  h.Report(Backend::kStore, absl::UnavailableError("down"));
  h.Report(Backend::kStore, absl::UnavailableError("still down"));  // no change
  h.Report(Backend::kStore, absl::OkStatus());
  EXPECT_THAT(seen, ::testing::ElementsAre("ready\n", "degraded", "ready\n"));
}

class HealthProbeJobTest : public ::testing::Test {
 protected:
  testing::SimulatedClock clock_;
  testing::FakeEpochSource epoch_;
  testing::RecordingSink sink_;
  testing::FakeLeader leader_;
};

TEST_F(HealthProbeJobTest, ProbesRunOnTheSchedulerAndReportEachBackend) {
  HealthState health(clock_, /*redis_configured=*/true);
  health.SetServing();
  absl::Status store = absl::OkStatus();
  int hsm_probes = 0;
  Scheduler s(clock_, epoch_, sink_, nullptr, leader_, Scheduler::Options{});
  ASSERT_TRUE(s.AddJob(MakeHealthProbeJob(health,
                                          HealthProbes{.hsm = [&] {
                                                         ++hsm_probes;
                                                         return absl::OkStatus();
                                                       },
                                                       .store = [&] { return store; },
                                                       .redis = [] { return absl::OkStatus(); }},
                                          5s))
                  .ok());
  s.StartWithoutThread();
  store = absl::UnavailableError("down");
  s.RunDue();
  EXPECT_EQ(hsm_probes, 0);  // nothing before the first interval
  EXPECT_FALSE(health.Snapshot().degraded);
  clock_.Advance(5s);
  s.RunDue();
  EXPECT_EQ(hsm_probes, 1);
  EXPECT_TRUE(health.Snapshot().degraded);
  EXPECT_FALSE(health.Snapshot().Find(Backend::kStore)->up);
  // The job's own status says which backend is down.
  ASSERT_EQ(s.Jobs().size(), 1u);
  EXPECT_THAT(std::string(s.Jobs()[0].last_result.message()), HasSubstr("store"));

  store = absl::OkStatus();
  clock_.Advance(5s);
  s.RunDue();
  EXPECT_FALSE(health.Snapshot().degraded);
  EXPECT_TRUE(s.Jobs()[0].last_result.ok());
  s.Stop();
}

}  // namespace
}  // namespace kms::sched
