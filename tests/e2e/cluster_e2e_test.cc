// End to end for cluster mode: three `kmsd --dev` replicas on one machine share a state
// dir (token, certificates, policy), one PostgreSQL (the test runner's) and a Redis of
// this test's own (so that it can kill it without disturbing other suites).
#include <signal.h>

#include <atomic>
#include <fstream>
#include <latch>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test::RunCommand;

// Long enough that a change seen within a second three times running came through Redis,
// not a lucky poll.
constexpr int kPollIntervalSeconds = 5;
constexpr int kReplicas = 3;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int FreePort() {
  auto r = RunCommand(
      "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])'");
  return std::stoi(r.out);
}

// A Redis of the test's own, on a free port; Kill() is a crash, Start() brings it back.
class PrivateRedis {
 public:
  explicit PrivateRedis(std::string dir) : dir_(std::move(dir)), port_(FreePort()) {}
  ~PrivateRedis() { Kill(); }
  bool Start() {
    auto r = RunCommand(absl::StrCat("redis-server --bind 127.0.0.1 --port ", port_,
                                     " --save '' --appendonly no --daemonize yes --pidfile ", dir_,
                                     "/redis.pid --logfile ", dir_, "/redis.log"));
    for (int i = 0; i < 50 && Pid() <= 0; ++i) std::this_thread::sleep_for(milliseconds(100));
    return r.exit_code == 0 && Pid() > 0;
  }
  void Kill() {
    pid_t pid = Pid();
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    for (int i = 0; i < 50 && kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(milliseconds(50));
    unlink((dir_ + "/redis.pid").c_str());
  }
  std::string addr() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  pid_t Pid() const {
    std::string s = test::ReadFileOrEmpty(dir_ + "/redis.pid");
    return s.empty() ? -1 : std::stoi(s);
  }
  std::string dir_;
  int port_;
};

class ClusterE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string conninfo = Env("KMS_TEST_PG_CONNINFO");
    const std::string password_file = Env("KMS_TEST_PG_PASSWORD_FILE");
    ASSERT_FALSE(conninfo.empty() || password_file.empty())
        << "KMS_TEST_PG_CONNINFO / KMS_TEST_PG_PASSWORD_FILE are not set: run through tools/test.sh, "
           "which starts a private PostgreSQL";
    dir_ = new test::TempDir("kmsd-cluster-e2e-");
    state_ = dir_->Join("state");

    // A database of this run's own.
    std::mt19937_64 rng(std::random_device{}());
    database_ = absl::StrCat("kmsd_cluster_", rng() % 1000000000);
    const std::string pgpass = dir_->Write(
        "pgpass", absl::StrCat("*:*:*:*:", test::ReadFileOrEmpty(password_file), "\n"), 0600);
    auto created = RunCommand(absl::StrCat("PGPASSFILE=", pgpass, " psql -q \"", conninfo,
                                           "\" -c 'CREATE DATABASE ", database_, "' 2>&1"));
    ASSERT_EQ(created.exit_code, 0) << created.out;
    conninfo_ = conninfo;
    if (const size_t db = conninfo_.find("dbname="); db != std::string::npos) {
      const size_t end = conninfo_.find(' ', db);
      conninfo_.erase(db, end == std::string::npos ? std::string::npos : end - db);
    }
    conninfo_ += " dbname=" + database_;
    password_file_ = password_file;

