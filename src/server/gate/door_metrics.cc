#include "src/server/gate/door_metrics.h"

#include <utility>

namespace kms::server {

void RecordDoorRequest(metrics::Registry* registry, const DoorMetricNames& names,
                       std::string operation, std::string outcome, double seconds) {
  if (registry == nullptr) return;
  registry
      ->AddCounter(names.requests_total, names.requests_help,
                   {{std::string(names.operation_label), operation},
                    {std::string(names.outcome_label), std::move(outcome)}})
      .Increment();
  registry
      ->AddHistogram(names.duration_seconds, names.duration_help,
                     {{std::string(names.operation_label), std::move(operation)}},
                     metrics::LatencyBucketsSeconds())
      .Observe(seconds);
}

}  // namespace kms::server
