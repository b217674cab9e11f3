// AUTH with RedisOptions::password_file, on a private redis-server with requirepass.
#include <fstream>
#include <string>

#include "coord_test_util.h"
#include "gtest/gtest.h"
#include "src/coord/rate_limiters.h"
#include "src/coord/redis_client.h"

namespace kms::coord {
namespace {

std::string WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(RedisAuthTest, PasswordFromTheFileIsSent) {
  test::PrivateRedis redis({"--requirepass", "s3cret-pw"});
  ASSERT_TRUE(redis.Start().ok());
  RedisOptions options = test::TestOptions(redis.addr());
  options.password_file = WriteFile(redis.dir() + "/pw", "s3cret-pw\n");
  auto client = RedisClient::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<RedisValue> reply = (*client)->Command({"PING"});
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->str, "PONG");
  // The limiter is global (not the fallback) with the password.
  auto limiter = RedisRateLimiter::Create(options);
  ASSERT_TRUE(limiter.ok()) << limiter.status();
  EXPECT_TRUE((*limiter)->Acquire("alice", 1, 1).ok());
  EXPECT_TRUE((*limiter)->healthy());
}

TEST(RedisAuthTest, WrongPasswordIsPermissionDenied) {
  test::PrivateRedis redis({"--requirepass", "s3cret-pw"});
  ASSERT_TRUE(redis.Start().ok());
  RedisOptions options = test::TestOptions(redis.addr());
  options.password_file = WriteFile(redis.dir() + "/pw", "wrong");
  auto client = RedisClient::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Command({"PING"}).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE((*client)->healthy());
}

TEST(RedisAuthTest, MissingPasswordGetsAnErrorReply) {
  test::PrivateRedis redis({"--requirepass", "s3cret-pw"});
  ASSERT_TRUE(redis.Start().ok());
  auto client = RedisClient::Create(test::TestOptions(redis.addr()));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<RedisValue> reply = (*client)->Command({"PING"});
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(reply->is_error());
  EXPECT_EQ(reply->str.rfind("NOAUTH", 0), 0u) << reply->str;
}

}  // namespace
}  // namespace kms::coord
