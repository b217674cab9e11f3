// Injected time, so TTLs, schedules and state machines are tested by advancing a clock
// (tests use tests/test_common/simulated_clock.h).
#pragma once

#include <chrono>
#include <cstdint>

namespace kms {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic time, for TTLs and timeouts.
  virtual std::chrono::steady_clock::time_point Now() const = 0;
  // Wall-clock time in Unix seconds, for stored timestamps.
  virtual int64_t UnixSeconds() const = 0;
};

class RealClock final : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::now();
  }
  int64_t UnixSeconds() const override;
  static RealClock& Instance();
};

}  // namespace kms
