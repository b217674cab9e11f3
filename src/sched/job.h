// A periodic job of the Scheduler: a name, an interval, whether only the leader runs it,
// and a body that says whether its work got done.
//
// Timing (see Scheduler): a job first runs one interval after the scheduler starts, then
// one interval after each run ends, whatever the result (a failure is retried at the
// next interval; a job that wants a faster retry has a shorter interval and decides
// itself whether there is work). A leader-only job is held while this replica does not
// lead and runs as soon as it does, so a replica that takes over runs the overdue work
// at once. Jobs run one at a time on the scheduler's thread: a body may block on I/O
// (store, HSM) but holds up the other jobs and the epoch poll while it does.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::sched {

// What a job learns about the run it is asked to do.
struct JobContext {
  // Whether this replica led when the run started. Leader-only jobs always see true;
  // other jobs may use it to do part of their work only on the leader (the JWT tick
  // refreshes everywhere and rotates only on the leader).
  bool leader = false;
};

class Job {
 public:
  virtual ~Job() = default;
  // Unique among the jobs of one scheduler; names the job in logs, status and metrics.
  virtual std::string_view name() const = 0;
  // Time from the end of one run to the next; read once, when the job is added.
  virtual std::chrono::milliseconds interval() const = 0;
  virtual bool leader_only() const = 0;
  // Does the job's work. OK: done. An error is recorded (JobStatus) and logged, and the
  // job runs again at its next interval; UNAVAILABLE means a backend is down and the
  // work is skipped (the status then shows the job as failing since its first skip,
  // which is how "overdue" work is reported).
  virtual absl::Status Run(const JobContext& context) = 0;
};

// A job whose body is a function (for small jobs and tests).
std::unique_ptr<Job> MakeJob(std::string name, std::chrono::milliseconds interval, bool leader_only,
                             std::function<absl::Status(const JobContext&)> body);

}  // namespace kms::sched
