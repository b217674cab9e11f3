// Token-bucket rate limiters: LocalRateLimiter (one replica's buckets, in memory) and
// RedisRateLimiter (one bucket per identity shared by every replica, in Redis, falling
// back to a LocalRateLimiter when Redis is unreachable or slow).
//
// Semantics of Acquire(identity, rate, burst), for both: a bucket holds at most `burst`
// tokens (a new identity starts full) and gains `rate_per_second` tokens per second; a
// request takes one token. With less than one token the request is denied with
// RESOURCE_EXHAUSTED "rate limit exceeded; retry after N ms", N being when the next token
// arrives (at least 1). A denial takes nothing. INVALID_ARGUMENT unless rate > 0 and
// burst >= 1 (both finite).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "src/common/sync.h"
#include "src/coord/redis_client.h"

namespace kms::coord {

// RESOURCE_EXHAUSTED "rate limit exceeded; retry after <ms> ms".
absl::Status RateLimitExceededError(int64_t retry_after_ms);

// Per-replica buckets on an injected clock. Thread-safe.
class LocalRateLimiter final : public RateLimiter {
 public:
  // Buckets that are full again are forgotten when the table reaches `max_identities`
  // (and every few thousand calls), so memory follows the active identities.
  explicit LocalRateLimiter(const Clock* clock = &RealClock::Instance(),
                            size_t max_identities = 100'000);

  absl::Status Acquire(std::string_view identity, double rate_per_second, double burst) override;

  // Identities with a bucket now (for tests and metrics).
  size_t tracked_identities() const;

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point last{};
    double rate = 0;
    double burst = 0;
  };
  // Forgets buckets that would be full by `now`.
  void SweepLocked(std::chrono::steady_clock::time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  const size_t max_identities_;
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  uint64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// One bucket per identity across replicas: an atomic Lua script (EVALSHA, EVAL after
// NOSCRIPT) keeps {tokens, ts} in the hash <key_prefix><identity> with a TTL of about the
// time to refill, and takes the time from Redis (TIME), so replicas' clocks do not matter.
// Each Acquire waits on Redis at most command_timeout; when Redis fails (or backs off
// after a failure) the answer comes from a per-replica LocalRateLimiter instead.
// Thread-safe.
class RedisRateLimiter final : public RateLimiter {
 public:
  static constexpr std::string_view kDefaultKeyPrefix = "kmsd:rl:";

  // Does not connect (Redis may be down at start). `clock` drives the local fallback and
  // the reconnect backoff.
  static absl::StatusOr<std::unique_ptr<RedisRateLimiter>> Create(
      const RedisOptions& options, std::string key_prefix = std::string(kDefaultKeyPrefix),
      const Clock* clock = &RealClock::Instance());

  absl::Status Acquire(std::string_view identity, double rate_per_second, double burst) override;

  // False while Redis is failing (answers come from the local fallback).
  bool healthy() const { return client_->healthy(); }

  // The Lua script and its SHA-1 (hex), as sent to Redis.
  static std::string_view Script();
  const std::string& script_sha1() const { return script_sha1_; }

 private:
  RedisRateLimiter(std::unique_ptr<RedisClient> client, std::string key_prefix,
                   std::string script_sha1, const Clock* clock)
      : client_(std::move(client)),
        key_prefix_(std::move(key_prefix)),
        script_sha1_(std::move(script_sha1)),
        local_(clock) {}
  // The global answer; an error status when Redis could not give one.
  absl::StatusOr<bool> AcquireGlobal(std::string_view identity, double rate, double burst,
                                     int64_t* retry_after_ms);

  const std::unique_ptr<RedisClient> client_;
  const std::string key_prefix_;
  const std::string script_sha1_;
  LocalRateLimiter local_;
  std::atomic<uint64_t> script_errors_{0};
};

}  // namespace kms::coord
