#include "src/keys/backend_executor.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kms::keys {

std::optional<int64_t> RetryAfterOf(const absl::Status& status) {
  auto payload = status.GetPayload(kRetryAfterPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  int64_t ms = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &ms)) return std::nullopt;
  return ms;
}

bool IsHung(const absl::Status& status) {
  return status.GetPayload(kHungPayloadUrl).has_value();
}

std::string_view CircuitStateName(CircuitState state) {
  switch (state) {
    case CircuitState::kClosed:
      return "closed";
    case CircuitState::kOpen:
      return "open";
    case CircuitState::kHalfOpen:
      return "half-open";
  }
  return "unknown";
}

BackendExecutor::BackendExecutor(BackendExecutorOptions options)
    : options_(std::move(options)), open_for_(options_.open_initial) {
  const int threads = std::max(1, options_.threads);
  workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Worker(); });
}

BackendExecutor::~BackendExecutor() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  probe_cv_.notify_all();
  if (prober_.joinable()) prober_.join();
  for (std::thread& t : workers_) t.join();
}

void BackendExecutor::SetProbe(std::function<absl::Status()> probe) {
  probe_ = std::move(probe);
  prober_ = std::thread([this] { Prober(); });
}

void BackendExecutor::Prober() {
  using Clock = std::chrono::steady_clock;
  MutexLock lock(&mu_);
  while (!stopping_) {
    if (state_ != CircuitState::kOpen) {
      mu_.Await(probe_cv_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || state_ == CircuitState::kOpen;
      });
      continue;
    }
    if (Clock::now() < open_until_) {
      mu_.WaitUntil(probe_cv_, open_until_);
      continue;
    }
    state_ = CircuitState::kHalfOpen;
    probe_in_flight_ = true;
    lock.Unlock();
    auto pending = std::make_shared<Pending<absl::Status>>();
    const bool queued = Enqueue([pending, probe = probe_] { pending->Set(probe()); });
    if (!queued) {
      (void)QueueFull();
    } else if (std::optional<absl::Status> result =
                   pending->Take(Clock::now() + options_.call_timeout);
               !result.has_value()) {
      (void)TimedOut();
    } else {
      Record(*result);
    }
    lock.Lock();
  }
}

void BackendExecutor::Worker() {
  MutexLock lock(&mu_);
  for (;;) {
    mu_.Await(work_cv_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || !queue_.empty();
    });
    if (queue_.empty()) return;  // stopping, nothing left
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    ++busy_;
    lock.Unlock();
    task();
    task = nullptr;  // drop what it captured outside the lock
    lock.Lock();
    --busy_;
  }
}

absl::Status BackendExecutor::FastFail() const {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      open_until_ - std::chrono::steady_clock::now());
  const int64_t retry_ms = std::max<int64_t>(left.count(), 50);
  absl::Status s = absl::UnavailableError(
      absl::StrCat(options_.name, " is down (", hung_ ? "hung: " : "", last_failure_,
                   "); failing fast, retry after ", retry_ms, " ms"));
  s.SetPayload(kRetryAfterPayloadUrl, absl::Cord(absl::StrCat(retry_ms)));
  if (hung_) s.SetPayload(kHungPayloadUrl, absl::Cord("1"));
  return s;
}

absl::Status BackendExecutor::Admit() {
  MutexLock lock(&mu_);
  switch (state_) {
    case CircuitState::kClosed:
      return absl::OkStatus();
    case CircuitState::kOpen:
      // With a prober, requests never probe: they fail fast until it closes the circuit.
      if (probe_ || std::chrono::steady_clock::now() < open_until_) {
        ++rejected_;
        return FastFail();
      }
      state_ = CircuitState::kHalfOpen;
      probe_in_flight_ = true;
      return absl::OkStatus();  // this call is the probe
    case CircuitState::kHalfOpen:
      if (!probe_in_flight_) {
        probe_in_flight_ = true;
        return absl::OkStatus();
      }
      ++rejected_;
      return FastFail();
  }
  return absl::OkStatus();
}

bool BackendExecutor::Enqueue(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    // Every worker busy and the queue full: the backend is not keeping up (or hung).
    if (queue_.size() >= options_.max_queue) return false;
    queue_.push_back(std::move(task));
  }
  work_cv_.notify_one();
  return true;
}

bool BackendExecutor::Failed(std::string what, bool hung) {
  last_failure_ = std::move(what);
  hung_ = hung;
  ++consecutive_failures_;
  const bool probe_failed = state_ == CircuitState::kHalfOpen;
  const bool was_closed = state_ == CircuitState::kClosed;
  if (state_ == CircuitState::kClosed && !hung && consecutive_failures_ < options_.failures_to_open) {
    return false;
  }
  if (probe_failed) {
    open_for_ = std::min(open_for_ * 2, options_.open_max);
  } else if (state_ == CircuitState::kClosed) {
    open_for_ = options_.open_initial;
    ++opened_;
    spdlog::warn("{}: circuit opened ({}{}); uncached requests fail fast", options_.name,
                 hung ? "hung: " : "", last_failure_);
  }
  state_ = CircuitState::kOpen;
  probe_in_flight_ = false;
  open_until_ = std::chrono::steady_clock::now() + open_for_;
  probe_cv_.notify_all();
  return was_closed;
}

absl::Status BackendExecutor::QueueFull() {
  absl::Status s;
  bool opened = false;
  {
    MutexLock lock(&mu_);
    ++rejected_;
    opened = Failed("every worker busy and the queue full", true);
    s = FastFail();
  }
  if (opened) Notify(s);
  return s;
}

absl::Status BackendExecutor::TimedOut() {
  absl::Status s = absl::UnavailableError(absl::StrCat(
      options_.name, " did not answer within ", options_.call_timeout.count(), " ms"));
  s.SetPayload(kHungPayloadUrl, absl::Cord("1"));
  bool opened = false;
  {
    MutexLock lock(&mu_);
    ++timeouts_;
    opened = Failed(absl::StrCat("no answer within ", options_.call_timeout.count(), " ms"), true);
    s.SetPayload(kRetryAfterPayloadUrl, absl::Cord(absl::StrCat(open_for_.count())));
  }
  if (opened) Notify(s);
  return s;
}

void BackendExecutor::Record(const absl::Status& result) {
  bool opened = false;
  bool closed = false;
  {
    MutexLock lock(&mu_);
    if (absl::IsUnavailable(result) || absl::IsDeadlineExceeded(result)) {
      opened = Failed(absl::StatusCodeToString(result.code()), false);
    } else {
      if (state_ != CircuitState::kClosed) {
        spdlog::info("{}: circuit closed (the backend answers again)", options_.name);
        closed = true;
      }
      state_ = CircuitState::kClosed;
      probe_in_flight_ = false;
      consecutive_failures_ = 0;
      hung_ = false;
      open_for_ = options_.open_initial;
    }
  }
  if (opened) Notify(absl::UnavailableError(absl::StrCat(options_.name, " is down")));
  if (closed) Notify(absl::OkStatus());
}

BackendExecutorStatus BackendExecutor::status() const {
  MutexLock lock(&mu_);
  return BackendExecutorStatus{.state = state_,
                               .hung = hung_ && state_ != CircuitState::kClosed,
                               .busy_workers = busy_,
                               .last_failure = last_failure_,
                               .timeouts = timeouts_,
                               .rejected = rejected_,
                               .opened = opened_};
}

}  // namespace kms::keys
