// RpcMetrics: what the gRPC door counts for every unary RPC, in one place (ServeUnary,
// grpc/unary.h): requests by service, method and gRPC status code as the caller saw it
// (kmsd_rpc_requests_total), and latency by method from the decoded request to the
// mapped status (kmsd_rpc_duration_seconds; the time on the wire and in gRPC's own
// queues is not in it).
//
// The methods come from the services' protobuf descriptors, so an RPC added to the proto
// is counted without touching this file. Recording is lock-free: the method table is
// fixed at construction, each (method, code) counter is registered the first time that
// code occurs (the only time a lock is taken) and read through an atomic pointer after.
//
// ServeUnary reaches the process's instance through Install() (the wiring installs it
// once the registry exists, and removes it before the registry goes away); with none
// installed nothing is recorded (metrics.enabled = false, unit tests).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "kms/metrics/metrics.h"

namespace kms::server {

class RpcMetrics {
 public:
  // `services`: full protobuf service names ("kms.v1.KeyService"). `registry` must
  // outlive this object. INVALID service names are skipped (none in kmsd).
  RpcMetrics(metrics::Registry& registry, const std::vector<std::string>& services);

  // Thread-safe. An unknown method is counted under method "unknown".
  void Record(std::string_view method, absl::StatusCode code, double seconds);

  static void Install(RpcMetrics* metrics);
  static RpcMetrics* Installed();

 private:
  static constexpr size_t kCodes = 17;  // OK .. UNAUTHENTICATED
  struct Method {
    std::string service;  // short name: "KeyService"
    std::string name;
    metrics::Histogram* latency = nullptr;
    std::array<std::atomic<metrics::Counter*>, kCodes> by_code{};
  };
  Method& Find(std::string_view method);
  metrics::Counter& CounterFor(Method& m, absl::StatusCode code);

  metrics::Registry& registry_;
  absl::flat_hash_map<std::string, std::unique_ptr<Method>> methods_;  // fixed after construction
  std::unique_ptr<Method> unknown_;
};

// Called by ServeUnary once the status is final.
void RecordRpc(std::string_view method, const absl::Status& status,
               std::chrono::steady_clock::time_point started);

}  // namespace kms::server