    // The state dir first (token, CA, policy), then a policy with a rate-limited client.
    {
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
          dir_->Join("setup.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    ASSERT_EQ(RunCommand(absl::StrCat(KMSD_BINARY, " --dev --state-dir ", state_,
                                      " --issue-client-cert limited")).exit_code, 0);
    nlohmann::json policy = nlohmann::json::parse(test::ReadFileOrEmpty(state_ + "/policy.json"));
    policy["identities"].push_back({{"identity", "spiffe://kmsd.dev/limited"},
                                    {"operations", {"encrypt", "decrypt"}},
                                    {"tenants", {"*"}},
                                    {"rate_limit", {{"requests_per_second", 0.5}, {"burst", 4}}}});
    std::ofstream(state_ + "/policy.json") << policy.dump(2);

    redis_ = new PrivateRedis(dir_->path());
    ASSERT_TRUE(redis_->Start());
    for (int i = 0; i < kReplicas; ++i) ASSERT_NO_FATAL_FAILURE(StartReplica(i));
  }

  static void TearDownTestSuite() {
    for (auto*& r : replicas_) {
      delete r;
      r = nullptr;
    }
    delete redis_;
    delete dir_;
  }

  static void StartReplica(int i) {
    auto p = test::KmsdProcess::Start(
        KMSD_BINARY,
        {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", "",
         "--postgres", conninfo_, "--postgres-password-file", password_file_, "--redis",
         redis_->addr(), "--poll-interval", std::to_string(kPollIntervalSeconds)},
        dir_->Join(absl::StrCat("replica", i, ".log")));
    ASSERT_TRUE(p.ok()) << p.status();
    delete replicas_[i];
    replicas_[i] = p->release();
  }

  static std::unique_ptr<v1::KeyService::Stub> Keys(int replica, const std::string& client = "billing") {
    return v1::KeyService::NewStub(e2e::DevChannel(state_, replicas_[replica]->grpc_addr(), client));
  }
  static std::unique_ptr<v1::AdminService::Stub> Admin(int replica) {
    return v1::AdminService::NewStub(e2e::DevChannel(state_, replicas_[replica]->grpc_addr(), "operator"));
  }

  static grpc::Status CreateTenant(int replica, const std::string& id) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    v1::CreateTenantResponse resp;
    return Admin(replica)->CreateTenant(&ctx, req, &resp);
  }
  static grpc::Status RotateTenant(int replica, const std::string& id, uint32_t* version = nullptr) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateTenantKeyRequest req;
    req.set_tenant_id(id);
    v1::RotateTenantKeyResponse resp;
    grpc::Status s = Admin(replica)->RotateTenantKey(&ctx, req, &resp);
    if (version) *version = resp.tenant().primary_dek_version();
    return s;
  }
  static grpc::Status Encrypt(int replica, const std::string& tenant, const std::string& plaintext,
                              v1::EncryptResponse* out, const std::string& client = "billing") {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx, seconds(5));
    v1::EncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_plaintext(plaintext);
    return Keys(replica, client)->Encrypt(&ctx, req, out);
  }
  static grpc::Status Decrypt(int replica, const std::string& tenant, const std::string& ciphertext,
                              v1::DecryptResponse* out) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx, seconds(5));
    v1::DecryptRequest req;
    req.set_tenant_id(tenant);
    req.set_ciphertext(ciphertext);
    return Keys(replica)->Decrypt(&ctx, req, out);
  }
  static uint32_t EncryptVersion(int replica, const std::string& tenant) {
    v1::EncryptResponse out;
    grpc::Status s = Encrypt(replica, tenant, "probe", &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.dek_version();
  }
  static v1::GetStatusResponse Status(int replica) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx, seconds(5));
    v1::GetStatusResponse resp;
    EXPECT_TRUE(Admin(replica)->GetStatus(&ctx, {}, &resp).ok());
    return resp;
  }
  // How long until every other replica encrypts `tenant` under `version` (or the limit).
  static milliseconds TimeUntilAllSee(const std::string& tenant, uint32_t version, int except,
                                      milliseconds limit) {
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      bool all = true;
      for (int r = 0; r < kReplicas; ++r) {
        if (r != except && EncryptVersion(r, tenant) != version) all = false;
      }
      if (all) break;
      std::this_thread::sleep_for(milliseconds(50));
    }
    return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
  }

  static test::TempDir* dir_;
  static std::string state_, conninfo_, password_file_, database_;
  static PrivateRedis* redis_;
  static test::KmsdProcess* replicas_[kReplicas];
};

test::TempDir* ClusterE2eTest::dir_ = nullptr;
std::string ClusterE2eTest::state_, ClusterE2eTest::conninfo_, ClusterE2eTest::password_file_,
    ClusterE2eTest::database_;
PrivateRedis* ClusterE2eTest::redis_ = nullptr;
test::KmsdProcess* ClusterE2eTest::replicas_[kReplicas] = {};

TEST_F(ClusterE2eTest, TenantCreatedOnOneReplicaEncryptsOnASecondAndDecryptsOnAThird) {
  ASSERT_TRUE(CreateTenant(0, "shared-co").ok());
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt(1, "shared-co", "alice@example.com", &enc).ok());
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt(2, "shared-co", enc.ciphertext(), &dec).ok());
  EXPECT_EQ(dec.plaintext(), "alice@example.com");
  for (int r = 0; r < kReplicas; ++r) EXPECT_EQ(Status(r).store_backend(), "postgres");
}

