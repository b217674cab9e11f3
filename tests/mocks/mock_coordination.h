// gMock doubles of the coordination seams (include/kms/coord/coordination.h):
// MockInvalidationBus, MockRateLimiter, MockLeaderElection.
#pragma once

#include <functional>
#include <string_view>

#include "gmock/gmock.h"
#include "kms/coord/coordination.h"

namespace kms::testing {

class MockInvalidationBus : public coord::InvalidationBus {
 public:
  MOCK_METHOD(absl::Status, Publish, (const coord::InvalidationEvent& event), (override));
  MOCK_METHOD(void, OnEvent, (std::function<void(const coord::InvalidationEvent&)> handler),
              (override));
  MOCK_METHOD(void, Start, (), (override));
  MOCK_METHOD(void, Stop, (), (override));
  MOCK_METHOD(bool, healthy, (), (const, override));
};

class MockRateLimiter : public coord::RateLimiter {
 public:
  MOCK_METHOD(absl::Status, Acquire,
              (std::string_view identity, double rate_per_second, double burst), (override));
};

class MockLeaderElection : public coord::LeaderElection {
 public:
  MOCK_METHOD(absl::StatusOr<bool>, TryLead, (), (override));
  MOCK_METHOD(bool, is_leader, (), (const, override));
  MOCK_METHOD(void, Resign, (), (override));
};

// Matches an InvalidationEvent of `kind` (and, for kTenant, of `tenant_id`).
MATCHER_P2(InvalidationOf, kind, tenant_id, "") {
  return arg.kind == kind && arg.tenant_id == tenant_id;
}

}  // namespace kms::testing
