// MockClock: gMock double of the Clock seam (include/kms/common/clock.h), for a test
// that asserts when time is read. To move time, use SimulatedClock instead.
#pragma once

#include <chrono>
#include <cstdint>

#include "gmock/gmock.h"
#include "kms/common/clock.h"

namespace kms::testing {

class MockClock : public Clock {
 public:
  MOCK_METHOD(std::chrono::steady_clock::time_point, Now, (), (const, override));
  MOCK_METHOD(int64_t, UnixSeconds, (), (const, override));
};

}  // namespace kms::testing
