// RpcMetrics: the methods come from the proto descriptors, each call is counted by the
// code the caller saw (DATA_LOSS shows as INTERNAL, as gate/public_status.h maps it),
// only codes that occurred appear, and latency lands in the method's histogram.
#include "src/server/grpc/rpc_metrics.h"

#include <chrono>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "src/metrics/registry.h"

namespace kms::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(RpcMetricsTest, CountsByMethodAndPublicCodeAndObservesLatency) {
  metrics::MetricRegistry registry;
  RpcMetrics m(registry, {"kms.v1.KeyService", "kms.v1.AdminService"});
  RpcMetrics::Install(&m);
  const auto started = std::chrono::steady_clock::now();
  RecordRpc("Encrypt", absl::OkStatus(), started);
  RecordRpc("Encrypt", absl::OkStatus(), started);
  RecordRpc("Encrypt", absl::DataLossError("blob does not authenticate"), started);
  RecordRpc("GetStatus", absl::PermissionDeniedError("no"), started);
  RpcMetrics::Install(nullptr);
  RecordRpc("Encrypt", absl::OkStatus(), started);  // not installed: not counted

  const std::string text = registry.WriteText();
  EXPECT_THAT(text, HasSubstr("kmsd_rpc_requests_total{code=\"OK\",method=\"Encrypt\",service=\"KeyService\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_rpc_requests_total{code=\"INTERNAL\",method=\"Encrypt\",service=\"KeyService\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_rpc_requests_total{code=\"PERMISSION_DENIED\",method=\"GetStatus\",service=\"AdminService\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("code=\"DATA_LOSS\"")));
  EXPECT_THAT(text, Not(HasSubstr("code=\"NOT_FOUND\"")));  // codes appear once they occur
  EXPECT_THAT(text, HasSubstr("kmsd_rpc_duration_seconds_count{method=\"Encrypt\",service=\"KeyService\"} 3\n"));
  // Every method of both services has its histogram, even before its first call.
  EXPECT_THAT(text, HasSubstr("kmsd_rpc_duration_seconds_count{method=\"Decrypt\",service=\"KeyService\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_rpc_duration_seconds_count{method=\"RotateKek\",service=\"AdminService\"} 0\n"));
}

TEST(RpcMetricsTest, AnUnknownMethodIsCountedUnderUnknown) {
  metrics::MetricRegistry registry;
  RpcMetrics m(registry, {"kms.v1.KeyService"});
  m.Record("NoSuchMethod", absl::StatusCode::kOk, 0.001);
  EXPECT_THAT(registry.WriteText(),
              HasSubstr("kmsd_rpc_requests_total{code=\"OK\",method=\"unknown\",service=\"unknown\"} 1\n"));
}

TEST(RpcMetricsTest, ConcurrentFirstUsesOfACodeShareOneCounter) {
  metrics::MetricRegistry registry;
  RpcMetrics m(registry, {"kms.v1.KeyService"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) m.Record("Decrypt", absl::StatusCode::kInvalidArgument, 0.0001);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_THAT(registry.WriteText(),
              HasSubstr("kmsd_rpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"Decrypt\",service=\"KeyService\"} 80000\n"));
}

}  // namespace
}  // namespace kms::server
