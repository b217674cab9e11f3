// The open-file limit kmsd runs with. Every connection (gRPC, HTTPS), HSM session,
// database connection and log file is a descriptor; when the process runs out, accept()
// fails (gRPC 1.51 then stops accepting for good) and the backends cannot reconnect.
// At start kmsd raises its soft RLIMIT_NOFILE to the hard limit and refuses to start
// when even that leaves too little room for its backends and listeners.
#pragma once

#include <cstdint>
#include <string>

#include "kms/common/status.h"
#include "src/config/config.h"

namespace kms::server {

// Descriptors kmsd needs besides gRPC connections, from the config: HSM sessions, store
// connections (and the leader election's), Redis, the HTTPS listener's connections,
// plus a fixed allowance for the process itself (logs, epoll/eventfds, threads, the
// listening sockets, SoftHSM2's files). And the gRPC connections it must at least
// be able to hold (kMinGrpcConnections).
struct OpenFileNeeds {
  int64_t backends = 0;
  int64_t https = 0;
  int64_t process = 0;
  int64_t grpc = 0;
  int64_t total() const { return backends + https + process + grpc; }
};
inline constexpr int64_t kMinGrpcConnections = 512;
inline constexpr int64_t kProcessDescriptors = 128;

OpenFileNeeds OpenFileNeedsOf(const config::Config& config);

// Raises the soft RLIMIT_NOFILE to the hard limit. FAILED_PRECONDITION, naming both
// figures and what to change (LimitNOFILE= / ulimit -n), when the resulting limit is
// below needs.total(). Returns the limit now in force.
absl::StatusOr<int64_t> RaiseOpenFileLimit(const OpenFileNeeds& needs);

}  // namespace kms::server
