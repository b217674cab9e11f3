#include "src/server/open_file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kms::server {

OpenFileNeeds OpenFileNeedsOf(const config::Config& config) {
  OpenFileNeeds needs;
  needs.backends = config.hsm.max_sessions + 4;  // sessions, the anchor session, module files
  if (config.store.backend == "postgres") {
    needs.backends += config.store.postgres.pool_size + 2;  // the pool, leader election
  } else {
    needs.backends += 8;  // SQLite: database, WAL, shm, journal; per connection
  }
  if (!config.redis.addr.empty()) needs.backends += 4;  // commands, subscriber, reconnects
  if (!config.http_listen.empty()) needs.https = config.http.max_connections + 1;
  needs.process = kProcessDescriptors;
  needs.grpc = kMinGrpcConnections;
  return needs;
}

absl::StatusOr<int64_t> RaiseOpenFileLimit(const OpenFileNeeds& needs) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat("getrlimit(RLIMIT_NOFILE): ", std::strerror(errno)));
  }
  if (limit.rlim_cur < limit.rlim_max) {
    const rlim_t before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      spdlog::warn("cannot raise the open-file limit from {} to {}: {}", before, limit.rlim_max,
                   std::strerror(errno));
      limit.rlim_cur = before;
    } else {
      spdlog::info("open-file limit raised from {} to {}", before, limit.rlim_cur);
    }
  }
  const int64_t now = limit.rlim_cur == RLIM_INFINITY
                          ? std::numeric_limits<int64_t>::max()
                          : static_cast<int64_t>(limit.rlim_cur);
  if (now < needs.total()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the open-file limit is ", now, " (hard limit ", static_cast<int64_t>(limit.rlim_max),
        "): kmsd needs at least ", needs.total(), " (", needs.backends, " for HSM, store and Redis, ",
        needs.https, " for the HTTPS listener, ", needs.process, " for the process, ", needs.grpc,
        " for gRPC connections); raise it (systemd LimitNOFILE=, ulimit -n, docker --ulimit "
        "nofile=) or lower hsm.max_sessions / http.max_connections"));
  }
  return now;
}

}  // namespace kms::server
