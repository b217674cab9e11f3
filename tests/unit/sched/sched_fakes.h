// Doubles for the scheduler's seams, and the one include of the simulated clock for the
// tests of src/sched.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tests/test_common/simulated_clock.h"
#include "kms/coord/coordination.h"
#include "src/common/sync.h"
#include "src/sched/scheduler.h"

namespace kms::testing {

// An epoch the test sets, or an error (the store is down).
class FakeEpochSource final : public sched::EpochSource {
 public:
  absl::StatusOr<int64_t> GetEpoch() override {
    MutexLock lock(&mu_);
    ++reads_;
    if (!status_.ok()) return status_;
    return epoch_;
  }
  void Set(int64_t epoch) {
    MutexLock lock(&mu_);
    epoch_ = epoch;
    status_ = absl::OkStatus();
  }
  void Fail(absl::Status status) {
    MutexLock lock(&mu_);
    status_ = std::move(status);
  }
  int reads() const {
    MutexLock lock(&mu_);
    return reads_;
  }

 private:
  mutable Mutex mu_;
  int64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int reads_ ABSL_GUARDED_BY(mu_) = 0;
};

// Records every invalidation it is given.
class RecordingSink final : public sched::InvalidationSink {
 public:
  void ApplyInvalidation(const coord::InvalidationEvent& event) override {
    MutexLock lock(&mu_);
    events_.push_back(event);
  }
  std::vector<coord::InvalidationEvent> events() const {
    MutexLock lock(&mu_);
    return events_;
  }
  int count(coord::InvalidationEvent::Kind kind) const {
    MutexLock lock(&mu_);
    int n = 0;
    for (const auto& e : events_) n += e.kind == kind ? 1 : 0;
    return n;
  }

 private:
  mutable Mutex mu_;
  std::vector<coord::InvalidationEvent> events_ ABSL_GUARDED_BY(mu_);
};

// A bus the test drives: Deliver() plays an event from another replica.
class FakeBus final : public coord::InvalidationBus {
 public:
  absl::Status Publish(const coord::InvalidationEvent& event) override {
    MutexLock lock(&mu_);
    published_.push_back(event);
    return publish_status_;
  }
  void OnEvent(std::function<void(const coord::InvalidationEvent&)> handler) override {
    MutexLock lock(&mu_);
    handler_ = std::move(handler);
  }
  void Start() override {
    MutexLock lock(&mu_);
    started_ = true;
  }
  void Stop() override {
    MutexLock lock(&mu_);
    stopped_ = true;
  }
  bool healthy() const override {
    MutexLock lock(&mu_);
    return healthy_;
  }

  void Deliver(const coord::InvalidationEvent& event) {
    std::function<void(const coord::InvalidationEvent&)> handler;
    {
      MutexLock lock(&mu_);
      handler = handler_;
    }
    if (handler) handler(event);
  }
  void set_healthy(bool healthy) {
    MutexLock lock(&mu_);
    healthy_ = healthy;
  }
  void set_publish_status(absl::Status status) {
    MutexLock lock(&mu_);
    publish_status_ = std::move(status);
  }
  std::vector<coord::InvalidationEvent> published() const {
    MutexLock lock(&mu_);
    return published_;
  }
  bool started() const {
    MutexLock lock(&mu_);
    return started_;
  }
  bool stopped() const {
    MutexLock lock(&mu_);
    return stopped_;
  }

 private:
  mutable Mutex mu_;
  std::function<void(const coord::InvalidationEvent&)> handler_ ABSL_GUARDED_BY(mu_);
  std::vector<coord::InvalidationEvent> published_ ABSL_GUARDED_BY(mu_);
  absl::Status publish_status_ ABSL_GUARDED_BY(mu_);
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

// Leadership as the test decides: TryLead() takes it when `available`, loses it otherwise.
class FakeLeader final : public coord::LeaderElection {
 public:
  absl::StatusOr<bool> TryLead() override {
    MutexLock lock(&mu_);
    ++tries_;
    leader_ = available_;
    return leader_;
  }
  bool is_leader() const override {
    MutexLock lock(&mu_);
    return leader_;
  }
  void Resign() override {
    MutexLock lock(&mu_);
    leader_ = false;
    ++resigns_;
  }
  void set_available(bool available) {
    MutexLock lock(&mu_);
    available_ = available;
  }
  int tries() const {
    MutexLock lock(&mu_);
    return tries_;
  }
  int resigns() const {
    MutexLock lock(&mu_);
    return resigns_;
  }

 private:
  mutable Mutex mu_;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  bool leader_ ABSL_GUARDED_BY(mu_) = false;
  int tries_ ABSL_GUARDED_BY(mu_) = 0;
  int resigns_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kms::testing
