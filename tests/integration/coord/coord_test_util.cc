#include "coord_test_util.h"

#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace kms::coord::test {

std::string SharedRedisAddr() {
  const char* addr = std::getenv("KMS_TEST_REDIS_ADDR");
  return addr == nullptr ? "" : addr;
}

std::string UniqueName(const std::string& prefix) {
  static std::atomic<int> counter{0};
  static const uint32_t random = std::random_device{}();
  return absl::StrCat(prefix, getpid(), "-", counter.fetch_add(1), "-", random);
}

RedisOptions TestOptions(const std::string& addr) {
  RedisOptions options;
  options.addr = addr;
  options.connect_timeout = std::chrono::milliseconds(500);
  options.command_timeout = std::chrono::milliseconds(250);
  return options;
}

PrivateRedis::PrivateRedis(std::vector<std::string> extra_args)
    : extra_args_(std::move(extra_args)) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "kmsd-redis-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    perror("mkdtemp");
    std::abort();
  }
  dir_ = tmpl;
  socket_path_ = dir_ + "/r.sock";
}

PrivateRedis::~PrivateRedis() {
  Kill();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::Status PrivateRedis::Start() {
  if (pid_ > 0) return absl::FailedPreconditionError("private redis is already running");
  const std::string log = dir_ + "/redis.log";
  std::vector<std::string> args = {
      "redis-server", "--port", "0",  "--unixsocket", socket_path_, "--unixsocketperm",
      "700",          "--save", "",   "--appendonly", "no",         "--daemonize",
      "no",           "--dir",  dir_, "--logfile",    log};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, "redis-server", nullptr, nullptr, argv.data(), environ);
  if (rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start redis-server (is it installed?): errno ", rc));
  }
  pid_ = pid;
  RedisEndpoint endpoint;
  endpoint.is_unix = true;
  endpoint.host = socket_path_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    auto connection = RedisConnection::Connect(endpoint, std::chrono::milliseconds(200));
    if (connection.ok()) {
      const std::string_view ping[] = {"PING"};
      auto reply = (*connection)->Command(ping, std::chrono::milliseconds(200));
      if (reply.ok()) return absl::OkStatus();  // PONG, or NOAUTH: it is up
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("redis-server exited at start; see ", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Kill();
  return absl::DeadlineExceededError(absl::StrCat("redis-server did not answer; see ", log));
}

void PrivateRedis::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::function<void(const InvalidationEvent&)> EventLog::Handler() {
  return [this](const InvalidationEvent& event) {
    {
      MutexLock lock(&mu_);
      events_.push_back(event);
    }
    cv_.notify_all();
  };
}

bool EventLog::WaitForCount(size_t count, std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  return mu_.AwaitUntil(cv_, std::chrono::steady_clock::now() + timeout,
                        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return events_.size() >= count; });
}

bool EventLog::WaitFor(const std::function<bool(const InvalidationEvent&)>& match, size_t from,
                       std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  return mu_.AwaitUntil(cv_, std::chrono::steady_clock::now() + timeout,
                        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (size_t i = from; i < events_.size(); ++i) {
      if (match(events_[i])) return true;
    }
    return false;
  });
}

std::vector<InvalidationEvent> EventLog::events() const {
  MutexLock lock(&mu_);
  return events_;
}

size_t EventLog::size() const {
  MutexLock lock(&mu_);
  return events_.size();
}

bool IsSyntheticAll(const InvalidationEvent& event) {
  return event.kind == InvalidationEvent::Kind::kAll && event.origin.empty();
}

}  // namespace kms::coord::test
