#include "src/coord/redis_client.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "src/common/secret_file.h"

namespace kms::coord {
namespace {

using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr size_t kMaxPasswordFileBytes = 4096;

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* context) const { redisFree(context); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextDeleter>;

std::string Str(std::string_view s) { return std::string(s); }

timeval ToTimeval(milliseconds timeout) {
  // hiredis treats a zero timeout as "none": never pass less than 1 ms.
  const int64_t ms = std::max<int64_t>(timeout.count(), 1);
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

milliseconds Remaining(SteadyTime deadline) {
  return std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
}

RedisValue Convert(const redisReply* reply) {
  RedisValue value;
  switch (reply->type) {
    case REDIS_REPLY_STRING:
      value.type = RedisValue::Type::kString;
      value.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_STATUS:
      value.type = RedisValue::Type::kStatus;
      value.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_ERROR:
      value.type = RedisValue::Type::kError;
      value.str.assign(reply->str, reply->len);
      break;
    case REDIS_REPLY_INTEGER:
      value.type = RedisValue::Type::kInteger;
      value.integer = reply->integer;
      break;
    case REDIS_REPLY_ARRAY:
      value.type = RedisValue::Type::kArray;
      value.elements.reserve(reply->elements);
      for (size_t i = 0; i < reply->elements; ++i) {
        value.elements.push_back(Convert(reply->element[i]));
      }
      break;
    default:
      value.type = RedisValue::Type::kNil;
      break;
  }
  return value;
}

void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      signal(SIGPIPE, SIG_IGN);
    }
  });
}

}  // namespace

// ---- RedisEndpoint ----

absl::StatusOr<RedisEndpoint> RedisEndpoint::FromOptions(const RedisOptions& options) {
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    return absl::InvalidArgumentError("redis: connect and command timeouts must be positive");
  }
  RedisEndpoint endpoint;
  const std::string_view addr = options.addr;
  constexpr std::string_view kUnixPrefix = "unix:";
  if (addr.substr(0, kUnixPrefix.size()) == kUnixPrefix) {
    endpoint.is_unix = true;
    endpoint.host = Str(addr.substr(kUnixPrefix.size()));
    if (endpoint.host.empty()) {
      return absl::InvalidArgumentError("redis address \"unix:\" needs a socket path");
    }
  } else {
    const size_t colon = addr.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis address \"", Str(addr), "\" is not host:port or unix:/path"));
    }
    std::string_view host = addr.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    const std::string_view port = addr.substr(colon + 1);
    int value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis address \"", Str(addr), "\" has no valid port"));
    }
    endpoint.host = Str(host);
    endpoint.port = value;
  }
  if (!options.password_file.empty()) {
    absl::StatusOr<SecretBytes> password =
        ReadSecretFile(options.password_file, "redis password", kMaxPasswordFileBytes,
                       SecretFileTrim::kTrailingLineBreaks);
    if (!password.ok()) return absl::FailedPreconditionError(password.status().message());
    endpoint.password = std::move(*password);
  }
  return endpoint;
}

std::string RedisEndpoint::ToString() const {
  return is_unix ? absl::StrCat("unix:", host) : absl::StrCat(host, ":", port);
}

// ---- Backoff ----

void Backoff::Failed() {
  next_attempt_ = clock_->Now() + delay_;
  delay_ = std::min(delay_ * 2, kMax);
}

void Backoff::Succeeded() {
  delay_ = kInitial;
  next_attempt_ = {};
}

// ---- RedisConnection ----

absl::StatusOr<std::unique_ptr<RedisConnection>> RedisConnection::Connect(
    const RedisEndpoint& endpoint, milliseconds timeout) {
  const SteadyTime deadline = std::chrono::steady_clock::now() + timeout;
  const timeval tv = ToTimeval(timeout);
  ContextPtr context(endpoint.is_unix
                         ? redisConnectUnixWithTimeout(endpoint.host.c_str(), tv)
                         : redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, tv));
  if (context == nullptr) {
    return absl::ResourceExhaustedError("redis: cannot allocate a connection");
  }
  if (context->err != 0) {
    return absl::UnavailableError(
        absl::StrCat("redis: connect to ", endpoint.ToString(), ": ", context->errstr));
  }
  std::unique_ptr<RedisConnection> connection(new RedisConnection(context.release()));
  if (!endpoint.password.empty()) {
    // The argument points into the SecretBytes: no copy of the password is made here.
    const std::string_view args[] = {
        "AUTH", std::string_view(reinterpret_cast<const char*>(endpoint.password.data()),
                                 endpoint.password.size())};
    KMS_ASSIGN_OR_RETURN(RedisValue reply, connection->Command(args, Remaining(deadline)));
    if (reply.is_error()) {
      return absl::PermissionDeniedError(absl::StrCat("redis: AUTH refused: ", reply.str));
    }
  }
  return connection;
}

