// A small Redis client for src/coord, over hiredis (the only module that includes it).
//
// Redis is optional in kmsd (DESIGN §4, §7): every call here is bounded by
// RedisOptions::command_timeout, and after a failure the client backs off (100 ms doubling
// to 5 s) during which calls fail at once with UNAVAILABLE instead of touching the network.
// hiredis types stay in the .cc files; callers see RedisValue, a copy of the reply.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/secret.h"
#include "kms/common/status.h"
#include "src/common/sync.h"

struct redisContext;  // hiredis, kept out of this header

namespace kms::coord {

struct RedisOptions {
  std::string addr;  // "host:port" or "unix:/path"
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds command_timeout{250};
  std::string password_file;  // optional: AUTH with the file's contents (trailing \r\n dropped)
};

// Where to connect and how to authenticate, validated from RedisOptions.
struct RedisEndpoint {
  bool is_unix = false;
  std::string host;  // TCP host, or the unix socket path
  int port = 0;
  SecretBytes password;  // empty: no AUTH; never copied into a plain string

  // INVALID_ARGUMENT for a malformed address; FAILED_PRECONDITION for a password file
  // that cannot be read, is not a regular file, is empty or is over 4 KiB.
  static absl::StatusOr<RedisEndpoint> FromOptions(const RedisOptions& options);
  std::string ToString() const;  // for logs; never includes the password
};

// A Redis reply, copied out of hiredis.
struct RedisValue {
  enum class Type { kNil, kString, kStatus, kError, kInteger, kArray };
  Type type = Type::kNil;
  std::string str;  // kString, kStatus, kError
  int64_t integer = 0;
  std::vector<RedisValue> elements;  // kArray

  bool is_error() const { return type == Type::kError; }
};

// Exponential backoff on an injected clock: 100 ms doubling up to 5 s, reset on success.
// Not thread-safe (its owner locks).
class Backoff {
 public:
  static constexpr std::chrono::milliseconds kInitial{100};
  static constexpr std::chrono::milliseconds kMax{5000};

  explicit Backoff(const Clock* clock) : clock_(clock) {}
  // Records a failure now: no attempt before now + delay; the delay then doubles.
  void Failed();
  void Succeeded();
  // Whether an attempt may be made now.
  bool Ready() const { return clock_->Now() >= next_attempt_; }
  std::chrono::steady_clock::time_point next_attempt() const { return next_attempt_; }
  std::chrono::milliseconds current_delay() const { return delay_; }

 private:
  const Clock* clock_;
  std::chrono::milliseconds delay_ = kInitial;
  std::chrono::steady_clock::time_point next_attempt_{};
};

// One connection. Not thread-safe: one owner at a time (RedisClient's pool, or the bus's
// subscriber thread). A connection that saw an I/O or protocol error is broken() and must
// be dropped.
class RedisConnection {
 public:
  // Connects within `timeout` and sends AUTH when the endpoint has a password.
  // UNAVAILABLE when Redis cannot be reached; PERMISSION_DENIED when AUTH is refused.
  static absl::StatusOr<std::unique_ptr<RedisConnection>> Connect(
      const RedisEndpoint& endpoint, std::chrono::milliseconds timeout);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Sends one command and waits up to `timeout` for its reply. An error reply from Redis
  // is an OK result whose value is_error(); I/O failures and timeouts are UNAVAILABLE /
  // DEADLINE_EXCEEDED and leave the connection broken().
  absl::StatusOr<RedisValue> Command(std::span<const std::string_view> args,
                                     std::chrono::milliseconds timeout);

  // Sends one command without waiting for a reply (for subscribe mode).
  absl::Status Send(std::span<const std::string_view> args, std::chrono::milliseconds timeout);

  // Waits up to `timeout` for the next reply (subscribe mode); std::nullopt when none came.
  // UNAVAILABLE (and broken()) when the connection failed.
  absl::StatusOr<std::optional<RedisValue>> Read(std::chrono::milliseconds timeout);

  bool broken() const { return broken_; }

  // For an idle connection (no reply pending): false when the server closed it or sent
  // something unsolicited (a restart, an idle `timeout`). Does not block.
  bool LooksAlive() const;

 private:
  explicit RedisConnection(redisContext* context) : context_(context) {}
  absl::Status IoError(std::string_view what);

  redisContext* context_;  // owned; freed by the destructor
  bool broken_ = false;
};

// Thread-safe client over a small pool of connections. Never holds its lock across I/O.
class RedisClient {
 public:
  static constexpr int kMaxConnections = 8;

  // Validates `options` (see RedisEndpoint::FromOptions); does not connect, since Redis
  // may be down at start. Also makes the process ignore SIGPIPE (if it had the default
  // disposition): hiredis writes with write(2), and a peer that went away must not kill
  // kmsd.
  static absl::StatusOr<std::unique_ptr<RedisClient>> Create(
      const RedisOptions& options, const Clock* clock = &RealClock::Instance());

  // Runs one command within options.command_timeout (connecting if needed).
  // UNAVAILABLE at once while backing off after a failure; UNAVAILABLE /
  // DEADLINE_EXCEEDED when Redis fails or is too slow now (which starts the backoff).
  // An error reply from Redis is returned as a value (is_error()), not a failure.
  absl::StatusOr<RedisValue> Command(std::span<const std::string_view> args);
  absl::StatusOr<RedisValue> Command(std::initializer_list<std::string_view> args) {
    return Command(std::span<const std::string_view>(args.begin(), args.size()));
  }
  // The same with an earlier deadline, for a caller that sends more than one command
  // within one command_timeout budget.
  absl::StatusOr<RedisValue> CommandBefore(std::chrono::steady_clock::time_point deadline,
                                           std::span<const std::string_view> args);

  // True unless the last attempt to reach Redis failed.
  bool healthy() const;

  const RedisOptions& options() const { return options_; }
  const RedisEndpoint& endpoint() const { return endpoint_; }

 private:
  RedisClient(RedisOptions options, RedisEndpoint endpoint, const Clock* clock)
      : options_(std::move(options)),
        endpoint_(std::move(endpoint)),
        clock_(clock),
        backoff_(clock) {}
  // Takes an idle connection, or makes one, before `deadline`.
  absl::StatusOr<std::unique_ptr<RedisConnection>> Checkout(
      std::chrono::steady_clock::time_point deadline);
  // Returns a working connection to the pool; `succeeded` marks Redis reachable again.
  void Checkin(std::unique_ptr<RedisConnection> connection, bool succeeded)
      ABSL_LOCKS_EXCLUDED(mu_);
  void RecordFailure(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);

  const RedisOptions options_;
  const RedisEndpoint endpoint_;
  const Clock* const clock_;

  mutable Mutex mu_;
  std::condition_variable idle_cv_;
  std::vector<std::unique_ptr<RedisConnection>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + checked out
  Backoff backoff_ ABSL_GUARDED_BY(mu_);
  bool healthy_ ABSL_GUARDED_BY(mu_) = true;
  bool probing_ ABSL_GUARDED_BY(mu_) = false;  // one caller tries to reconnect after a backoff
};

}  // namespace kms::coord
