#include "src/coord/rate_limiters.h"

#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kms::coord {
namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

// Tolerance for floating-point refills (10 tokens/s for 100 ms must give one token).
constexpr double kEpsilon = 1e-9;
constexpr uint64_t kSweepEvery = 4096;

// KEYS[1]: bucket hash. ARGV: rate per second, burst, TTL in ms.
// Returns {allowed (0/1), retry_after_ms}. Time is Redis's own (microseconds).
constexpr std::string_view kScript = R"lua(
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local ttl_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = tokens + (now - ts) * rate / 1000000
  ts = now
end
if tokens > burst then tokens = burst end
local allowed = 0
local retry_ms = 0
if tokens >= 1 - 1e-9 then
  tokens = tokens - 1
  allowed = 1
else
  retry_ms = math.ceil((1 - tokens) * 1000 / rate)
  if retry_ms < 1 then retry_ms = 1 end
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.0f', ts))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return {allowed, retry_ms}
)lua";

absl::Status ValidateLimits(double rate, double burst) {
  if (!std::isfinite(rate) || !std::isfinite(burst) || rate <= 0 || burst < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("rate limit needs rate > 0 and burst >= 1 (got ", rate, ", ", burst, ")"));
  }
  return absl::OkStatus();
}

int64_t RetryAfterMs(double tokens, double rate) {
  const double ms = std::ceil((1.0 - tokens) * 1000.0 / rate - kEpsilon);
  if (!(ms < 1e15)) return std::numeric_limits<int32_t>::max();
  return std::max<int64_t>(1, static_cast<int64_t>(ms));
}

std::string FormatDouble(double value) {
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, ec == std::errc() ? end : buffer);
}

std::string Sha1Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha1(), nullptr) != 1) {
    return "";
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

}  // namespace

absl::Status RateLimitExceededError(int64_t retry_after_ms) {
  return absl::ResourceExhaustedError(
      absl::StrCat("rate limit exceeded; retry after ", retry_after_ms, " ms"));
}

// ---- LocalRateLimiter ----

LocalRateLimiter::LocalRateLimiter(const Clock* clock, size_t max_identities)
    : clock_(clock), max_identities_(std::max<size_t>(max_identities, 1)) {}

absl::Status LocalRateLimiter::Acquire(std::string_view identity, double rate_per_second,
                                       double burst) {
  KMS_RETURN_IF_ERROR(ValidateLimits(rate_per_second, burst));
  const SteadyTime now = clock_->Now();
  MutexLock lock(&mu_);
  if (++calls_ % kSweepEvery == 0 || buckets_.size() >= max_identities_) SweepLocked(now);
  const absl::string_view key(identity.data(), identity.size());
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    it = buckets_.emplace(std::string(identity), Bucket{burst, now, rate_per_second, burst}).first;
  }
  Bucket& bucket = it->second;
  if (now > bucket.last) {
    const double elapsed = std::chrono::duration<double>(now - bucket.last).count();
    bucket.tokens += elapsed * rate_per_second;
    bucket.last = now;
  }
  bucket.rate = rate_per_second;
  bucket.burst = burst;
  bucket.tokens = std::min(bucket.tokens, burst);
  if (bucket.tokens >= 1.0 - kEpsilon) {
    bucket.tokens -= 1.0;
    return absl::OkStatus();
  }
  return RateLimitExceededError(RetryAfterMs(bucket.tokens, rate_per_second));
}

void LocalRateLimiter::SweepLocked(SteadyTime now) {
  absl::erase_if(buckets_, [now](const auto& entry) {
    const Bucket& b = entry.second;
    const double elapsed = std::chrono::duration<double>(now - b.last).count();
    return b.tokens + elapsed * b.rate >= b.burst;
  });
}

size_t LocalRateLimiter::tracked_identities() const {
  MutexLock lock(&mu_);
  return buckets_.size();
}

// ---- RedisRateLimiter ----

std::string_view RedisRateLimiter::Script() { return kScript; }

absl::StatusOr<std::unique_ptr<RedisRateLimiter>> RedisRateLimiter::Create(
    const RedisOptions& options, std::string key_prefix, const Clock* clock) {
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<RedisClient> client, RedisClient::Create(options, clock));
  std::string sha1 = Sha1Hex(kScript);
  if (sha1.empty()) return absl::InternalError("rate limiter: cannot hash the Lua script");
  return std::unique_ptr<RedisRateLimiter>(
      new RedisRateLimiter(std::move(client), std::move(key_prefix), std::move(sha1), clock));
}

absl::StatusOr<bool> RedisRateLimiter::AcquireGlobal(std::string_view identity, double rate,
                                                     double burst, int64_t* retry_after_ms) {
  const SteadyTime deadline = std::chrono::steady_clock::now() + client_->options().command_timeout;
  const std::string key =
      absl::StrCat(key_prefix_, absl::string_view(identity.data(), identity.size()));
  const std::string rate_arg = FormatDouble(rate);
  const std::string burst_arg = FormatDouble(burst);
  // Long enough for an idle bucket to fill up again; after that it may as well be gone.
  const double ttl = std::min(std::ceil(burst / rate * 1000.0) + 1000.0, 86'400'000.0 * 30);
  const std::string ttl_arg = absl::StrCat(static_cast<int64_t>(ttl));

  std::string_view args[] = {"EVALSHA", script_sha1_, "1", key, rate_arg, burst_arg, ttl_arg};
  KMS_ASSIGN_OR_RETURN(RedisValue reply, client_->CommandBefore(deadline, args));
  if (reply.is_error() && reply.str.rfind("NOSCRIPT", 0) == 0) {
    // Not cached on this server (restart, SCRIPT FLUSH): EVAL runs and caches it.
    args[0] = "EVAL";
    args[1] = kScript;
    KMS_ASSIGN_OR_RETURN(reply, client_->CommandBefore(deadline, args));
  }
  if (reply.is_error()) {
    return absl::InternalError(absl::StrCat("rate limit script failed: ", reply.str));
  }
  if (reply.type != RedisValue::Type::kArray || reply.elements.size() != 2 ||
      reply.elements[0].type != RedisValue::Type::kInteger ||
      reply.elements[1].type != RedisValue::Type::kInteger) {
    return absl::InternalError("rate limit script returned an unexpected reply");
  }
  *retry_after_ms = reply.elements[1].integer;
  return reply.elements[0].integer == 1;
}

absl::Status RedisRateLimiter::Acquire(std::string_view identity, double rate_per_second,
                                       double burst) {
  KMS_RETURN_IF_ERROR(ValidateLimits(rate_per_second, burst));
  int64_t retry_after_ms = 0;
  absl::StatusOr<bool> allowed = AcquireGlobal(identity, rate_per_second, burst, &retry_after_ms);
  if (!allowed.ok()) {
    // Unavailable/slow Redis is logged by the client on the transition; a script failure
    // is a bug or a misconfigured server: log the first and then every 10000th.
    if (allowed.status().code() == absl::StatusCode::kInternal &&
        script_errors_.fetch_add(1) % 10000 == 0) {
      spdlog::error("{}; using the per-replica limit", std::string(allowed.status().message()));
    }
    return local_.Acquire(identity, rate_per_second, burst);
  }
  if (*allowed) return absl::OkStatus();
  return RateLimitExceededError(std::max<int64_t>(retry_after_ms, 1));
}

}  // namespace kms::coord
