#include "src/store/postgres/connection_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kms::store::pg {
namespace {

constexpr std::chrono::milliseconds kFirstBackoff{100};
// At most 1 s: the server's store circuit (src/keys/backend_executor.h) already limits
// calls to probes while the database is down, and full service must be back within
// seconds of the database (issue 9).
constexpr std::chrono::milliseconds kMaxBackoff{1000};

}  // namespace

ConnectionPool::Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->Return(std::move(conn_));
}

ConnectionPool::ConnectionPool(ConnectConfig config, std::unique_ptr<Connection> first)
    : config_(std::move(config)), size_(config_.options().pool_size) {
  if (first != nullptr) {
    MutexLock lock(&mu_);
    idle_.push_back(std::move(first));
    open_ = 1;
  }
}

ConnectionPool::~ConnectionPool() {
  MutexLock lock(&mu_);
  idle_.clear();
}

absl::StatusOr<ConnectionPool::Lease> ConnectionPool::Acquire(absl::string_view op) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + config_.options().acquire_timeout;
  std::vector<std::unique_ptr<Connection>> dead;  // closed after unlocking
  std::unique_ptr<Connection> conn;
  bool must_connect = false;
  {
    MutexLock lock(&mu_);
    for (;;) {
      while (!idle_.empty()) {
        std::unique_ptr<Connection> c = std::move(idle_.back());
        idle_.pop_back();
        if (c->LooksAliveWhileIdle()) {
          conn = std::move(c);
          break;
        }
        dead.push_back(std::move(c));
        --open_;
      }
      if (conn != nullptr) break;
      if (open_ < size_) {
        const auto now = Clock::now();
        if (now < next_connect_) {
          const auto wait =
              std::chrono::duration_cast<std::chrono::milliseconds>(next_connect_ - now);
          return absl::UnavailableError(absl::StrCat(op, ": postgres: reconnecting in ",
                                                     wait.count(),
                                                     " ms after: ", last_connect_error_));
        }
        ++open_;
        must_connect = true;
        break;
      }
      if (!mu_.AwaitUntil(cv_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
            return !idle_.empty() || open_ < size_;
          })) {
        return absl::UnavailableError(
            absl::StrCat(op, ": postgres: all ", size_, " connections busy for ",
                         config_.options().acquire_timeout.count(), " ms"));
      }
    }
  }
  dead.clear();
  if (!must_connect) return Lease(this, std::move(conn));

  absl::StatusOr<std::unique_ptr<Connection>> opened = Connection::Open(config_, op);
  MutexLock lock(&mu_);
  if (!opened.ok()) {
    --open_;
    backoff_ = backoff_.count() == 0 ? kFirstBackoff : std::min(backoff_ * 2, kMaxBackoff);
    next_connect_ = Clock::now() + backoff_;
    last_connect_error_ = std::string(opened.status().message());
    cv_.notify_one();
    // At run time every connect failure is an outage to callers, whatever its cause
    // (Open reports bad credentials with their own code).
    return absl::UnavailableError(opened.status().message());
  }
  backoff_ = std::chrono::milliseconds(0);
  next_connect_ = Clock::time_point();
  return Lease(this, std::move(*opened));
}

void ConnectionPool::Return(std::unique_ptr<Connection> conn) {
  const bool reusable = !conn->broken() && PQtransactionStatus(conn->raw()) == PQTRANS_IDLE &&
                        PQpipelineStatus(conn->raw()) == PQ_PIPELINE_OFF;
  {
    MutexLock lock(&mu_);
    if (reusable) {
      idle_.push_back(std::move(conn));
    } else {
      --open_;
    }
    cv_.notify_one();
  }
  conn.reset();  // a broken session is closed outside the lock
}

}  // namespace kms::store::pg
