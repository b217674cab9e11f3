// Crash safety (issue 9): kmsd SIGKILLed at random moments, at least 20 times, while
// clients create tenants, rotate DEKs, rotate the KEK (which starts the re-wrap job) and
// encrypt; also killed during its own start-up; and PostgreSQL's own processes SIGKILLed
// mid-transaction. After every crash:
// the node starts again (a crash at any moment, start-up included, never leaves a state
// that cannot start), every ciphertext whose Encrypt was acknowledged decrypts to its
// plaintext, every acknowledged tenant exists, and the store's invariants hold (one
// active primary DEK per active tenant, no DEK above the primary, every live DEK wrapped
// under an active KEK), and at the end the audit chain verifies (`kmsctl audit verify`).
//
// Kills PostgreSQL backends of the shared server: ctest runs this suite alone.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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

constexpr int kKills = 20;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

struct Acked {
  std::string tenant;
  std::string plaintext;
  std::string ciphertext;
};

class CrashE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string conninfo = Env("KMS_TEST_PG_CONNINFO");
    const std::string password_file = Env("KMS_TEST_PG_PASSWORD_FILE");
    pg_ctl_ = Env("KMS_TEST_PG_CTL");
    ASSERT_FALSE(conninfo.empty() || password_file.empty() || pg_ctl_.empty())
        << "KMS_TEST_PG_* are not set: run through tools/test.sh";
    dir_ = std::make_unique<test::TempDir>("kmsd-crash-e2e-");
    state_ = dir_->Join("state");
    std::mt19937_64 rng(std::random_device{}());
    const std::string database = absl::StrCat("kmsd_crash_", rng() % 1000000000);
    pgpass_ = dir_->Write("pgpass",
                          absl::StrCat("*:*:*:*:", test::ReadFileOrEmpty(password_file), "\n"), 0600);
    auto created = RunCommand(absl::StrCat("PGPASSFILE=", pgpass_, " psql -q \"", conninfo,
                                           "\" -c 'CREATE DATABASE ", database, "' 2>&1"));
    ASSERT_EQ(created.exit_code, 0) << created.out;
    db_conninfo_ = conninfo;
    if (const size_t db = db_conninfo_.find("dbname="); db != std::string::npos) {
      const size_t end = db_conninfo_.find(' ', db);
      db_conninfo_.erase(db, end == std::string::npos ? std::string::npos : end - db);
    }
    db_conninfo_ += " dbname=" + database;
    database_ = database;
    {
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY,
          {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
          dir_->Join("setup.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    nlohmann::json config = e2e::DevStateConfig(state_, "");
    config["store"] = {{"backend", "postgres"},
                       {"postgres", {{"conninfo", db_conninfo_}, {"password_file", password_file}}}};
    config["cluster"] = {{"poll_interval_seconds", 1}};
    // Re-wrap fast, so that kills land inside the job.
    config["rotation"] = {{"rewrap_rate_per_second", 200}};
    config_path_ = dir_->Write("kmsd.json", config.dump(2), 0600);
  }

  // A crash during start-up: kmsd SIGKILLed `ms` milliseconds after it was spawned.
  void KillDuringStartUp(int ms) {
    RunCommand(absl::StrCat("timeout -s KILL ", ms / 1000.0, " ", KMSD_BINARY, " --config ",
                            config_path_, " >", dir_->Join(absl::StrCat("startup", starts_++, ".log")),
                            " 2>&1"));
  }

  void Start() {
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", config_path_},
                                      dir_->Join(absl::StrCat("kmsd", starts_++, ".log")),
                                      seconds(60));
    ASSERT_TRUE(p.ok()) << "kmsd did not start again after a crash: " << p.status();
    kmsd_ = std::move(*p);
  }

  std::shared_ptr<grpc::Channel> Channel(const std::string& client) {
    return e2e::DevChannel(state_, kmsd_->grpc_addr(), client);
  }

  // One query's single value through psql.
  std::string Sql(const std::string& query) {
    auto r = RunCommand(absl::StrCat("PGPASSFILE=", pgpass_, " psql -qtA \"", db_conninfo_,
                                     "\" -c \"SET search_path = kmsd; ", query, "\" 2>&1"));
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
  }

  void ExpectInvariants() {
    // One active primary DEK per active tenant.
    EXPECT_EQ(Sql("SELECT count(*) FROM tenants t LEFT JOIN tenant_deks d ON d.tenant_id = t.id "
                  "AND d.version = t.primary_dek_version WHERE t.state = 'active' AND "
                  "(d.tenant_id IS NULL OR d.state <> 'active')"),
              "0");
    // No DEK version above its tenant's primary.
    EXPECT_EQ(Sql("SELECT count(*) FROM tenant_deks d JOIN tenants t ON t.id = d.tenant_id "
                  "WHERE d.version > t.primary_dek_version"),
              "0");
    // Every live DEK wrapped under an active KEK.
    EXPECT_EQ(Sql("SELECT count(*) FROM tenant_deks d LEFT JOIN kek_versions k ON k.version = "
                  "d.kek_version WHERE d.state <> 'destroyed' AND (k.version IS NULL OR "
                  "k.state <> 'active')"),
              "0");
  }

  // SIGKILLs one PostgreSQL backend process (by pid): the server restarts every backend
  // (crash recovery), aborting whatever transaction was in flight.
  bool KillPostgresBackend() {
    const size_t d = pg_ctl_.find(" -D ");
    if (d == std::string::npos) return false;
    const std::string pidfile = test::ReadFileOrEmpty(pg_ctl_.substr(d + 4) + "/postmaster.pid");
    if (pidfile.empty()) return false;
    const int postmaster = std::stoi(pidfile);
    // A client backend ("postgres: kmsd <db> ..."), not a background process.
    auto r = RunCommand(absl::StrCat("pgrep -P ", postmaster, " -f 'postgres: kmsd ", database_, " '"));
    std::vector<std::string> pids = absl::StrSplit(r.out, '\n', absl::SkipWhitespace());
    if (pids.empty()) return false;
    return kill(std::stoi(pids.front()), SIGKILL) == 0;
  }

  std::unique_ptr<test::TempDir> dir_;
  std::string state_;
  std::string pg_ctl_;
  std::string pgpass_;
  std::string db_conninfo_;
  std::string database_;
  std::string config_path_;
  std::unique_ptr<test::KmsdProcess> kmsd_;
  int starts_ = 0;
};

