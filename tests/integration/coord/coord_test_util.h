// Helpers for the src/coord integration tests: the shared test Redis, a private Redis
// child process, and a thread-safe log of delivered invalidation events.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "src/common/sync.h"
#include "src/coord/redis_client.h"

namespace kms::coord::test {

// The address from KMS_TEST_REDIS_ADDR, or "" (the caller fails the test with
// kMissingRedisMessage).
std::string SharedRedisAddr();
inline constexpr char kMissingRedisMessage[] =
    "KMS_TEST_REDIS_ADDR is not set: run the integration tests with tools/test.sh, or in bash "
    "`source tools/test-services.sh; kms_services_start` first";

// A name no other test (or test process) uses: <prefix><pid>-<counter>-<random>.
std::string UniqueName(const std::string& prefix);

// Options for `addr` with test-friendly timeouts.
RedisOptions TestOptions(const std::string& addr);

// A redis-server child process on a unix socket in a private temp dir, no persistence.
class PrivateRedis {
 public:
  // `extra_args` go to redis-server after the defaults (e.g. {"--requirepass", "pw"}).
  explicit PrivateRedis(std::vector<std::string> extra_args = {});
  ~PrivateRedis();  // kills the server, removes the dir
  PrivateRedis(const PrivateRedis&) = delete;
  PrivateRedis& operator=(const PrivateRedis&) = delete;

  // Starts the server (again) and waits until it answers PING (up to 5 s).
  absl::Status Start();
  // SIGKILL, then waits for the child to exit. No-op when not running.
  void Kill();
  std::string addr() const { return "unix:" + socket_path_; }
  const std::string& dir() const { return dir_; }

 private:
  std::vector<std::string> extra_args_;
  std::string dir_;
  std::string socket_path_;
  pid_t pid_ = -1;
};

// Collects events from a bus handler.
class EventLog {
 public:
  std::function<void(const InvalidationEvent&)> Handler();
  // Waits until at least `count` events arrived; false on timeout.
  bool WaitForCount(size_t count, std::chrono::milliseconds timeout);
  // Waits until an event matching `match` arrived after index `from`; false on timeout.
  bool WaitFor(const std::function<bool(const InvalidationEvent&)>& match, size_t from,
               std::chrono::milliseconds timeout);
  std::vector<InvalidationEvent> events() const;
  size_t size() const;

 private:
  mutable Mutex mu_;
  std::condition_variable cv_;
  std::vector<InvalidationEvent> events_ ABSL_GUARDED_BY(mu_);
};

bool IsSyntheticAll(const InvalidationEvent& event);

}  // namespace kms::coord::test
