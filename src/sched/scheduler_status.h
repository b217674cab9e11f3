// What the scheduler tells the status RPC (and later the metrics) about this replica's
// coherence loop and its jobs: a narrow read-only view, so the edge needs nothing else
// of the scheduler.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kms/common/status.h"

namespace kms::sched {

// One job's record. Times: `*_unix` are wall-clock Unix seconds from the injected Clock
// (0: never); `next_due` is on that Clock's monotonic line (compare with Clock::Now()).
struct JobStatus {
  std::string name;
  std::chrono::milliseconds interval{0};
  bool leader_only = false;
  int64_t runs = 0;                  // runs finished, whatever their result
  int64_t last_run_unix = 0;         // when the last run finished
  absl::Status last_result;          // of the last run (OK before the first)
  int64_t last_success_unix = 0;     // when a run last returned OK
  int64_t consecutive_failures = 0;  // runs that failed since the last OK
  int64_t failing_since_unix = 0;    // the first of those failures (0 when none):
                                     // the job's work is overdue since then
  std::chrono::steady_clock::time_point next_due;
  // A leader-only job that is due but held because this replica does not lead.
  bool waiting_for_leadership = false;
};

// Thread-safe.
class SchedulerStatus {
 public:
  virtual ~SchedulerStatus() = default;
  virtual bool is_leader() const = 0;
  // Whether an invalidation bus (Redis) is configured, and whether it is connected.
  virtual bool has_bus() const = 0;
  virtual bool bus_healthy() const = 0;
  // The store epoch seen last (-1 before the first successful read).
  virtual int64_t last_epoch() const = 0;
  // In the order the jobs were added.
  virtual std::vector<JobStatus> Jobs() const = 0;
};

}  // namespace kms::sched