TEST_F(CrashE2eTest, EveryAcknowledgedWriteSurvivesSigkillAtRandomMoments) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::mt19937 rng(12345);
  std::mutex mu;
  std::vector<std::string> tenants;  // acknowledged CreateTenant
  std::vector<Acked> acked;          // acknowledged Encrypt
  int next_tenant = 0;
  int pg_kills = 0;
  int kek_rotations = 0;
  int startup_kills = 0;

  for (int round = 0; round < kKills; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    std::atomic<bool> stop{false};
    auto admin = v1::AdminService::NewStub(Channel("operator"));
    auto keys = v1::KeyService::NewStub(Channel("billing"));
    std::thread creator([&] {
      while (!stop.load()) {
        std::string id;
        {
          std::lock_guard lock(mu);
          id = absl::StrCat("crash-", next_tenant++);
        }
        grpc::ClientContext ctx;
        e2e::Deadline(ctx, seconds(5));
        v1::CreateTenantRequest req;
        req.set_tenant_id(id);
        v1::CreateTenantResponse resp;
        if (admin->CreateTenant(&ctx, req, &resp).ok()) {
          std::lock_guard lock(mu);
          tenants.push_back(id);
        }
      }
    });
    std::thread rotator([&, round] {
      std::mt19937 local(round);
      while (!stop.load()) {
        std::string id;
        {
          std::lock_guard lock(mu);
          if (!tenants.empty()) id = tenants[local() % tenants.size()];
        }
        if (id.empty()) {
          std::this_thread::sleep_for(milliseconds(10));
          continue;
        }
        grpc::ClientContext ctx;
        e2e::Deadline(ctx, seconds(5));
        v1::RotateTenantKeyRequest req;
        req.set_tenant_id(id);
        v1::RotateTenantKeyResponse resp;
        (void)admin->RotateTenantKey(&ctx, req, &resp);
      }
    });
    std::thread encryptor([&, round] {
      std::mt19937 local(round + 1000);
      int n = 0;
      while (!stop.load()) {
        std::string id;
        {
          std::lock_guard lock(mu);
          if (!tenants.empty()) id = tenants[local() % tenants.size()];
        }
        if (id.empty()) {
          std::this_thread::sleep_for(milliseconds(10));
          continue;
        }
        grpc::ClientContext ctx;
        e2e::Deadline(ctx, seconds(5));
        v1::EncryptRequest req;
        req.set_tenant_id(id);
        req.set_plaintext(absl::StrCat("round ", round, " value ", n++));
        v1::EncryptResponse resp;
        if (keys->Encrypt(&ctx, req, &resp).ok()) {
          std::lock_guard lock(mu);
          acked.push_back({id, req.plaintext(), resp.ciphertext()});
        }
      }
    });
    // Every few rounds, a KEK rotation: the re-wrap job runs across the next kills.
    if (round % 4 == 1) {
      grpc::ClientContext ctx;
      e2e::Deadline(ctx, seconds(5));
      v1::RotateKekResponse resp;
      if (admin->RotateKek(&ctx, {}, &resp).ok()) ++kek_rotations;
    }
    std::this_thread::sleep_for(milliseconds(100 + rng() % 600));
    if (round % 5 == 3 && KillPostgresBackend()) {
      // PostgreSQL's own crash: kmsd stays up and reconnects by itself.
      ++pg_kills;
      std::this_thread::sleep_for(milliseconds(300 + rng() % 300));
    }
    kmsd_->Kill();  // the crash
    stop = true;
    creator.join();
    rotator.join();
    encryptor.join();
    if (round % 3 == 2) {
      KillDuringStartUp(100 + rng() % 900);  // and another, while it starts
      ++startup_kills;
    }
    ASSERT_NO_FATAL_FAILURE(Start());  // every crash leaves a node that starts
    ExpectInvariants();
  }

  // Every acknowledged write, after 20 crashes.
  auto keys = v1::KeyService::NewStub(Channel("billing"));
  auto admin = v1::AdminService::NewStub(Channel("operator"));
  for (const std::string& id : tenants) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::GetTenantRequest req;
    req.set_tenant_id(id);
    v1::GetTenantResponse resp;
    grpc::Status s = admin->GetTenant(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << id << ": " << s.error_message();
  }
  int decrypted = 0;
  for (const Acked& a : acked) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptRequest req;
    req.set_tenant_id(a.tenant);
    req.set_ciphertext(a.ciphertext);
    v1::DecryptResponse resp;
    grpc::Status s = keys->Decrypt(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << a.tenant << ": " << s.error_message();
    if (s.ok()) {
      EXPECT_EQ(resp.plaintext(), a.plaintext);
      ++decrypted;
    }
  }
  ExpectInvariants();
  // The audit chain: every record this node wrote, across all the crashes, links up.
  const std::string kmsctl_json = dir_->Write(
      "kmsctl.json",
      nlohmann::json{{"addr", kmsd_->grpc_addr()},
                     {"ca", state_ + "/pki/ca.pem"},
                     {"cert", state_ + "/pki/clients/operator.pem"},
                     {"key", state_ + "/pki/clients/operator.key"}}
          .dump(),
      0644);
  auto verify = RunCommand(
      absl::StrCat("KMSCTL_CONFIG=", kmsctl_json, " ", KMSCTL_BINARY, " audit verify 2>&1"));
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_NE(verify.out.find("intact"), std::string::npos) << verify.out;
  std::printf("CRASH-FIGURES kills=%d startup_kills=%d pg_backend_kills=%d kek_rotations=%d "
              "tenants=%zu acknowledged_ciphertexts=%zu decrypted=%d\n",
              kKills + startup_kills, startup_kills, pg_kills, kek_rotations, tenants.size(),
              acked.size(), decrypted);
  EXPECT_GT(tenants.size(), 20u);
  EXPECT_GT(acked.size(), 100u);
  EXPECT_GT(kek_rotations, 0);
  EXPECT_GT(pg_kills, 0);
  EXPECT_GT(startup_kills, 0);
}

}  // namespace
}  // namespace kms
