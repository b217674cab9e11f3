// RedisClient behaviour that needs no Redis: option validation, backoff, failing fast.
#include "src/coord/redis_client.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "kms/common/clock.h"
#include "src/coord/rate_limiters.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::coord {
namespace {

using ::kms::testing::SimulatedClock;

using std::chrono::milliseconds;

RedisOptions Options(std::string addr) {
  RedisOptions options;
  options.addr = std::move(addr);
  return options;
}

TEST(RedisEndpointTest, ParsesTcpAndUnixAddresses) {
  absl::StatusOr<RedisEndpoint> tcp = RedisEndpoint::FromOptions(Options("127.0.0.1:6380"));
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  EXPECT_FALSE(tcp->is_unix);
  EXPECT_EQ(tcp->host, "127.0.0.1");
  EXPECT_EQ(tcp->port, 6380);
  absl::StatusOr<RedisEndpoint> v6 = RedisEndpoint::FromOptions(Options("[::1]:7000"));
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  absl::StatusOr<RedisEndpoint> unix_socket =
      RedisEndpoint::FromOptions(Options("unix:/tmp/r.sock"));
  ASSERT_TRUE(unix_socket.ok()) << unix_socket.status();
  EXPECT_TRUE(unix_socket->is_unix);
  EXPECT_EQ(unix_socket->host, "/tmp/r.sock");
  EXPECT_EQ(unix_socket->ToString(), "unix:/tmp/r.sock");
}

TEST(RedisEndpointTest, RejectsMalformedAddresses) {
  for (const char* addr :
       {"", "localhost", ":6379", "host:", "host:0", "host:65536", "host:6x", "unix:"}) {
    EXPECT_EQ(RedisEndpoint::FromOptions(Options(addr)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << addr;
  }
  RedisOptions zero = Options("127.0.0.1:1");
  zero.command_timeout = milliseconds(0);
  EXPECT_EQ(RedisEndpoint::FromOptions(zero).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RedisEndpointTest, MissingPasswordFileIsAStartupError) {
  RedisOptions options = Options("127.0.0.1:1");
  options.password_file = "/nonexistent/kmsd-redis-password";
  EXPECT_EQ(RedisEndpoint::FromOptions(options).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(RedisEndpointTest, PasswordIsReadIntoSecretBytesWithoutItsLineBreak) {
  std::string dir = (std::filesystem::temp_directory_path() / "kmsd-redis-pw-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  const std::string path = dir + "/pw";
  std::ofstream(path) << "s3cret pw \r\n";
  RedisOptions options = Options("127.0.0.1:1");
  options.password_file = path;
  absl::StatusOr<RedisEndpoint> endpoint = RedisEndpoint::FromOptions(options);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  // Only the line break goes: a Redis password may end in a space.
  EXPECT_TRUE(endpoint->password.Equals(SecretBytes::CopyOf(std::string_view("s3cret pw "))));
  EXPECT_EQ(endpoint->ToString().find("s3cret"), std::string::npos);

  // A directory, or an empty file, is refused at start-up too.
  options.password_file = dir;
  EXPECT_EQ(RedisEndpoint::FromOptions(options).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::ofstream(path, std::ios::trunc) << "\n";
  options.password_file = path;
  EXPECT_EQ(RedisEndpoint::FromOptions(options).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::filesystem::remove_all(dir);
}

TEST(BackoffTest, DoublesFromOneHundredMillisecondsToFiveSeconds) {
  SimulatedClock clock;
  Backoff backoff(&clock);
  EXPECT_TRUE(backoff.Ready());
  const int64_t expected[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
  for (int64_t ms : expected) {
    backoff.Failed();
    EXPECT_FALSE(backoff.Ready());
    clock.Advance(milliseconds(ms - 1));
    EXPECT_FALSE(backoff.Ready()) << ms;
    clock.Advance(milliseconds(1));
    EXPECT_TRUE(backoff.Ready()) << ms;
  }
  backoff.Succeeded();
  EXPECT_EQ(backoff.current_delay(), milliseconds(100));
  EXPECT_TRUE(backoff.Ready());
}

TEST(RedisClientTest, UnreachableRedisFailsFastAndThenBacksOff) {
  SimulatedClock clock;
  absl::StatusOr<std::unique_ptr<RedisClient>> client =
      RedisClient::Create(Options("unix:/nonexistent/kmsd-test.sock"), &clock);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->healthy());
  EXPECT_EQ((*client)->Command({"PING"}).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE((*client)->healthy());
  // Backing off: answered without an attempt.
  const absl::Status backing_off = (*client)->Command({"PING"}).status();
  EXPECT_EQ(backing_off.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(backing_off.message().find("next attempt in"), absl::string_view::npos) << backing_off;
}

TEST(RedisRateLimiterTest, FallsBackToTheLocalBucketWithoutRedis) {
  SimulatedClock clock;
  absl::StatusOr<std::unique_ptr<RedisRateLimiter>> limiter =
      RedisRateLimiter::Create(Options("unix:/nonexistent/kmsd-test.sock"), "kmsd:rl:", &clock);
  ASSERT_TRUE(limiter.ok()) << limiter.status();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE((*limiter)->Acquire("alice", 10, 3).ok()) << i;
  EXPECT_EQ((*limiter)->Acquire("alice", 10, 3).message(),
            "rate limit exceeded; retry after 100 ms");
  EXPECT_TRUE((*limiter)->Acquire("bob", 10, 3).ok());
  EXPECT_FALSE((*limiter)->healthy());
}

TEST(RedisRateLimiterTest, ScriptHashIsTheSha1OfTheScript) {
  absl::StatusOr<std::unique_ptr<RedisRateLimiter>> limiter =
      RedisRateLimiter::Create(Options("127.0.0.1:1"));
  ASSERT_TRUE(limiter.ok()) << limiter.status();
  EXPECT_EQ((*limiter)->script_sha1().size(), 40u);
}

}  // namespace
}  // namespace kms::coord
