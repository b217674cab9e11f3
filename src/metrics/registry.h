// MetricRegistry: the one registry of a kmsd process (kms/metrics/metrics.h) and its
// Prometheus text exposition, format version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/):
//
//   # HELP <name> <help, with \ and newline escaped>
//   # TYPE <name> counter|gauge|histogram
//   <name>{<label>="<value, with \ " and newline escaped>",...} <value>
//
// Families come out sorted by name, series within a family sorted by their labels, and
// labels sorted by name (a histogram's `le` last), so two scrapes of the same state are
// byte-identical. A histogram writes `<name>_bucket{...,le="<bound>"}` for every bound
// and `le="+Inf"`, cumulative, then `<name>_sum` and `<name>_count` (equal to +Inf).
// Values: integers as integers, others in the shortest form that reads back exactly,
// `+Inf`, `-Inf`, `NaN`.
//
// Thread-safe: instruments update lock-free; registration and WriteText take a mutex
// (WriteText calls the function-backed series with it held, so those must not register).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kms/metrics/metrics.h"
#include "src/common/sync.h"

namespace kms::metrics {

// Exposition escaping (exposed for tests): HELP text escapes `\` and newline; label
// values escape `\`, `"` and newline.
std::string EscapeHelp(std::string_view help);
std::string EscapeLabelValue(std::string_view value);
// A sample value as the text format writes it.
std::string FormatValue(double v);
// Whether `name` is a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*) / label name
// ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__").
bool IsValidMetricName(std::string_view name);
bool IsValidLabelName(std::string_view name);

class MetricRegistry final : public Registry {
 public:
  MetricRegistry() = default;
  MetricRegistry(const MetricRegistry&) = delete;
  MetricRegistry& operator=(const MetricRegistry&) = delete;

  Counter& AddCounter(std::string_view name, std::string_view help, Labels labels = {}) override;
  Gauge& AddGauge(std::string_view name, std::string_view help, Labels labels = {}) override;
  Histogram& AddHistogram(std::string_view name, std::string_view help, Labels labels,
                          std::vector<double> upper_bounds) override;
  void AddGaugeFunction(std::string_view name, std::string_view help, Labels labels,
                        std::function<double()> read) override;
  void AddCounterFunction(std::string_view name, std::string_view help, Labels labels,
                          std::function<uint64_t()> read) override;

  // The whole exposition, every line ending in "\n".
  std::string WriteText() const;

  // The Content-Type of WriteText's output.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    Labels labels;  // sorted by name
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> gauge_fn;
    std::function<uint64_t()> counter_fn;
  };
  struct Family {
    Type type;
    std::string help;
    // Keyed by the rendered label set, which sorts series deterministically.
    std::map<std::string, Series> series;
  };

  Series& SeriesFor(std::string_view name, std::string_view help, Type type, Labels labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  std::map<std::string, Family, std::less<>> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kms::metrics
