// Injected time, so TTLs, schedules and state machines are tested by advancing a clock.
#pragma once

#include <atomic>
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

// A clock that moves only when told to. Thread-safe.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(int64_t unix_seconds = 1'700'000'000) : unix_ns_(unix_seconds * 1'000'000'000) {}
  std::chrono::steady_clock::time_point Now() const override {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(unix_ns_.load()));
  }
  int64_t UnixSeconds() const override { return unix_ns_.load() / 1'000'000'000; }
  void Advance(std::chrono::nanoseconds d) { unix_ns_ += d.count(); }

 private:
  std::atomic<int64_t> unix_ns_;
};

}  // namespace kms
