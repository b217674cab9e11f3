#include "src/server/grpc/rpc_metrics.h"

#include "google/protobuf/descriptor.h"
#include "src/server/gate/public_status.h"

namespace kms::server {

namespace {

std::atomic<RpcMetrics*> g_installed{nullptr};

constexpr char kRequestsName[] = "kmsd_rpc_requests_total";
constexpr char kRequestsHelp[] =
    "gRPC requests handled, by service, method and the gRPC status code the caller received.";
constexpr char kLatencyName[] = "kmsd_rpc_duration_seconds";
constexpr char kLatencyHelp[] =
    "Time from a decoded gRPC request to its final status, by service and method.";

}  // namespace

RpcMetrics::RpcMetrics(metrics::Registry& registry, const std::vector<std::string>& services)
    : registry_(registry) {
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& full : services) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(full);
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string& name = service->method(i)->name();
      if (methods_.contains(name)) continue;  // the first service's wins (names are unique in kmsd)
      auto m = std::make_unique<Method>();
      m->service = service->name();
      m->name = name;
      m->latency = &registry_.AddHistogram(kLatencyName, kLatencyHelp,
                                           {{"service", m->service}, {"method", name}},
                                           metrics::LatencyBucketsSeconds());
      methods_.emplace(name, std::move(m));
    }
  }
  unknown_ = std::make_unique<Method>();
  unknown_->service = "unknown";
  unknown_->name = "unknown";
  unknown_->latency = &registry_.AddHistogram(kLatencyName, kLatencyHelp,
                                              {{"service", "unknown"}, {"method", "unknown"}},
                                              metrics::LatencyBucketsSeconds());
}

RpcMetrics::Method& RpcMetrics::Find(std::string_view method) {
  auto it = methods_.find(absl::string_view(method.data(), method.size()));
  return it == methods_.end() ? *unknown_ : *it->second;
}

metrics::Counter& RpcMetrics::CounterFor(Method& m, absl::StatusCode code) {
  size_t i = static_cast<size_t>(code);
  if (i >= kCodes) i = static_cast<size_t>(absl::StatusCode::kUnknown);
  metrics::Counter* c = m.by_code[i].load(std::memory_order_acquire);
  if (c != nullptr) return *c;
  // First time this code: the registry returns the same counter to racing threads.
  c = &registry_.AddCounter(
      kRequestsName, kRequestsHelp,
      {{"service", m.service},
       {"method", m.name},
       {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(i))}});
  m.by_code[i].store(c, std::memory_order_release);
  return *c;
}

void RpcMetrics::Record(std::string_view method, absl::StatusCode code, double seconds) {
  Method& m = Find(method);
  CounterFor(m, code).Increment();
  m.latency->Observe(seconds);
}

void RpcMetrics::Install(RpcMetrics* metrics) { g_installed.store(metrics); }
RpcMetrics* RpcMetrics::Installed() { return g_installed.load(); }

void RecordRpc(std::string_view method, const absl::Status& status,
               std::chrono::steady_clock::time_point started) {
  RpcMetrics* m = RpcMetrics::Installed();
  if (m == nullptr) return;
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  m->Record(method, PublicCode(status), took.count());
}

}  // namespace kms::server
