// The rotation scheduler's leader in a cluster: a PostgreSQL session-level advisory lock
// (DESIGN §4). The lock only avoids wasted work; the store's compare-and-set keeps
// rotation safe even if two replicas believe they lead for a moment.
//
// One dedicated session (not from the store's pool) holds
// pg_try_advisory_lock(classid "KMS2", hashtext(schema || '/' || lock_name)), so
// deployments in different schemas of one database elect independently. The server
// releases the lock when the session ends, whatever the reason (crash, network loss
// detected by TCP keepalives, pg_terminate_backend). The session asks the server for
// short TCP keepalives (idle 10 s, interval 5 s, 3 probes) so a vanished leader's lock
// is freed within about 25 s over TCP.
//
// TryLead():
//  - no session: connects (after a failed connect, not again before a backoff of 100 ms
//    doubling to 5 s has passed: UNAVAILABLE meanwhile), then tries the lock;
//  - leading: checks the session with `SELECT 1`; a failure means the lock is gone:
//    is_leader() turns false, TryLead returns false, and the next call reconnects;
//  - not leading: tries the lock again.
// Returns UNAVAILABLE only when it could not reach the server (not leading then).
// Bounded: a statement waits at most 1 s + kAnswerGrace for the server (a frozen or
// partitioned server: not leading, the session dropped), a connect at most the
// options' connect_timeout.
//
// Thread-safe. Dropping the object closes the session (and so releases the lock).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "src/common/sync.h"
#include "src/store/postgres/postgres_options.h"

namespace kms::store {

namespace pg {
class Connection;
class ConnectConfig;
}  // namespace pg

class PostgresLeaderElection final : public kms::coord::LeaderElection {
 public:
  // Validates the options and reads the password file; does not connect (the first
  // TryLead does). Errors: INVALID_ARGUMENT, FAILED_PRECONDITION (password file).
  // pool_size, acquire_timeout are unused.
  static absl::StatusOr<std::unique_ptr<PostgresLeaderElection>> Create(
      const PostgresOptions& options, const std::string& lock_name = "scheduler");

  ~PostgresLeaderElection() override;
  PostgresLeaderElection(const PostgresLeaderElection&) = delete;
  PostgresLeaderElection& operator=(const PostgresLeaderElection&) = delete;

  absl::StatusOr<bool> TryLead() override;
  bool is_leader() const override { return leading_.load(std::memory_order_acquire); }
  // Releases the lock (keeps the session). Another replica's next TryLead takes over.
  void Resign() override;

 private:
  PostgresLeaderElection(std::unique_ptr<pg::ConnectConfig> config, std::string lock_key);
  void DropSession() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::unique_ptr<pg::ConnectConfig> config_;
  const std::string lock_key_;  // hashed server-side into the lock's objid

  Mutex mu_;
  std::unique_ptr<pg::Connection> conn_ ABSL_GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point next_connect_ ABSL_GUARDED_BY(mu_);
  std::chrono::milliseconds backoff_ ABSL_GUARDED_BY(mu_){0};
  std::string last_connect_error_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> leading_{false};
};

}  // namespace kms::store
