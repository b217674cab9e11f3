#include "src/coord/redis_invalidation_bus.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kms::coord {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// With no traffic, a PING goes out every kPingInterval; no reply within this long means
// the connection is dead even though the socket has not said so (a vanished peer).
constexpr milliseconds kPongTimeout{3000};

bool IsArrayOf(const RedisValue& value, size_t size, std::string_view first) {
  return value.type == RedisValue::Type::kArray && value.elements.size() == size &&
         value.elements[0].str == first;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisInvalidationBus>> RedisInvalidationBus::Create(
    const RedisOptions& options, std::string node_id, std::string channel, const Clock* clock) {
  if (node_id.empty()) return absl::InvalidArgumentError("invalidation bus: empty node id");
  if (channel.empty()) return absl::InvalidArgumentError("invalidation bus: empty channel");
  KMS_ASSIGN_OR_RETURN(RedisEndpoint endpoint, RedisEndpoint::FromOptions(options));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<RedisClient> publisher, RedisClient::Create(options, clock));
  return std::unique_ptr<RedisInvalidationBus>(
      new RedisInvalidationBus(std::move(publisher), std::move(endpoint), options,
                               std::move(node_id), std::move(channel), clock));
}

RedisInvalidationBus::RedisInvalidationBus(std::unique_ptr<RedisClient> publisher,
                                           RedisEndpoint endpoint, RedisOptions options,
                                           std::string node_id, std::string channel,
                                           const Clock* clock)
    : publisher_(std::move(publisher)),
      endpoint_(std::move(endpoint)),
      options_(std::move(options)),
      node_id_(std::move(node_id)),
      channel_(std::move(channel)),
      clock_(clock) {}

RedisInvalidationBus::~RedisInvalidationBus() { Stop(); }

absl::Status RedisInvalidationBus::Publish(const InvalidationEvent& event) {
  InvalidationEvent stamped = event;
  stamped.origin = node_id_;
  const std::string payload = EncodeInvalidationEvent(stamped);
  absl::StatusOr<RedisValue> reply = publisher_->Command({"PUBLISH", channel_, payload});
  if (!reply.ok()) {
    return absl::UnavailableError(
        absl::StrCat("invalidation bus: publish failed: ", std::string(reply.status().message())));
  }
  if (reply->is_error()) {
    return absl::UnavailableError(
        absl::StrCat("invalidation bus: redis refused PUBLISH: ", reply->str));
  }
  return absl::OkStatus();
}

void RedisInvalidationBus::OnEvent(std::function<void(const InvalidationEvent&)> handler) {
  MutexLock lock(&mu_);
  handler_ = std::move(handler);
}

void RedisInvalidationBus::Start() {
  MutexLock lock(&mu_);
  if (stopping_ || thread_.joinable()) return;
  thread_ = std::thread(&RedisInvalidationBus::Run, this);
}

void RedisInvalidationBus::Stop() {
  std::thread thread;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    thread.swap(thread_);
  }
  stop_cv_.notify_all();
  if (thread.joinable()) thread.join();
  subscribed_ = false;
}

void RedisInvalidationBus::Deliver(const InvalidationEvent& event) {
  std::function<void(const InvalidationEvent&)> handler;
  {
    MutexLock lock(&mu_);
    handler = handler_;
  }
  if (handler) handler(event);
}

bool RedisInvalidationBus::WaitForRetry(const Backoff& backoff) {
  MutexLock lock(&mu_);
  while (!stopping_ && !backoff.Ready()) {
    const auto left = backoff.next_attempt() - clock_->Now();
    mu_.WaitUntil(stop_cv_,
                  SteadyClock::now() + std::min<SteadyClock::duration>(left, kPollInterval));
  }
  return !stopping_;
}

void RedisInvalidationBus::Run() {
  Backoff backoff(clock_);
  bool was_down = false;
  while (true) {
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
    }
    const absl::Status status = SubscribeAndListen();
    const bool had_subscribed = subscribed_.exchange(false);
    if (had_subscribed) backoff.Succeeded();
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (had_subscribed || !was_down) {
      spdlog::warn("invalidation bus: redis {}: {}; resubscribing with backoff",
                   endpoint_.ToString(), std::string(status.message()));
    }
    was_down = true;
    backoff.Failed();
    if (!WaitForRetry(backoff)) return;
  }
}

absl::Status RedisInvalidationBus::SubscribeAndListen() {
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<RedisConnection> connection,
                       RedisConnection::Connect(endpoint_, options_.connect_timeout));
  const std::string_view subscribe[] = {"SUBSCRIBE", channel_};
  KMS_RETURN_IF_ERROR(connection->Send(subscribe, options_.command_timeout));

  // Wait for the confirmation: ["subscribe", channel, count].
  const auto confirm_deadline = SteadyClock::now() + options_.command_timeout;
  while (true) {
    KMS_ASSIGN_OR_RETURN(std::optional<RedisValue> reply, connection->Read(kPollInterval));
    if (reply.has_value()) {
      if (reply->is_error()) {
        return absl::UnavailableError(absl::StrCat("SUBSCRIBE refused: ", reply->str));
      }
      if (IsArrayOf(*reply, 3, "subscribe")) break;
      continue;
    }
    if (SteadyClock::now() >= confirm_deadline) {
      return absl::DeadlineExceededError("no SUBSCRIBE confirmation");
    }
    MutexLock lock(&mu_);
    if (stopping_) return absl::CancelledError("stopping");
  }
  subscribed_ = true;
  spdlog::info("invalidation bus: subscribed to {} on redis {}", channel_, endpoint_.ToString());
  // Anything published while we were not subscribed is lost: drop everything.
  Deliver(InvalidationEvent{InvalidationEvent::Kind::kAll, "", ""});

  auto last_received = SteadyClock::now();
  bool ping_outstanding = false;
  while (true) {
    {
      MutexLock lock(&mu_);
      if (stopping_) return absl::CancelledError("stopping");
    }
    KMS_ASSIGN_OR_RETURN(std::optional<RedisValue> reply, connection->Read(kPollInterval));
    const auto now = SteadyClock::now();
    if (!reply.has_value()) {
      if (ping_outstanding) {
        if (now - last_received > kPongTimeout) {
          return absl::UnavailableError("no reply to PING");
        }
      } else if (now - last_received > kPingInterval) {
        const std::string_view ping[] = {"PING"};
        KMS_RETURN_IF_ERROR(connection->Send(ping, options_.command_timeout));
        ping_outstanding = true;
      }
      continue;
    }
    last_received = now;
    ping_outstanding = false;
    if (!IsArrayOf(*reply, 3, "message")) continue;  // a pong, or a (un)subscribe notice
    const std::string& payload = reply->elements[2].str;
    absl::StatusOr<InvalidationEvent> event = DecodeInvalidationEvent(payload);
    if (!event.ok()) {
      spdlog::warn("invalidation bus: {}; treating it as 'drop everything'",
                   std::string(event.status().message()));
      Deliver(InvalidationEvent{InvalidationEvent::Kind::kAll, "", ""});
      continue;
    }
    if (event->origin == node_id_) continue;
    Deliver(*event);
  }
}

}  // namespace kms::coord
