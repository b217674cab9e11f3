// The gRPC door's bounds that need no running server: the in-flight budget, the
// open-file limit check and the listener probe's failure modes.
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "src/server/gate/inflight_budget.h"
#include "src/server/grpc/listener_probe.h"
#include "src/server/http/https_server.h"
#include "src/server/open_file_limit.h"

namespace kms::server {
namespace {

TEST(InflightBudgetTest, AdmitsUpToTheBudgetAndRefusesBeyondWithARetryHint) {
  InflightBudget budget(100);
  auto a = budget.Admit(60);
  ASSERT_TRUE(a.ok());
  auto b = budget.Admit(40);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(budget.in_flight(), 100);
  auto c = budget.Admit(1);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("retry after"), std::string::npos);
  EXPECT_EQ(budget.refused(), 1);
  *a = InflightBudget::Ticket();  // returns its share
  EXPECT_EQ(budget.in_flight(), 40);
  EXPECT_TRUE(budget.Admit(60).ok());  // and the temporary ticket is returned at once
  EXPECT_EQ(budget.in_flight(), 40);
  EXPECT_EQ(budget.Admit(101).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(InflightBudgetTest, ConcurrentCallsNeverTakeItPastTheBudget) {
  InflightBudget budget(1000);
  std::atomic<int64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        auto ticket = budget.Admit(7 + i % 300);
        if (!ticket.ok()) continue;
        int64_t now = budget.in_flight();
        int64_t seen = peak.load();
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 1000);
  EXPECT_EQ(budget.in_flight(), 0);
}

TEST(OpenFileLimitTest, NeedsCountEveryBackendAndTheHttpsListener) {
  config::Config c;
  c.hsm.max_sessions = 16;
  c.http.max_connections = 256;
  const OpenFileNeeds sqlite = OpenFileNeedsOf(c);
  EXPECT_EQ(sqlite.https, 257);
  EXPECT_EQ(sqlite.grpc, kMinGrpcConnections);
  c.store.backend = "postgres";
  c.store.postgres.pool_size = 40;
  c.redis.addr = "127.0.0.1:6379";
  EXPECT_GT(OpenFileNeedsOf(c).backends, sqlite.backends + 30);
  c.http_listen.clear();
  EXPECT_EQ(OpenFileNeedsOf(c).https, 0);
}

// Runs in a child process (setrlimit changes are per process); exits 0 when all held.
void RaiseAndRefuseInChild() {
  rlimit l{.rlim_cur = 900, .rlim_max = 1000};
  if (setrlimit(RLIMIT_NOFILE, &l) != 0) _exit(2);
  OpenFileNeeds small{.backends = 10, .https = 10, .process = 10, .grpc = 10};
  auto raised = RaiseOpenFileLimit(small);
  if (!raised.ok() || *raised != 1000) _exit(3);
  OpenFileNeeds big{.backends = 500, .https = 257, .process = 128, .grpc = 512};
  auto refused = RaiseOpenFileLimit(big);
  if (refused.status().code() != absl::StatusCode::kFailedPrecondition) _exit(4);
  const std::string m(refused.status().message());
  if (m.find("1000") == std::string::npos || m.find("1397") == std::string::npos ||
      m.find("LimitNOFILE") == std::string::npos) {
    _exit(5);
  }
  _exit(0);
}

TEST(OpenFileLimitTest, RaisesTheSoftLimitToTheHardOneAndRefusesWhenTooLow) {
  EXPECT_EXIT(RaiseAndRefuseInChild(), ::testing::ExitedWithCode(0), "");
}

TEST(ListenerProbeTest, AClosedPortIsUnavailable) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);  // bound, never listened: the port refuses
  absl::Status s = ProbeTlsListener("127.0.0.1:0", ntohs(addr.sin_port), std::chrono::seconds(2));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

// What a dead gRPC listener looks like: the kernel completes TCP handshakes into the
// backlog, but nobody accepts, so no TLS answer comes.
TEST(ListenerProbeTest, AListenerThatNeverAcceptsTimesOut) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  absl::Status s =
      ProbeTlsListener("0.0.0.0:1", ntohs(addr.sin_port), std::chrono::milliseconds(300));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("timed out"), std::string::npos) << s;
  close(fd);
}

// The HTTPS listener's parsing as a function (what the http_request fuzz target drives).
TEST(ParseRequestBytesTest, ParsesWhatTheListenerParsesAndAnswersWhatItAnswers) {
  config::HttpConfig limits;
  limits.max_header_bytes = 1024;
  limits.max_body_bytes = 8;
  auto ok = http::ParseRequestBytes(
      "GET /healthz?x=1 HTTP/1.1\r\nHost: k\r\n\r\nGET /next HTTP/1.1\r\n", limits);
  ASSERT_TRUE(ok.complete);
  EXPECT_EQ(ok.request.path, "/healthz");
  EXPECT_EQ(ok.request.query, "x=1");
  EXPECT_EQ(ok.consumed, std::string("GET /healthz?x=1 HTTP/1.1\r\nHost: k\r\n\r\n").size());
  EXPECT_TRUE(ok.keep_alive);
  auto body = http::ParseRequestBytes("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", limits);
  ASSERT_TRUE(body.complete);
  EXPECT_EQ(body.request.body, "hello");
  EXPECT_EQ(http::ParseRequestBytes("POST /x HTTP/1.1\r\nContent-Length: 9\r\n\r\n", limits).status,
            413);
  EXPECT_EQ(http::ParseRequestBytes("GET / HTTP/1.1\r\nX: " + std::string(2000, 'a') + "\r\n\r\n",
                                    limits).status,
            431);
  EXPECT_EQ(http::ParseRequestBytes(std::string("G\0T / HTTP/1.1\r\n\r\n", 18), limits).status, 400);
  auto partial = http::ParseRequestBytes("GET /healthz HTTP/1.1\r\nHo", limits);
  EXPECT_FALSE(partial.complete);
  EXPECT_EQ(partial.status, 0);
}

}  // namespace
}  // namespace kms::server
