#include "src/store/postgres/postgres_leader_election.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "src/store/postgres/pg_connection.h"

namespace kms::store {
namespace {

constexpr int64_t kLeaderLockClass = 0x4b4d5332;  // "KMS2"
constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};
constexpr std::chrono::milliseconds kLeaderStatementTimeout{1000};

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresLeaderElection>> PostgresLeaderElection::Create(
    const PostgresOptions& options, const std::string& lock_name) {
  if (lock_name.empty()) {
    return absl::InvalidArgumentError("PostgresLeaderElection: empty lock name");
  }
  // The session's statements are instant (SELECT 1, a try-lock): a short statement
  // timeout bounds how long a frozen server holds up the caller (the scheduler's thread)
  // to kLeaderStatementTimeout + kAnswerGrace.
  PostgresOptions leader_options = options;
  leader_options.statement_timeout = std::min(options.statement_timeout, kLeaderStatementTimeout);
  KMS_ASSIGN_OR_RETURN(pg::ConnectConfig config, pg::ConnectConfig::FromOptions(leader_options));
  return std::unique_ptr<PostgresLeaderElection>(
      new PostgresLeaderElection(std::make_unique<pg::ConnectConfig>(std::move(config)),
                                 absl::StrCat(options.schema, "/", lock_name)));
}

PostgresLeaderElection::PostgresLeaderElection(std::unique_ptr<pg::ConnectConfig> config,
                                               std::string lock_key)
    : config_(std::move(config)), lock_key_(std::move(lock_key)) {}

PostgresLeaderElection::~PostgresLeaderElection() {
  MutexLock lock(&mu_);
  DropSession();
}

void PostgresLeaderElection::DropSession() {
  leading_.store(false, std::memory_order_release);
  conn_.reset();  // closing the session releases a session-level lock
}

absl::StatusOr<bool> PostgresLeaderElection::TryLead() {
  constexpr absl::string_view kOp = "TryLead";
  using Clock = std::chrono::steady_clock;
  MutexLock lock(&mu_);

  if (conn_ != nullptr && leading_.load(std::memory_order_acquire)) {
    // Leading: the lock lives exactly as long as the session does.
    if (conn_->broken() || !conn_->Exec("SELECT 1", kOp).ok() || conn_->broken()) {
      DropSession();
      return false;  // demoted; the next call reconnects and competes again
    }
    return true;
  }

  if (conn_ == nullptr) {
    const auto now = Clock::now();
    if (now < next_connect_) {
      return absl::UnavailableError(
          absl::StrCat(kOp, ": postgres: reconnecting after: ", last_connect_error_));
    }
    absl::StatusOr<std::unique_ptr<pg::Connection>> opened = pg::Connection::Open(*config_, kOp);
    absl::Status st = opened.status();
    if (st.ok()) {
      // Server-side keepalives for this session: if this node vanishes, the server
      // notices within ~25 s and frees the lock. Ignored on a unix socket.
      st = (*opened)
               ->Exec(
                   "SELECT set_config('tcp_keepalives_idle', '10', false), "
                   "set_config('tcp_keepalives_interval', '5', false), "
                   "set_config('tcp_keepalives_count', '3', false)",
                   kOp)
               .status();
    }
    if (!st.ok()) {
      backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
      next_connect_ = Clock::now() + backoff_;
      last_connect_error_ = std::string(st.message());
      return absl::UnavailableError(st.message());
    }
    backoff_ = std::chrono::milliseconds(0);
    next_connect_ = Clock::time_point();
    conn_ = std::move(*opened);
  }

  pg::Params p;
  p.Int(kLeaderLockClass).Text(lock_key_);
  absl::StatusOr<pg::Result> r =
      conn_->Exec("SELECT pg_try_advisory_lock($1::integer, hashtext($2))", p, kOp);
  if (!r.ok()) {
    DropSession();
    return false;
  }
  const bool got = r->Int(0, 0) != 0;
  leading_.store(got, std::memory_order_release);
  return got;
}

void PostgresLeaderElection::Resign() {
  MutexLock lock(&mu_);
  if (conn_ == nullptr || !leading_.load(std::memory_order_acquire)) return;
  leading_.store(false, std::memory_order_release);
  pg::Params p;
  p.Int(kLeaderLockClass).Text(lock_key_);
  absl::StatusOr<pg::Result> r =
      conn_->Exec("SELECT pg_advisory_unlock($1::integer, hashtext($2))", p, "Resign");
  // If the unlock cannot be confirmed, ending the session releases the lock for sure.
  if (!r.ok() || r->Int(0, 0) == 0) DropSession();
}

}  // namespace kms::store
