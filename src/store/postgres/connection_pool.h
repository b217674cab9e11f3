// Internal to src/store/postgres: a bounded pool of libpq sessions.
//
// Connections open lazily, up to pool_size. Acquire() hands out an idle session (after a
// zero-timeout liveness check, so sessions the server ended while idle are dropped, not
// used), opens a new one when below the bound, or waits up to acquire_timeout for one to
// come back. A session that broke while leased is closed on return and replaced by a
// fresh one on demand. After a failed connect, further connects are refused (fast
// UNAVAILABLE, the last error in the message) until an exponentially growing backoff
// (100 ms doubling to 5 s) has passed, so an outage costs callers no connect timeouts.
//
// Thread-safe. No lock is held while connecting or while a lease is out.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "kms/common/status.h"
#include "src/common/sync.h"
#include "src/store/postgres/pg_connection.h"

namespace kms::store::pg {

class ConnectionPool {
 public:
  // A connection on loan; returned to the pool (or closed, if broken) when destroyed.
  class Lease {
   public:
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease();

    Connection& operator*() const { return *conn_; }
    Connection* operator->() const { return conn_.get(); }

   private:
    friend class ConnectionPool;
    Lease(ConnectionPool* pool, std::unique_ptr<Connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}

    ConnectionPool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // `first` (may be null) becomes the first idle connection.
  ConnectionPool(ConnectConfig config, std::unique_ptr<Connection> first);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // UNAVAILABLE: no connection free within acquire_timeout, the server unreachable (or
  // refusing our credentials), or a reconnect backoff running.
  absl::StatusOr<Lease> Acquire(absl::string_view op);

  const ConnectConfig& config() const { return config_; }

 private:
  void Return(std::unique_ptr<Connection> conn);

  const ConnectConfig config_;
  const int size_;

  Mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + leased + being opened
  std::chrono::steady_clock::time_point next_connect_ ABSL_GUARDED_BY(mu_);
  std::chrono::milliseconds backoff_ ABSL_GUARDED_BY(mu_){0};
  std::string last_connect_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kms::store::pg
