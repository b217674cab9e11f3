// BackendExecutor: how every call to a backend (the HSM, the store) is made, so that no
// backend call runs without a deadline and a backend known to be down costs callers
// nothing (DESIGN §7, issue 9).
//
// - A bounded pool of its own per backend (`threads` workers, at most `max_queue` calls
//   waiting): the call runs there, the caller waits for it at most `call_timeout`. A call
//   that does not answer in time is abandoned to its worker (a PKCS#11 or libpq call
//   cannot be cancelled: the worker stays with it, the caller does not) and the caller
//   gets UNAVAILABLE "<backend> did not answer within N ms".
// - A circuit per backend. Closed: calls go through. A timeout, or
//   `failures_to_open` UNAVAILABLE answers in a row, open it: for `open_initial` (doubling
//   up to `open_max` while probes fail) every call fails at once with UNAVAILABLE
//   "<backend> is down ...; retry after N ms", carrying the hint as a status payload
//   (RetryAfterOf) for the door to pass on. Then half-open: the next call is the probe
//   (every other call still fails fast); its success closes the circuit, its failure
//   opens it again. With a probe set (SetProbe: the backend's cheap ping), the executor
//   probes by itself on its own thread and no request is ever the probe (a request never
//   pays a hung backend's deadline once the circuit is open); without one, the next
//   request is the probe.
// - Only UNAVAILABLE and timeouts count as failures: NOT_FOUND, ABORTED, DATA_LOSS ...
//   are answers from a working backend.
//
// The caller's thread only waits: it is never the one stuck in a backend. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "src/common/sync.h"

namespace kms::keys {

// The retry hint an UNAVAILABLE status carries (milliseconds), if any.
inline constexpr absl::string_view kRetryAfterPayloadUrl = "type.kmsd/retry-after-ms";
std::optional<int64_t> RetryAfterOf(const absl::Status& status);

// Whether a status says the backend is hung (a call got no answer by its deadline), as
// opposed to answering with errors: for health details.
inline constexpr absl::string_view kHungPayloadUrl = "type.kmsd/backend-hung";
bool IsHung(const absl::Status& status);

enum class CircuitState { kClosed, kOpen, kHalfOpen };
std::string_view CircuitStateName(CircuitState state);  // "closed", "open", "half-open"

struct BackendExecutorOptions {
  std::string name;  // "hsm", "store": in messages and status
  int threads = 8;
  size_t max_queue = 512;
  std::chrono::milliseconds call_timeout{2000};
  int failures_to_open = 2;
  std::chrono::milliseconds open_initial{200};
  std::chrono::milliseconds open_max{2000};
};

struct BackendExecutorStatus {
  CircuitState state = CircuitState::kClosed;
  bool hung = false;           // the last failure was a call that did not answer in time
  int busy_workers = 0;        // workers inside a call now (stuck ones included)
  std::string last_failure;    // the status code (and "timeout") of the last failure
  uint64_t timeouts = 0;       // calls abandoned at their deadline
  uint64_t rejected = 0;       // calls failed fast (circuit open, or the queue full)
  uint64_t opened = 0;         // times the circuit opened
};

class BackendExecutor {
 public:
  explicit BackendExecutor(BackendExecutorOptions options);
  ~BackendExecutor();  // waits for the workers (their calls must end: backends closed first)
  BackendExecutor(const BackendExecutor&) = delete;
  BackendExecutor& operator=(const BackendExecutor&) = delete;

  // Runs `fn` on the pool with the deadline and the circuit described above. R is
  // absl::Status or absl::StatusOr<T>. `fn` must own everything it reads (it may run on
  // after this returns): capture by value.
  template <typename R>
  R Run(std::function<R()> fn) {
    absl::Status admitted = Admit();
    if (!admitted.ok()) return R(admitted);
    auto pending = std::make_shared<Pending<R>>();
    const bool queued = Enqueue([pending, fn = std::move(fn)] { pending->Set(fn()); });
    if (!queued) return R(QueueFull());
    std::optional<R> result = pending->Take(std::chrono::steady_clock::now() + options_.call_timeout);
    if (!result.has_value()) return R(TimedOut());
    Record(StatusOf(*result));
    return std::move(*result);
  }

  BackendExecutorStatus status() const;
  // The half-open probe (a ping of the backend), run by the executor itself. Set before
  // the first Run.
  void SetProbe(std::function<absl::Status()> probe);

  // Called when the circuit opens (with the failure: UNAVAILABLE, IsHung when a call
  // timed out) and when it closes again (OK), outside the executor's lock, on the thread
  // that saw the change. Set before the first Run.
  void SetListener(std::function<void(const absl::Status&)> listener) {
    listener_ = std::move(listener);
  }
  const std::string& name() const { return options_.name; }

 private:
  template <typename R>
  struct Pending {
    Mutex mu;
    std::condition_variable cv;
    std::optional<R> value ABSL_GUARDED_BY(mu);
    void Set(R r) {
      {
        MutexLock lock(&mu);
        value.emplace(std::move(r));
      }
      cv.notify_all();
    }
    std::optional<R> Take(std::chrono::steady_clock::time_point deadline) {
      MutexLock lock(&mu);
      mu.AwaitUntil(cv, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
        return value.has_value();
      });
      return std::move(value);
    }
  };
  static const absl::Status& StatusOf(const absl::Status& s) { return s; }
  template <typename T>
  static const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
    return s.status();
  }

  absl::Status Admit();
  bool Enqueue(std::function<void()> task);
  absl::Status QueueFull();
  absl::Status TimedOut();
  void Record(const absl::Status& result);
  // Returns true when this failure opened a closed circuit.
  bool Failed(std::string what, bool hung) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Notify(const absl::Status& s) const {
    if (listener_) listener_(s);
  }
  absl::Status FastFail() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Worker();
  void Prober();

  const BackendExecutorOptions options_;
  std::function<void(const absl::Status&)> listener_;  // set before use

  mutable Mutex mu_;
  std::condition_variable work_cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  CircuitState state_ ABSL_GUARDED_BY(mu_) = CircuitState::kClosed;
  int consecutive_failures_ ABSL_GUARDED_BY(mu_) = 0;
  bool probe_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point open_until_ ABSL_GUARDED_BY(mu_);
  std::chrono::milliseconds open_for_ ABSL_GUARDED_BY(mu_);
  bool hung_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_failure_ ABSL_GUARDED_BY(mu_);
  uint64_t timeouts_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t rejected_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t opened_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;
  std::function<absl::Status()> probe_;  // set before use
  std::condition_variable probe_cv_;     // the circuit opened, or stopping
  std::thread prober_;
};

}  // namespace kms::keys
