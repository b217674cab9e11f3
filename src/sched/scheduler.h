// Scheduler: the background loop that keeps one replica coherent with the others and
// runs the periodic jobs, on the injected Clock.
//
// - Store epoch poll (every poll_interval): when the epoch moved since the last read,
//   one full invalidation (kAll) goes to the sink: every cached DEK is dropped and KEKs
//   are re-read. This alone keeps replicas correct. A failed read changes nothing (the
//   store is down: keep serving from cache); a store that was down at start has no
//   baseline, so its first successful read invalidates everything.
// - Invalidation bus (Redis, optional): another replica's change reaches this one in
//   well under a second; events go to the sink on the bus's own thread, as they come.
// - Leadership: TryLead every leader_interval (first at start); leader-only jobs run
//   only while this replica leads (PostgreSQL advisory lock; with SQLite the node
//   always leads: AlwaysLeader).
// - Jobs (job.h): each runs one interval after the start, then one interval after its
//   previous run ended.
//
// Time: RunDue() does, on the calling thread, all the work that is due at the Clock's
// current time and returns when the next work is due. The thread of Start() only calls
// RunDue() and waits (a condition variable with a real timeout) until that time, Stop()
// or Trigger(). Tests use StartWithoutThread() and call RunDue() after advancing a
// simulated clock: nothing sleeps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kms/common/clock.h"
#include "kms/coord/coordination.h"
#include "src/common/sync.h"
#include "src/sched/job.h"
#include "src/sched/scheduler_status.h"

namespace kms::sched {

// The store's change epoch: the one thing of the store the scheduler reads.
class EpochSource {
 public:
  virtual ~EpochSource() = default;
  // A number that moves whenever shared key state changes. UNAVAILABLE (or any error)
  // while the store cannot be read.
  virtual absl::StatusOr<int64_t> GetEpoch() = 0;
};

// Where invalidations land (the key manager's caches). Called from the scheduler's
// thread and from the bus's thread, possibly at once: must be thread-safe and must not
// block for long.
class InvalidationSink {
 public:
  virtual ~InvalidationSink() = default;
  virtual void ApplyInvalidation(const coord::InvalidationEvent& event) = 0;
};

// The single node of an embedded store always leads.
class AlwaysLeader final : public coord::LeaderElection {
 public:
  absl::StatusOr<bool> TryLead() override { return true; }
  bool is_leader() const override { return true; }
  void Resign() override {}
};

// Thread-safe, except that AddJob comes before the start.
class Scheduler final : public SchedulerStatus {
 public:
  struct Options {
    std::chrono::milliseconds poll_interval{10000};
    std::chrono::milliseconds leader_interval{2000};
  };

  // `bus` may be null (no Redis). Every reference must outlive the Scheduler.
  Scheduler(const Clock& clock, EpochSource& epoch, InvalidationSink& sink,
            coord::InvalidationBus* bus, coord::LeaderElection& leader, Options options);
  ~Scheduler() override;  // Stop()s

  // Adds a job (before the start). INVALID_ARGUMENT for a duplicate or empty name or an
  // interval that is not positive; FAILED_PRECONDITION after the start.
  absl::Status AddJob(std::unique_ptr<Job> job);

  // Reads the epoch baseline, starts the bus, schedules every job one interval from now
  // and starts the thread. Only the first call (before Stop()) does anything.
  void Start();
  // The same without the thread: the caller drives RunDue().
  void StartWithoutThread();
  // Wakes and joins the thread (a job running finishes first), stops the bus and resigns
  // leadership. Idempotent.
  void Stop();

  // Does all the work due at clock.Now(): leadership check, epoch poll, the due jobs (in
  // the order added). Returns the Clock time at which work is next due. Calls are
  // serialized; job bodies run without the status lock held.
  std::chrono::steady_clock::time_point RunDue();

  // Makes the named job due now and wakes the thread (e.g. a re-wrap after a manual KEK
  // rotation). NOT_FOUND for an unknown name. A leader-only job still waits for leadership.
  absl::Status Trigger(std::string_view name);

  // Tells the other replicas about a change this node made (best effort: a failure is
  // logged, and the others see the change at their next epoch poll).
  void Publish(const coord::InvalidationEvent& event);

  // SchedulerStatus.
  bool is_leader() const override { return leader_.is_leader(); }
  bool has_bus() const override { return bus_ != nullptr; }
  bool bus_healthy() const override { return bus_ != nullptr && bus_->healthy(); }
  int64_t last_epoch() const override;
  std::vector<JobStatus> Jobs() const override;

 private:
  struct Entry {
    std::unique_ptr<Job> job;
    JobStatus status;
    bool triggered = false;  // Trigger() since the current run began: due again at its end
  };
  using TimePoint = std::chrono::steady_clock::time_point;

  bool Begin();  // false when already started (or stopped)
  void Loop();
  void PollEpoch();
  // The earliest time work is due; held leader-only jobs count only while leading.
  TimePoint NextDueLocked(bool leader) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  EpochSource& epoch_;
  InvalidationSink& sink_;
  coord::InvalidationBus* const bus_;
  coord::LeaderElection& leader_;
  const Options options_;

  Mutex run_mu_;  // serializes RunDue(); taken before mu_
  TimePoint next_poll_ ABSL_GUARDED_BY(run_mu_);
  TimePoint next_lead_ ABSL_GUARDED_BY(run_mu_);

  mutable Mutex mu_;
  std::condition_variable cv_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;  // Trigger() since the thread last waited
  int64_t last_epoch_ ABSL_GUARDED_BY(mu_) = -1;
  // Entries are added before the start and never removed; a job's body is called only
  // from RunDue(), under run_mu_.
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace kms::sched
