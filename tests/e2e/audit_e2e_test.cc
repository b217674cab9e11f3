// End to end: the audit log of a real kmsd (config-file mode on a dev state dir, SQLite),
// read and verified by kmsctl; a record changed behind kmsd's back is named by
// `kmsctl audit verify`; an admin call acknowledged just before a SIGKILL keeps its record.
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using test::RunCommand;

class AuditE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-audit-e2e-");
    state_ = dir_->Join("state");
    // A dev node once, for its token, certificates and policy; then config-file mode on
    // them, with a fixed node id and a database path the test can reach.
    auto dev = test::KmsdProcess::Start(
        KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0",
                      "--http-listen", "127.0.0.1:0"},
        dir_->Join("dev.log"));
    ASSERT_TRUE(dev.ok()) << dev.status();
    ASSERT_EQ((*dev)->Stop(), 0);
    db_ = dir_->Join("audit.db");
    nlohmann::json config = e2e::DevStateConfig(state_, db_);
    config["node_id"] = "audit-node";
    config["audit"] = {{"flush_interval_ms", 100}};
    config_ = dir_->Write("kmsd.json", config.dump(2), 0644);
    Start();
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }
  static void Start() {
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", config_}, dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
    // kmsctl reaches this node through the dev kmsctl.json, with this node's address.
    kmsctl_json_ = dir_->Write(
        "kmsctl.json",
        nlohmann::json{{"addr", kmsd_->grpc_addr()},
                       {"ca", state_ + "/pki/ca.pem"},
                       {"cert", state_ + "/pki/clients/operator.pem"},
                       {"key", state_ + "/pki/clients/operator.key"}}
            .dump(),
        0644);
  }
  static test::CommandResult Kmsctl(const std::string& args) {
    return RunCommand(absl::StrCat("KMSCTL_CONFIG=", kmsctl_json_, " ", KMSCTL_BINARY, " ", args,
                                   " 2>&1"));
  }
  static std::vector<nlohmann::json> Tail(int n) {
    auto tail = Kmsctl(absl::StrCat("audit tail -o json -n ", n));
    EXPECT_EQ(tail.exit_code, 0) << tail.out;
    std::vector<nlohmann::json> out;
    for (absl::string_view line : absl::StrSplit(tail.out, '\n', absl::SkipEmpty())) {
      out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }
  static void Encrypt(const std::string& tenant, const std::string& plaintext) {
    auto keys = v1::KeyService::NewStub(e2e::DevChannel(state_, kmsd_->grpc_addr(), "billing"));
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::EncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_plaintext(plaintext);
    v1::EncryptResponse resp;
    ASSERT_TRUE(keys->Encrypt(&ctx, req, &resp).ok());
  }

  static test::TempDir* dir_;
  static std::string state_, db_, config_, kmsctl_json_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* AuditE2eTest::dir_ = nullptr;
std::string AuditE2eTest::state_, AuditE2eTest::db_, AuditE2eTest::config_,
    AuditE2eTest::kmsctl_json_;
test::KmsdProcess* AuditE2eTest::kmsd_ = nullptr;

TEST_F(AuditE2eTest, EveryCallLeavesARecordAndTheIntactChainVerifies) {
  ASSERT_EQ(Kmsctl("tenant create audited").exit_code, 0);
  const std::string marker = "pii-marker-audit-51c2";
  for (int i = 0; i < 5; ++i) Encrypt("audited", marker);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // > one flush interval
  std::vector<nlohmann::json> records = Tail(50);
  bool saw_create = false, saw_encrypt = false;
  for (const auto& r : records) {
    if (r["operation"] == "CreateTenant" && r["tenant_id"] == "audited") {
      saw_create = true;
      EXPECT_EQ(r["kind"], "admin");
      EXPECT_EQ(r["identity"], "spiffe://kmsd.dev/operator");
      EXPECT_EQ(r["outcome"], "OK");
      EXPECT_EQ(r["key_versions"], "dek:1");
      EXPECT_FALSE(r["request_id"].get<std::string>().empty());
    }
    if (r["operation"] == "Encrypt" && r["tenant_id"] == "audited") {
      saw_encrypt = true;
      EXPECT_EQ(r["kind"], "data");
      EXPECT_EQ(r["identity"], "spiffe://kmsd.dev/billing");
      EXPECT_GE(r["calls"].get<int>(), 1);
    }
  }
  EXPECT_TRUE(saw_create);
  EXPECT_TRUE(saw_encrypt);
  // Nothing of the plaintext is in the audit log.
  auto all = Kmsctl("audit tail -o json -n 1000");
  EXPECT_EQ(all.out.find(marker), std::string::npos);

  auto verify = Kmsctl("audit verify");
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_NE(verify.out.find("node audit-node: "), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find("intact"), std::string::npos) << verify.out;
}

// Bulk creation through the real door (kmsctl -> AdminService.CreateTenants -> one store
// transaction per batch): every tenant works, a second run creates nothing and says so,
// each call is one durable audit record for every tenant ("*"), only an identity
// granted every tenant may call it, and a batch with a bad id creates nothing.
TEST_F(AuditE2eTest, BulkTenantCreationIsOneAuditedCallPerBatchAndCanBeRunAgain) {
  ASSERT_EQ(Kmsctl("tenant create bulk-existing").exit_code, 0);
  std::string ids = "bulk-existing\n";
  for (int i = 0; i < 2500; ++i) absl::StrAppend(&ids, "bulk-", i, "\n");
  const std::string file = dir_->Write("bulk-ids.txt", ids, 0644);

  auto first = Kmsctl(absl::StrCat("tenant create-bulk --from ", file, " --batch 1000 -o json"));
  ASSERT_EQ(first.exit_code, 0) << first.out;
  auto j = nlohmann::json::parse(first.out);
  EXPECT_EQ(j["created"], 2500);
  EXPECT_EQ(j["existing"], 1);
  Encrypt("bulk-0", "x");
  Encrypt("bulk-2499", "x");

  auto again = Kmsctl(absl::StrCat("tenant create-bulk --from ", file, " --parallel 3 -o json"));
  ASSERT_EQ(again.exit_code, 0) << again.out;
  j = nlohmann::json::parse(again.out);
  EXPECT_EQ(j["created"], 0);
  EXPECT_EQ(j["existing"], 2501);

  int bulk_records = 0;
  for (const auto& r : Tail(100)) {
    if (r["operation"] != "CreateTenants") continue;
    ++bulk_records;
    EXPECT_EQ(r["kind"], "admin");
    EXPECT_EQ(r["tenant_id"], "*");
    EXPECT_EQ(r["identity"], "spiffe://kmsd.dev/operator");
    EXPECT_EQ(r["outcome"], "OK");
  }
  EXPECT_EQ(bulk_records, 6) << "3 batches of 1000, twice";

  auto call = [](const std::string& client, std::vector<std::string> tenant_ids) {
    auto admin = v1::AdminService::NewStub(e2e::DevChannel(state_, kmsd_->grpc_addr(), client));
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::CreateTenantsRequest req;
    for (const std::string& id : tenant_ids) req.add_tenant_ids(id);
    v1::CreateTenantsResponse resp;
    return admin->CreateTenants(&ctx, req, &resp).error_code();
  };
  EXPECT_EQ(call("billing", {"bulk-by-billing"}), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(call("operator", {"bulk-ok", "not a tenant id"}), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(call("operator", {"bulk-ok", "bulk-ok"}), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(call("operator", {}), grpc::StatusCode::INVALID_ARGUMENT);
  auto get = Kmsctl("tenant get bulk-ok");
  EXPECT_NE(get.exit_code, 0) << get.out;
  EXPECT_NE(get.out.find("NOT_FOUND"), std::string::npos) << get.out;
  EXPECT_EQ(call("operator", {"bulk-ok"}), grpc::StatusCode::OK);
}

TEST_F(AuditE2eTest, AnAdminCallAcknowledgedBeforeASigkillKeepsItsRecord) {
  auto created = Kmsctl("tenant create crash-proof");
  ASSERT_EQ(created.exit_code, 0) << created.out;
  kmsd_->Kill();  // right after the call returned: no shutdown, no final flush
  delete kmsd_;
  kmsd_ = nullptr;
  Start();
  bool found = false;
  for (const auto& r : Tail(1000)) {
    if (r["operation"] == "CreateTenant" && r["tenant_id"] == "crash-proof") found = true;
  }
  EXPECT_TRUE(found);
  // The restarted node continues its chain, which still verifies.
  ASSERT_EQ(Kmsctl("tenant create after-restart").exit_code, 0);
  auto verify = Kmsctl("audit verify");
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
}

TEST_F(AuditE2eTest, ChangingOneRecordInTheStoreMakesVerifyNameIt) {
  ASSERT_EQ(Kmsctl("tenant create tamper-target").exit_code, 0);
  ASSERT_EQ(Kmsctl("tenant create tamper-next").exit_code, 0);
  int64_t seq = 0;
  for (const auto& r : Tail(1000)) {
    if (r["operation"] == "CreateTenant" && r["tenant_id"] == "tamper-target") seq = r["seq"];
  }
  ASSERT_GT(seq, 0);
  // Someone with write access to the database rewrites who did it.
  auto update = RunCommand(absl::StrCat(
      "sqlite3 -cmd \".timeout 5000\" ", db_, " \"UPDATE audit_log SET identity = 'spiffe://kmsd.dev/someone-else' "
      "WHERE node = 'audit-node' AND seq = ", seq, "\" 2>&1"));
  ASSERT_EQ(update.exit_code, 0) << update.out;

  auto verify = Kmsctl("audit verify");
  EXPECT_EQ(verify.exit_code, 1) << verify.out;
  EXPECT_NE(verify.out.find(absl::StrCat("node audit-node record seq ", seq, " ")),
            std::string::npos)
      << verify.out;
  EXPECT_NE(verify.out.find("BROKEN"), std::string::npos) << verify.out;

  // Put it back (the hash says what it was): the chain verifies again.
  auto restore = RunCommand(absl::StrCat(
      "sqlite3 -cmd \".timeout 5000\" ", db_, " \"UPDATE audit_log SET identity = 'spiffe://kmsd.dev/operator' "
      "WHERE node = 'audit-node' AND seq = ", seq, "\" 2>&1"));
  ASSERT_EQ(restore.exit_code, 0) << restore.out;
  EXPECT_EQ(Kmsctl("audit verify").exit_code, 0);
}

TEST_F(AuditE2eTest, KmsctlUsageErrorsExitTwoAndTimesAreRfc3339WithTheirAge) {
  EXPECT_EQ(Kmsctl("tenant").exit_code, 2);
  EXPECT_EQ(Kmsctl("tenant create").exit_code, 2);
  EXPECT_EQ(Kmsctl("--no-such-flag status").exit_code, 2);
  auto help = Kmsctl("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Examples:"), std::string::npos) << help.out;

  ASSERT_EQ(Kmsctl("tenant create timed").exit_code, 0);
  auto get = Kmsctl("tenant get timed");
  ASSERT_EQ(get.exit_code, 0) << get.out;
  EXPECT_NE(get.out.find("created: 20"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("Z ("), std::string::npos) << get.out;
  EXPECT_NE(get.out.find(" ago)"), std::string::npos) << get.out;

  // No internal function name reaches the operator; the failure says what it is.
  auto missing = Kmsctl("tenant get nope");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("NOT_FOUND: tenant nope not found"), std::string::npos) << missing.out;
  EXPECT_EQ(missing.out.find("GetTenant"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace kms
