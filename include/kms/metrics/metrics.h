// The metrics seam: the instruments a module updates (Counter, Gauge, Histogram) and the
// Registry it gets them from. Header-only, so that a domain module can count without
// linking the exposition code (src/metrics) or knowing the server; the wiring
// (src/server/server.cc) owns the one registry and hands instruments out.
//
// Hot path: updating an instrument is one or two relaxed atomic operations; no lock, no
// allocation. Registering one takes the registry's lock and happens at start-up.
//
// Names follow Prometheus conventions (https://prometheus.io/docs/practices/naming/):
// the `kmsd_` prefix, base units (seconds, bytes), `_total` on counters, `_seconds` on
// durations. Label values must come from a small, fixed set (method names, backend
// names, states): never a tenant id, an identity or anything a caller chooses.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kms::metrics {

// Label name → value. The registry sorts them by name; order here does not matter.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonic count (Prometheus counter). Thread-safe, lock-free.
class Counter {
 public:
  void Increment(uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (Prometheus gauge). Thread-safe, lock-free.
class Gauge {
 public:
  void Set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void Add(double d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  double Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A distribution over fixed buckets (Prometheus histogram): one atomic count per bucket,
// the +Inf bucket included, and an atomic sum. Thread-safe, lock-free. The bounds are
// the buckets' inclusive upper limits ("le"), strictly increasing, +Inf implied.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds)
      : bounds_(std::move(upper_bounds)), buckets_(bounds_.size() + 1) {}

  void Observe(double v) noexcept {
    // First bound >= v; past the last bound it is the +Inf bucket. NaN goes to +Inf.
    const size_t i = static_cast<size_t>(
        std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(v, std::memory_order_relaxed);
  }

  // A consistent-enough copy for exposition: cumulative counts per bound then +Inf (so
  // `cumulative.back()` is the count). Concurrent observations may land in the sum and
  // not yet in a bucket, never the other way round in a way that breaks monotonicity.
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // size upper_bounds.size() + 1
    double sum = 0;
    uint64_t count() const { return cumulative.empty() ? 0 : cumulative.back(); }
  };
  Snapshot Read() const {
    Snapshot s{bounds_, std::vector<uint64_t>(buckets_.size()), 0};
    uint64_t running = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      running += buckets_[i].load(std::memory_order_relaxed);
      s.cumulative[i] = running;
    }
    s.sum = sum_.load(std::memory_order_relaxed);
    return s;
  }
  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> buckets_;
  std::atomic<double> sum_{0};
};

// Latency buckets for RPCs, in seconds: 100 µs to 10 s.
inline std::vector<double> LatencyBucketsSeconds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
}

// Where instruments come from. Implemented by src/metrics (MetricRegistry), owned by the
// wiring. Registering the same name and labels twice returns the same instrument. A
// name or label that breaks the Prometheus rules, or one name registered with two
// types, is a programming error (the process aborts with a message): names are
// literals in the code, never input. Returned references live as long as the registry.
// Thread-safe.
class Registry {
 public:
  virtual ~Registry() = default;
  virtual Counter& AddCounter(std::string_view name, std::string_view help, Labels labels = {}) = 0;
  virtual Gauge& AddGauge(std::string_view name, std::string_view help, Labels labels = {}) = 0;
  virtual Histogram& AddHistogram(std::string_view name, std::string_view help, Labels labels,
                                  std::vector<double> upper_bounds) = 0;
  // Series read at scrape time from a module's own state (a cache size, a key's age).
  // `read` runs on the scraping thread, must be quick and must not block on I/O.
  virtual void AddGaugeFunction(std::string_view name, std::string_view help, Labels labels,
                                std::function<double()> read) = 0;
  virtual void AddCounterFunction(std::string_view name, std::string_view help, Labels labels,
                                  std::function<uint64_t()> read) = 0;
};

}  // namespace kms::metrics
