// SimulatedClock: a kms::Clock for tests that moves only when told to.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "kms/common/clock.h"

namespace kms::testing {

// Now() and UnixSeconds() read one counter, starting at `unix_seconds` (both clocks show
// the same instant), that only Advance moves. Thread-safe.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(int64_t unix_seconds = 1'700'000'000)
      : unix_ns_(unix_seconds * 1'000'000'000) {}
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(unix_ns_.load()));
  }
  int64_t UnixSeconds() const override { return unix_ns_.load() / 1'000'000'000; }
  void Advance(std::chrono::nanoseconds d) { unix_ns_ += d.count(); }

 private:
  std::atomic<int64_t> unix_ns_;
};

}  // namespace kms::testing
