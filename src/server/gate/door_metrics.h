// Request metrics of the doors beside the kms.v1 gRPC door (that one has RpcMetrics):
// the Vault transit door, the XKS proxy and the Kubernetes KMS plugin. Each door has its
// own pair of series (Prometheus naming, https://prometheus.io/docs/practices/naming/):
//   <prefix>_requests_total{<operation label>, <outcome label>}  a counter
//   <prefix>_request_duration_seconds{<operation label>}          a histogram (seconds)
// Label values must come from a fixed set (an operation name, a status code, an error
// name of the door's specification), never from a request's bytes.
#pragma once

#include <string>
#include <string_view>

#include "kms/metrics/metrics.h"

namespace kms::server {

struct DoorMetricNames {
  std::string_view requests_total;    // "kmsd_vault_requests_total"
  std::string_view requests_help;
  std::string_view duration_seconds;  // "kmsd_vault_request_duration_seconds"
  std::string_view duration_help;
  std::string_view operation_label;   // "operation", "method"
  std::string_view outcome_label;     // "code", "error"
};

// Counts one request and observes its duration. Nothing when `registry` is null.
// Thread-safe (the registry is).
void RecordDoorRequest(metrics::Registry* registry, const DoorMetricNames& names,
                       std::string operation, std::string outcome, double seconds);

}  // namespace kms::server
