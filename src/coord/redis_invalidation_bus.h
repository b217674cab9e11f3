// InvalidationBus over Redis pub/sub (channel kInvalidationChannel, payload in
// invalidation_codec.h).
//
// Publish goes through a RedisClient, so it is bounded by command_timeout and fails fast
// with UNAVAILABLE while Redis is down (the caller logs and moves on: the store epoch poll
// converges the replicas anyway). A dedicated subscriber connection lives on the bus's own
// thread; it reconnects with backoff (100 ms doubling to 5 s) and, after every successful
// (re)subscribe, hands the handler a synthetic kAll event (empty origin), since events
// may have been missed while it was not subscribed. Events whose origin is this node are
// not delivered; undecodable payloads are delivered as kAll. The handler runs on the
// bus thread and must not call Stop() (which joins that thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "src/common/sync.h"
#include "src/coord/invalidation_codec.h"
#include "src/coord/redis_client.h"

namespace kms::coord {

class RedisInvalidationBus final : public InvalidationBus {
 public:
  // How often the subscriber thread wakes to check Stop() and to ping an idle connection.
  static constexpr std::chrono::milliseconds kPollInterval{100};
  static constexpr std::chrono::milliseconds kPingInterval{1000};

  // `node_id` (non-empty) stamps every published event and filters our own.
  // `channel` is only for tests that share a Redis. Does not connect: Start() does.
  static absl::StatusOr<std::unique_ptr<RedisInvalidationBus>> Create(
      const RedisOptions& options, std::string node_id,
      std::string channel = std::string(kInvalidationChannel),
      const Clock* clock = &RealClock::Instance());
  ~RedisInvalidationBus() override;  // Stop()s

  // Publishes `event` with origin = this node's id (whatever event.origin says).
  absl::Status Publish(const InvalidationEvent& event) override;
  void OnEvent(std::function<void(const InvalidationEvent&)> handler) override;
  void Start() override;
  // Joins the subscriber thread; returns within about kPollInterval. Idempotent.
  void Stop() override;
  // Whether the subscriber is subscribed now.
  bool healthy() const override { return subscribed_.load(); }

  const std::string& node_id() const { return node_id_; }

 private:
  RedisInvalidationBus(std::unique_ptr<RedisClient> publisher, RedisEndpoint endpoint,
                       RedisOptions options, std::string node_id, std::string channel,
                       const Clock* clock);
  void Run();
  // Connects and subscribes, then reads until Stop() or a failure.
  absl::Status SubscribeAndListen();
  void Deliver(const InvalidationEvent& event);
  // Waits until the backoff allows another attempt (or Stop()); false when stopping.
  bool WaitForRetry(const Backoff& backoff);

  const std::unique_ptr<RedisClient> publisher_;
  const RedisEndpoint endpoint_;
  const RedisOptions options_;
  const std::string node_id_;
  const std::string channel_;
  const Clock* const clock_;

  Mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(const InvalidationEvent&)> handler_ ABSL_GUARDED_BY(mu_);
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> subscribed_{false};
};

}  // namespace kms::coord