RedisConnection::~RedisConnection() { redisFree(context_); }

absl::Status RedisConnection::IoError(std::string_view what) {
  const int saved_errno = errno;
  broken_ = true;
  const bool timed_out =
      context_->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
  const std::string message =
      absl::StrCat("redis: ", Str(what), ": ", context_->err != 0 ? context_->errstr : "failed");
  return timed_out ? absl::DeadlineExceededError(message) : absl::UnavailableError(message);
}

absl::StatusOr<RedisValue> RedisConnection::Command(std::span<const std::string_view> args,
                                                    milliseconds timeout) {
  if (broken_) return absl::UnavailableError("redis: connection is broken");
  if (timeout.count() <= 0) return absl::DeadlineExceededError("redis: no time left");
  if (redisSetTimeout(context_, ToTimeval(timeout)) != REDIS_OK) return IoError("set timeout");
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  argv.reserve(args.size());
  lengths.reserve(args.size());
  for (std::string_view arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  ReplyPtr reply(static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data())));
  if (reply == nullptr) return IoError("command");
  return Convert(reply.get());
}

absl::Status RedisConnection::Send(std::span<const std::string_view> args, milliseconds timeout) {
  if (broken_) return absl::UnavailableError("redis: connection is broken");
  if (redisSetTimeout(context_, ToTimeval(timeout)) != REDIS_OK) return IoError("set timeout");
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (std::string_view arg : args) {
    argv.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  if (redisAppendCommandArgv(context_, static_cast<int>(argv.size()), argv.data(),
                             lengths.data()) != REDIS_OK) {
    return IoError("append");
  }
  int done = 0;
  do {
    if (redisBufferWrite(context_, &done) != REDIS_OK) return IoError("write");
  } while (done == 0);
  return absl::OkStatus();
}

bool RedisConnection::LooksAlive() const {
  if (broken_ || context_->err != 0) return false;
  pollfd pfd{};
  pfd.fd = context_->fd;
  pfd.events = POLLIN;
  // Readable while idle means EOF, an error, or bytes nobody asked for: drop it.
  return poll(&pfd, 1, 0) == 0;
}

absl::StatusOr<std::optional<RedisValue>> RedisConnection::Read(milliseconds timeout) {
  if (broken_) return absl::UnavailableError("redis: connection is broken");
  void* raw = nullptr;
  // A reply may already be buffered from an earlier read.
  if (redisGetReplyFromReader(context_, &raw) != REDIS_OK) return IoError("read");
  if (raw == nullptr) {
    pollfd pfd{};
    pfd.fd = context_->fd;
    pfd.events = POLLIN;
    const int ready = poll(&pfd, 1, static_cast<int>(std::max<int64_t>(timeout.count(), 0)));
    if (ready < 0) {
      if (errno == EINTR) return std::optional<RedisValue>();
      return IoError("poll");
    }
    if (ready == 0) return std::optional<RedisValue>();
    // Readable: this read does not block.
    if (redisBufferRead(context_) != REDIS_OK) return IoError("read");
    if (redisGetReplyFromReader(context_, &raw) != REDIS_OK) return IoError("read");
    if (raw == nullptr) return std::optional<RedisValue>();  // partial reply so far
  }
  ReplyPtr reply(static_cast<redisReply*>(raw));
  return std::optional<RedisValue>(Convert(reply.get()));
}

// ---- RedisClient ----

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::Create(const RedisOptions& options,
                                                                 const Clock* clock) {
  KMS_ASSIGN_OR_RETURN(RedisEndpoint endpoint, RedisEndpoint::FromOptions(options));
  IgnoreSigpipeOnce();
  return std::unique_ptr<RedisClient>(new RedisClient(options, std::move(endpoint), clock));
}

absl::StatusOr<std::unique_ptr<RedisConnection>> RedisClient::Checkout(SteadyTime deadline) {
  MutexLock lock(&mu_);
  while (true) {
    if (!healthy_) {
      if (!backoff_.Ready()) {
        const auto wait =
            std::chrono::duration_cast<milliseconds>(backoff_.next_attempt() - clock_->Now());
        return absl::UnavailableError(absl::StrCat(
            "redis ", endpoint_.ToString(), " unavailable; next attempt in ", wait.count(), " ms"));
      }
      if (probing_) {
        return absl::UnavailableError(
            absl::StrCat("redis ", endpoint_.ToString(), " unavailable; reconnecting"));
      }
    }
    if (!idle_.empty()) {
      std::unique_ptr<RedisConnection> connection = std::move(idle_.back());
      idle_.pop_back();
      return connection;
    }
    if (open_ < kMaxConnections) {
      ++open_;
      const bool probe = !healthy_;
      if (probe) probing_ = true;
      lock.Unlock();
      const milliseconds timeout = std::min(options_.connect_timeout, Remaining(deadline));
      absl::StatusOr<std::unique_ptr<RedisConnection>> connection =
          timeout.count() > 0 ? RedisConnection::Connect(endpoint_, timeout)
                              : absl::DeadlineExceededError("redis: no time left to connect");
      lock.Lock();
      if (probe) probing_ = false;
      if (!connection.ok()) {
        --open_;
        lock.Unlock();
        idle_cv_.notify_one();
        if (timeout.count() > 0) RecordFailure(connection.status());
        return connection;
      }
      return connection;
    }
    if (!mu_.WaitUntil(idle_cv_, deadline) && idle_.empty()) {
      return absl::DeadlineExceededError("redis: all connections busy");
    }
  }
}

void RedisClient::Checkin(std::unique_ptr<RedisConnection> connection, bool succeeded) {
  {
    MutexLock lock(&mu_);
    if (succeeded && !healthy_) {
      healthy_ = true;
      backoff_.Succeeded();
      spdlog::info("redis {}: reachable again", endpoint_.ToString());
    }
    idle_.push_back(std::move(connection));
  }
  idle_cv_.notify_one();
}

void RedisClient::RecordFailure(const absl::Status& status) {
  std::vector<std::unique_ptr<RedisConnection>> dropped;
  {
    MutexLock lock(&mu_);
    // The idle connections most likely failed too; drop them (closed outside the lock).
    dropped.swap(idle_);
    open_ -= static_cast<int>(dropped.size());
    // Failures of calls that were already in flight when the backoff started do not
    // lengthen it; the first failure, and a failed probe after it, do.
    if (healthy_ || backoff_.Ready()) {
      if (healthy_) {
        spdlog::warn("redis {}: {}; falling back (retry in {} ms)", endpoint_.ToString(),
                     std::string(status.message()), backoff_.current_delay().count());
      }
      healthy_ = false;
      backoff_.Failed();
    }
  }
  idle_cv_.notify_all();
}

absl::StatusOr<RedisValue> RedisClient::Command(std::span<const std::string_view> args) {
  return CommandBefore(std::chrono::steady_clock::now() + options_.command_timeout, args);
}

absl::StatusOr<RedisValue> RedisClient::CommandBefore(SteadyTime deadline,
                                                      std::span<const std::string_view> args) {
  deadline = std::min(deadline, std::chrono::steady_clock::now() + options_.command_timeout);
  std::unique_ptr<RedisConnection> connection;
  while (true) {
    KMS_ASSIGN_OR_RETURN(connection, Checkout(deadline));
    if (connection->LooksAlive()) break;
    // Closed while idle (server restart, idle timeout): not a failure of Redis as such;
    // try another one, or a new one.
    connection.reset();
    MutexLock lock(&mu_);
    --open_;
  }
  absl::StatusOr<RedisValue> reply = connection->Command(args, Remaining(deadline));
  if (!reply.ok() && !connection->broken()) {
    // Nothing was sent (no time left after waiting for a connection): not Redis's fault.
    Checkin(std::move(connection), /*succeeded=*/false);
    return reply.status();
  }
  if (!reply.ok() || connection->broken()) {
    connection.reset();
    {
      MutexLock lock(&mu_);
      --open_;
    }
    RecordFailure(reply.status());
    return reply.ok() ? absl::UnavailableError("redis: connection broke") : reply.status();
  }
  Checkin(std::move(connection), /*succeeded=*/true);
  return reply;
}

bool RedisClient::healthy() const {
  MutexLock lock(&mu_);
  return healthy_;
}

}  // namespace kms::coord
