// BackendExecutor: deadlines, the circuit (open, fail fast with a retry hint, half-open
// probe, close) and that a stuck call holds a worker, never the caller.
#include "src/keys/backend_executor.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace kms::keys {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

BackendExecutorOptions Options() {
  return BackendExecutorOptions{.name = "store",
                                .threads = 2,
                                .max_queue = 4,
                                .call_timeout = milliseconds(200),
                                .failures_to_open = 2,
                                .open_initial = milliseconds(100),
                                .open_max = milliseconds(400)};
}

int64_t MsSince(steady_clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - t).count();
}

TEST(BackendExecutorTest, RunsTheCallAndReturnsItsResult) {
  BackendExecutor exec(Options());
  absl::StatusOr<int> r = exec.Run<absl::StatusOr<int>>([] { return absl::StatusOr<int>(42); });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 42);
  EXPECT_TRUE(absl::IsNotFound(exec.Run<absl::Status>([] { return absl::NotFoundError("x"); })));
  // Answers of a working backend leave the circuit closed.
  EXPECT_EQ(exec.status().state, CircuitState::kClosed);
}

TEST(BackendExecutorTest, AHungCallCostsTheCallerItsDeadlineAndOpensTheCircuit) {
  // Declared before the executor: its workers (still inside the hung call until it is
  // released) are joined when it is destroyed, after everything declared later.
  std::atomic<bool> release{false};
  std::atomic<int> ran{0};
  BackendExecutor exec(Options());
  const auto started = steady_clock::now();
  absl::Status s = exec.Run<absl::Status>([&release] {
    while (!release.load()) std::this_thread::sleep_for(milliseconds(5));
    return absl::OkStatus();
  });
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_GE(MsSince(started), 150);
  EXPECT_LT(MsSince(started), 1000);
  BackendExecutorStatus st = exec.status();
  EXPECT_EQ(st.state, CircuitState::kOpen);
  EXPECT_TRUE(st.hung);
  EXPECT_EQ(st.busy_workers, 1);  // the worker, not the caller, is stuck
  // While open: fail fast, with a retry hint, without running the call.
  const auto fast = steady_clock::now();
  absl::Status rejected = exec.Run<absl::Status>([&ran] {
    ++ran;
    return absl::OkStatus();
  });
  EXPECT_TRUE(absl::IsUnavailable(rejected));
  EXPECT_LT(MsSince(fast), 50);
  EXPECT_EQ(ran.load(), 0);
  ASSERT_TRUE(RetryAfterOf(rejected).has_value());
  EXPECT_GT(*RetryAfterOf(rejected), 0);
  release = true;
}

TEST(BackendExecutorTest, OpensAfterConsecutiveUnavailableAndClosesOnAProbe) {
  std::atomic<bool> down{true};
  std::atomic<int> calls{0};
  BackendExecutor exec(Options());
  auto call = [&] {
    return exec.Run<absl::Status>([&] {
      ++calls;
      return down.load() ? absl::UnavailableError("connection refused") : absl::OkStatus();
    });
  };
  EXPECT_TRUE(absl::IsUnavailable(call()));
  EXPECT_EQ(exec.status().state, CircuitState::kClosed);  // one failure is not an outage
  EXPECT_TRUE(absl::IsUnavailable(call()));
  EXPECT_EQ(exec.status().state, CircuitState::kOpen);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_TRUE(absl::IsUnavailable(call()));  // fast
  EXPECT_EQ(calls.load(), 2);
  // After the open period the next call is the probe; still down: open again (longer).
  std::this_thread::sleep_for(milliseconds(120));
  EXPECT_TRUE(absl::IsUnavailable(call()));
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(exec.status().state, CircuitState::kOpen);
  // Back: the next probe closes the circuit, everything goes through again.
  down = false;
  std::this_thread::sleep_for(milliseconds(450));
  EXPECT_TRUE(call().ok());
  EXPECT_EQ(exec.status().state, CircuitState::kClosed);
  EXPECT_TRUE(call().ok());
  EXPECT_EQ(calls.load(), 5);
}

TEST(BackendExecutorTest, AFullQueueFailsFastInsteadOfWaiting) {
  BackendExecutorOptions o = Options();
  o.threads = 1;
  o.max_queue = 1;
  o.call_timeout = milliseconds(5000);
  std::atomic<bool> release{false};
  BackendExecutor exec(o);
  auto hang = [&release] {
    while (!release.load()) std::this_thread::sleep_for(milliseconds(5));
    return absl::OkStatus();
  };
  std::thread a([&] { (void)exec.Run<absl::Status>(hang); });  // holds the one worker
  std::this_thread::sleep_for(milliseconds(50));
  std::thread b([&] { (void)exec.Run<absl::Status>(hang); });  // fills the queue
  std::this_thread::sleep_for(milliseconds(50));
  const auto started = steady_clock::now();
  EXPECT_TRUE(absl::IsUnavailable(exec.Run<absl::Status>(hang)));
  EXPECT_LT(MsSince(started), 500);
  release = true;
  a.join();
  b.join();
}

TEST(BackendExecutorTest, WithAProbeNoRequestEverProbesAHungBackend) {
  std::atomic<bool> hung{true};
  std::atomic<int> probes{0};
  BackendExecutor exec(Options());
  exec.SetProbe([&] {
    ++probes;
    while (hung.load()) std::this_thread::sleep_for(milliseconds(5));
    return absl::OkStatus();
  });
  auto hang = [&hung] {
    while (hung.load()) std::this_thread::sleep_for(milliseconds(5));
    return absl::OkStatus();
  };
  EXPECT_TRUE(absl::IsUnavailable(exec.Run<absl::Status>(hang)));  // pays the deadline once
  // Open: for longer than several open periods, every request fails fast; the prober
  // alone waits on the backend.
  const auto until = steady_clock::now() + milliseconds(600);
  int64_t slowest = 0;
  while (steady_clock::now() < until) {
    const auto started = steady_clock::now();
    EXPECT_TRUE(absl::IsUnavailable(exec.Run<absl::Status>(hang)));
    slowest = std::max<int64_t>(slowest, MsSince(started));
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_LT(slowest, 50);
  EXPECT_GE(probes.load(), 1);
  // The backend answers again: the prober closes the circuit by itself.
  hung = false;
  ASSERT_TRUE([&] {
    for (int i = 0; i < 200; ++i) {
      if (exec.status().state == CircuitState::kClosed) return true;
      std::this_thread::sleep_for(milliseconds(10));
    }
    return false;
  }());
  EXPECT_TRUE(exec.Run<absl::Status>(hang).ok());
}

}  // namespace
}  // namespace kms::keys
