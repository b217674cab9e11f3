// KmsServer: the one place that builds concrete parts from a Config and connects them
// (PKCS#11 HSM, key store, policy, key manager, gRPC services, HTTPS listener).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "kms/common/status.h"
#include "src/config/config.h"

namespace kms::server {

class KmsServer {
 public:
  // Builds every part and starts serving. The HTTPS listener comes up first, so
  // /readyz answers 503 while the backends load; a backend that is UNAVAILABLE at
  // start is retried with exponential backoff (1 s doubling to 30 s) until it answers
  // or `*stop` becomes true. Configuration errors (missing files, wrong PIN, bad
  // policy, ...) return at once with a message that says what to fix.
  static absl::StatusOr<std::unique_ptr<KmsServer>> Start(const config::Config& config,
                                                         const std::atomic<bool>* stop);
  ~KmsServer();

  int grpc_port() const;
  int http_port() const;  // 0 without an HTTPS listener
  int xks_port() const;   // 0 without the XKS door

  // Blocks until Shutdown() is called from another thread.
  void Wait();
  // Stops accepting, drains in-flight RPCs (up to 2 s), then releases the parts.
  void Shutdown();
  // After Shutdown: waits up to `grace` until no backend call (HSM, store) is running.
  // A call into a hung HSM or a frozen database cannot be cancelled and keeps its worker
  // until the backend answers, and destroying the server joins those workers. Returns
  // false with the backends' names when calls are still running: the process should
  // then end without destroying the server (its backends are still in use).
  bool AwaitBackendCalls(std::chrono::milliseconds grace, std::string* stuck);

  struct Parts;

 private:
  KmsServer();
  std::unique_ptr<Parts> parts_;
};

// gRPC 1.51 has no API for the TLS version. Restricting its cipher list to a suite
// TLS 1.2 cannot use leaves TLS 1.3 as the only protocol that completes a handshake
// (PLATFORM.md). Must run before gRPC is first used in the process.
void RestrictGrpcToTls13();

// gRPC's own log lines (handshake failures, ...) go through spdlog, so they are in the
// process's log format (JSON lines or text) instead of gRPC's raw stderr lines.
void RouteGrpcLogsToSpdlog();

}  // namespace kms::server