TEST_F(ClusterE2eTest, ExactlyOneReplicaLeads) {
  int leaders = 0;
  for (int r = 0; r < kReplicas; ++r) leaders += Status(r).leader() ? 1 : 0;
  EXPECT_EQ(leaders, 1);
}

TEST_F(ClusterE2eTest, RotationOnOneReplicaReachesTheOthersCachesWithinASecondWithRedis) {
  ASSERT_TRUE(CreateTenant(0, "hot-co").ok());
  for (uint32_t expected = 2; expected <= 4; ++expected) {
    for (int r = 0; r < kReplicas; ++r) ASSERT_EQ(EncryptVersion(r, "hot-co"), expected - 1);  // cached
    uint32_t version = 0;
    ASSERT_TRUE(RotateTenant(expected % kReplicas, "hot-co", &version).ok());
    ASSERT_EQ(version, expected);
    EXPECT_LT(TimeUntilAllSee("hot-co", expected, expected % kReplicas, milliseconds(3000)),
              milliseconds(1000));
  }
}

TEST_F(ClusterE2eTest, ShreddingOnOneReplicaStopsTheOthersWithinASecond) {
  ASSERT_TRUE(CreateTenant(0, "shred-co").ok());
  v1::EncryptResponse enc;
  for (int r = 0; r < kReplicas; ++r) ASSERT_TRUE(Encrypt(r, "shred-co", "x", &enc).ok());
  grpc::ClientContext ctx;
  e2e::Deadline(ctx);
  v1::ShredTenantRequest req;
  req.set_tenant_id("shred-co");
  req.set_confirm_tenant_id("shred-co");
  v1::ShredTenantResponse resp;
  ASSERT_TRUE(Admin(1)->ShredTenant(&ctx, req, &resp).ok());
  const auto start = std::chrono::steady_clock::now();
  bool refused_everywhere = false;
  while (!refused_everywhere && std::chrono::steady_clock::now() - start < seconds(3)) {
    refused_everywhere = true;
    for (int r = 0; r < kReplicas; ++r) {
      if (Encrypt(r, "shred-co", "x", &enc).error_code() != grpc::StatusCode::FAILED_PRECONDITION) {
        refused_everywhere = false;
      }
    }
  }
  EXPECT_TRUE(refused_everywhere);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(1));
}

