// Coordination between replicas: invalidation events, global rate limits, and the
// scheduler's leader. Correctness never depends on these: the store's epoch and its
// compare-and-set are the truth; these make replicas converge faster and waste less.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::coord {

struct InvalidationEvent {
  enum class Kind {
    kTenant,  // a tenant's DEKs or state changed (created, rotated, shredded)
    kKek,     // a KEK version was created or retired
    kJwt,     // the JWT signing keys changed
    kAll,     // drop everything cached
  };
  Kind kind = Kind::kAll;
  std::string tenant_id;  // for kTenant
  std::string origin;     // node id of the publisher (a node ignores its own events)
};

// Thread-safe. Publish never blocks for long (a down bus fails fast); handlers run on
// the bus's own thread and must not block.
class InvalidationBus {
 public:
  virtual ~InvalidationBus() = default;
  virtual absl::Status Publish(const InvalidationEvent& event) = 0;
  // Sets the one handler (before Start()).
  virtual void OnEvent(std::function<void(const InvalidationEvent&)> handler) = 0;
  // Also called (with kAll) after a reconnect, since events may have been missed.
  virtual void Start() = 0;
  virtual void Stop() = 0;
  virtual bool healthy() const = 0;
};

// A token bucket per identity. Thread-safe.
class RateLimiter {
 public:
  virtual ~RateLimiter() = default;
  // OK when the identity may make one more request now; else RESOURCE_EXHAUSTED whose
  // message says when to retry ("rate limit exceeded; retry after 120 ms").
  virtual absl::Status Acquire(std::string_view identity, double rate_per_second, double burst) = 0;
};

// Who runs the periodic jobs. Thread-safe.
class LeaderElection {
 public:
  virtual ~LeaderElection() = default;
  // Tries to become (or stay) leader; returns whether this node leads now. Called
  // periodically; losing the backend connection loses leadership.
  virtual absl::StatusOr<bool> TryLead() = 0;
  virtual bool is_leader() const = 0;
  virtual void Resign() = 0;
};

}  // namespace kms::coord