TEST_F(ClusterE2eTest, RacingChangesToOneKeyProduceOneNewVersionAndOneError) {
  // Two replicas create the same tenant at once: one wins, one is told it exists.
  for (int round = 0; round < 5; ++round) {
    const std::string id = absl::StrCat("race-", round);
    std::latch go(2);
    grpc::Status results[2];
    std::thread a([&] { go.arrive_and_wait(); results[0] = CreateTenant(1, id); });
    std::thread b([&] { go.arrive_and_wait(); results[1] = CreateTenant(2, id); });
    a.join();
    b.join();
    EXPECT_EQ(results[0].ok() + results[1].ok(), 1) << "round " << round;
    for (const auto& s : results) {
      if (!s.ok()) EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
    }
  }
  // Two replicas rotate the same tenant at once: never two new versions from one start.
  ASSERT_TRUE(CreateTenant(0, "race-rotate").ok());
  uint32_t expected = 1;
  for (int round = 0; round < 5; ++round) {
    std::latch go(2);
    grpc::Status results[2];
    uint32_t versions[2] = {0, 0};
    std::thread a([&] { go.arrive_and_wait(); results[0] = RotateTenant(1, "race-rotate", &versions[0]); });
    std::thread b([&] { go.arrive_and_wait(); results[1] = RotateTenant(2, "race-rotate", &versions[1]); });
    a.join();
    b.join();
    const int oks = results[0].ok() + results[1].ok();
    EXPECT_GE(oks, 1);
    for (int i = 0; i < 2; ++i) {
      if (!results[i].ok()) {
        EXPECT_EQ(results[i].error_code(), grpc::StatusCode::ABORTED) << results[i].error_message();
      }
    }
    if (oks == 2) EXPECT_NE(versions[0], versions[1]);  // serialized, not duplicated
    expected += oks;
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::GetTenantRequest req;
    req.set_tenant_id("race-rotate");
    v1::GetTenantResponse resp;
    ASSERT_TRUE(Admin(0)->GetTenant(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.tenant().primary_dek_version(), expected) << "round " << round;
  }
}

TEST_F(ClusterE2eTest, AClientOverItsRateIsRefusedOnEveryReplicaAndOthersAreNot) {
  ASSERT_TRUE(CreateTenant(0, "rate-co").ok());
  v1::EncryptResponse enc;
  int ok = 0;
  grpc::Status last;
  // Burst 4, refill 0.5/s: spread over the replicas, the fifth request is over.
  for (int i = 0; i < 4; ++i) {
    last = Encrypt(i % kReplicas, "rate-co", "x", &enc, "limited");
    ok += last.ok();
  }
  EXPECT_EQ(ok, 4) << last.error_message();
  for (int r = 0; r < kReplicas; ++r) {
    grpc::Status s = Encrypt(r, "rate-co", "x", &enc, "limited");
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << "replica " << r;
    EXPECT_NE(s.error_message().find("retry after"), std::string::npos) << s.error_message();
  }
  for (int r = 0; r < kReplicas; ++r) EXPECT_TRUE(Encrypt(r, "rate-co", "x", &enc).ok());  // billing
}

TEST_F(ClusterE2eTest, KillingRedisFailsNoRequestAndThePollCarriesChanges) {
  ASSERT_TRUE(CreateTenant(0, "poll-co").ok());
  for (int r = 0; r < kReplicas; ++r) ASSERT_EQ(EncryptVersion(r, "poll-co"), 1u);
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, requests{0};
  std::string first_failure;
  std::mutex mu;
  std::thread traffic([&] {
    for (int i = 0; !stop; ++i) {
      v1::EncryptResponse enc;
      grpc::Status s = Encrypt(i % kReplicas, "poll-co", "steady", &enc);
      v1::DecryptResponse dec;
      if (s.ok()) s = Decrypt((i + 1) % kReplicas, "poll-co", enc.ciphertext(), &dec);
      ++requests;
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (failures++ == 0) first_failure = s.error_message();
      }
    }
  });
  std::this_thread::sleep_for(milliseconds(300));
  redis_->Kill();
  std::this_thread::sleep_for(milliseconds(500));
  uint32_t version = 0;
  ASSERT_TRUE(RotateTenant(0, "poll-co", &version).ok());
  const milliseconds took =
      TimeUntilAllSee("poll-co", version, 0, seconds(kPollIntervalSeconds * 3 + 2));
  EXPECT_LE(took, milliseconds(kPollIntervalSeconds * 1000 + 1500)) << "no poll carried the change";
  stop = true;
  traffic.join();
  EXPECT_GT(requests, 10);
  EXPECT_EQ(failures, 0) << first_failure;
  for (int r = 0; r < kReplicas; ++r) {
    const v1::GetStatusResponse status = Status(r);
    bool reported = false;
    for (const auto& b : status.backends()) {
      if (b.name() == "redis") {
        reported = true;
        EXPECT_FALSE(b.healthy()) << "replica " << r;
      }
    }
    EXPECT_TRUE(reported) << "replica " << r << " does not report Redis";
  }
  ASSERT_TRUE(redis_->Start());
}

// Last: kills a replica.
TEST_F(ClusterE2eTest, WhenTheLeaderDiesAnotherTakesOver) {
  int leader = -1;
  for (int r = 0; r < kReplicas; ++r) {
    if (Status(r).leader()) leader = r;
  }
  ASSERT_GE(leader, 0);
  replicas_[leader]->Kill();
  const auto start = std::chrono::steady_clock::now();
  int new_leaders = 0;
  while (std::chrono::steady_clock::now() - start < seconds(10)) {
    new_leaders = 0;
    for (int r = 0; r < kReplicas; ++r) {
      if (r != leader && Status(r).leader()) ++new_leaders;
    }
    if (new_leaders > 0) break;
    std::this_thread::sleep_for(milliseconds(200));
  }
  EXPECT_EQ(new_leaders, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));  // within the lock check period
}

}  // namespace
}  // namespace kms
