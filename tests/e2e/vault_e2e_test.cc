// End to end: kmsd's Vault transit door driven by two Vault clients nobody here wrote,
// Debian's python3-hvac (vault/hvac_client.py) and npm's node-vault
// (vault/node_vault_client.js), each checking every answer; ciphertexts cross between
// the Vault door and the gRPC door both ways. kmsd runs from a config file (made from a
// dev state dir) with a small vault.max_body_bytes and vault.max_batch_items, so the
// clients can hit both limits with ordinary requests.
#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/str_split.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "src/common/base64.h"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using test::RunCommand;

constexpr int kMaxBodyBytes = 256 * 1024;
constexpr int kMaxBatchItems = 100;

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class VaultE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-vault-e2e-");
    state_ = dir_->Join("state");
    {
      // The dev mode makes the token, the CA, the client certificates and the policy.
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0"},
          dir_->Join("dev.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    nlohmann::json config = e2e::DevStateConfig(state_, dir_->Join("vault.db"));
    config["node_id"] = "vault-e2e";
    config["http"] = {{"listen", "127.0.0.1:0"}};
    config["vault"] = {{"max_body_bytes", kMaxBodyBytes}, {"max_batch_items", kMaxBatchItems}};
    config["audit"] = {{"flush_interval_ms", 100}};
    const std::string path = dir_->Write("kmsd.json", config.dump(2), 0644);
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", path}, dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
    ASSERT_NE(kmsd_->http_port(), 0);
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }

  static std::string Pki(const std::string& name) { return state_ + "/pki/" + name; }
  static std::shared_ptr<grpc::Channel> Channel(const std::string& client) {
    return e2e::DevChannel(state_, kmsd_->grpc_addr(), client);
  }
  // The Vault context "xdoor" as the door binds it: its base64 text under "vault.context".
  static void XdoorContext(google::protobuf::Map<std::string, std::string>* context) {
    (*context)["vault.context"] = Base64Encode(Bytes("xdoor"));
  }

  // Creates `key` through gRPC and returns "vault:v<N>:<base64>" of "from-grpc" made by
  // gRPC Encrypt under it.
  static std::string GrpcCiphertext(const std::string& key) {
    auto admin = v1::AdminService::NewStub(Channel("operator"));
    grpc::ClientContext create_ctx;
    e2e::Deadline(create_ctx);
    v1::CreateTenantRequest create;
    create.set_tenant_id(key);
    v1::CreateTenantResponse created;
    EXPECT_TRUE(admin->CreateTenant(&create_ctx, create, &created).ok());
    auto keys = v1::KeyService::NewStub(Channel("billing"));
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::EncryptRequest req;
    req.set_tenant_id(key);
    req.set_plaintext("from-grpc");
    XdoorContext(req.mutable_context());
    v1::EncryptResponse resp;
    grpc::Status s = keys->Encrypt(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return absl::StrCat("vault:v", resp.dek_version(), ":", Base64Encode(Bytes(resp.ciphertext())));
  }

  // Decrypts a Vault-door ciphertext of `key` through gRPC Decrypt.
  static std::string GrpcDecrypt(const std::string& key, const std::string& vault_ciphertext) {
    const size_t colon = vault_ciphertext.find(':', 7);  // after "vault:v"
    EXPECT_EQ(vault_ciphertext.rfind("vault:v", 0), 0u) << vault_ciphertext;
    EXPECT_NE(colon, std::string::npos);
    auto bytes = Base64Decode(vault_ciphertext.substr(colon + 1));
    EXPECT_TRUE(bytes.ok());
    if (!bytes.ok()) return "";
    auto keys = v1::KeyService::NewStub(Channel("billing"));
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptRequest req;
    req.set_tenant_id(key);
    req.set_ciphertext(std::string(bytes->begin(), bytes->end()));
    XdoorContext(req.mutable_context());
    v1::DecryptResponse resp;
    grpc::Status s = keys->Decrypt(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(absl::StrCat("vault:v", resp.dek_version(), ":"), vault_ciphertext.substr(0, colon + 1));
    return resp.plaintext();
  }

  // The environment the client scripts read (see hvac_client.py).
  static std::string Env(const std::string& prefix, const std::string& xkey,
                         const std::string& grpc_ciphertext, const std::string& out) {
    return absl::StrCat("VAULT_ADDR=https://127.0.0.1:", kmsd_->http_port(), " KMSD_CA=", Pki("ca.pem"),
                        " KMSD_CERT=", Pki("clients/operator.pem"), " KMSD_KEY=", Pki("clients/operator.key"),
                        " KMSD_OTHER_CERT=", Pki("clients/billing.pem"),
                        " KMSD_OTHER_KEY=", Pki("clients/billing.key"), " KMSD_PREFIX=", prefix,
                        " KMSD_XDOOR_KEY=", xkey, " KMSD_GRPC_CIPHERTEXT=", grpc_ciphertext,
                        " KMSD_OUT=", out, " KMSD_MAX_BATCH=", kMaxBatchItems,
                        " KMSD_MAX_BODY=", kMaxBodyBytes, " VAULT_TOKEN= ");
  }

  static std::string ClientCiphertext(const std::string& out) {
    auto j = nlohmann::json::parse(test::ReadFileOrEmpty(out), nullptr, false);
    if (!j.is_object() || !j.contains("ciphertext")) return "";
    return j["ciphertext"].get<std::string>();
  }

  static test::TempDir* dir_;
  static std::string state_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* VaultE2eTest::dir_ = nullptr;
std::string VaultE2eTest::state_;
test::KmsdProcess* VaultE2eTest::kmsd_ = nullptr;

TEST_F(VaultE2eTest, HvacDrivesTheTransitDoorAndCiphertextsCrossToGrpc) {
  const std::string xkey = "xdoor-hvac";
  const std::string out = dir_->Join("hvac-out.json");
  const std::string grpc_ct = GrpcCiphertext(xkey);
  auto run = RunCommand(absl::StrCat(Env("hvac", xkey, grpc_ct, out), " /usr/bin/python3 ",
                                     KMS_VAULT_CLIENTS, "/hvac_client.py 2>&1"));
  ASSERT_EQ(run.exit_code, 0) << run.out << "\nkmsd log:\n" << test::ReadFileOrEmpty(kmsd_->log_path());
  EXPECT_NE(run.out.find("hvac: all checks passed"), std::string::npos) << run.out;
  EXPECT_EQ(GrpcDecrypt(xkey, ClientCiphertext(out)), "from-hvac");
}

TEST_F(VaultE2eTest, NodeVaultDrivesTheTransitDoorAndCiphertextsCrossToGrpc) {
  const std::string xkey = "xdoor-node";
  const std::string out = dir_->Join("node-out.json");
  const std::string grpc_ct = GrpcCiphertext(xkey);
  auto run = RunCommand(absl::StrCat(Env("node", xkey, grpc_ct, out), " node ", KMS_VAULT_CLIENTS,
                                     "/node_vault_client.js 2>&1"));
  ASSERT_EQ(run.exit_code, 0) << run.out << "\nkmsd log:\n" << test::ReadFileOrEmpty(kmsd_->log_path());
  EXPECT_NE(run.out.find("node-vault: all checks passed"), std::string::npos) << run.out;
  EXPECT_EQ(GrpcDecrypt(xkey, ClientCiphertext(out)), "from-node");
}

// The Vault door's calls pass the gate's audit like gRPC's: a change one record each,
// written before the answer; the data plane aggregated; refusals recorded too.
TEST_F(VaultE2eTest, VaultCallsAreAudited) {
  const std::string addr = absl::StrCat("https://127.0.0.1:", kmsd_->http_port());
  const std::string curl = absl::StrCat("curl -s --cacert ", Pki("ca.pem"), " --cert ",
                                        Pki("clients/operator.pem"), " --key ", Pki("clients/operator.key"));
  auto login = RunCommand(absl::StrCat(curl, " -X POST ", addr, "/v1/auth/cert/login"));
  auto token = nlohmann::json::parse(login.out, nullptr, false);
  ASSERT_TRUE(token.is_object()) << login.out;
  const std::string header = absl::StrCat(" -H 'X-Vault-Token: ", token["auth"]["client_token"].get<std::string>(), "'");
  auto created = RunCommand(absl::StrCat(curl, header, " -H 'X-Request-Id: vault-audit-1' -X POST ", addr,
                                         "/v1/transit/keys/audited-vault"));
  ASSERT_NE(created.out.find("\"latest_version\":1"), std::string::npos) << created.out;
  auto enc = RunCommand(absl::StrCat(curl, header, " -X POST -d '{\"plaintext\":\"aGk=\"}' ", addr,
                                     "/v1/transit/encrypt/audited-vault"));
  ASSERT_NE(enc.out.find("vault:v1:"), std::string::npos) << enc.out;
  auto billing = RunCommand(absl::StrCat("curl -s --cacert ", Pki("ca.pem"), " --cert ", Pki("clients/billing.pem"),
                                         " --key ", Pki("clients/billing.key"), " -X POST ", addr, "/v1/auth/cert/login"));
  auto billing_token = nlohmann::json::parse(billing.out, nullptr, false);
  ASSERT_TRUE(billing_token.is_object()) << billing.out;
  auto denied = RunCommand(absl::StrCat("curl -s --cacert ", Pki("ca.pem"), " --cert ", Pki("clients/billing.pem"),
                                        " --key ", Pki("clients/billing.key"), " -H 'X-Vault-Token: ",
                                        billing_token["auth"]["client_token"].get<std::string>(), "' -X POST ",
                                        addr, "/v1/transit/keys/audited-vault/rotate"));
  ASSERT_NE(denied.out.find("permission denied"), std::string::npos) << denied.out;

  const std::string kmsctl = dir_->Write(
      "kmsctl.json", nlohmann::json{{"addr", kmsd_->grpc_addr()}, {"ca", Pki("ca.pem")},
                                    {"cert", Pki("clients/operator.pem")}, {"key", Pki("clients/operator.key")}}
                         .dump(), 0644);
  bool create = false, encrypt = false, refused = false;
  for (int attempt = 0; attempt < 50 && !(create && encrypt && refused); ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto tail = RunCommand(absl::StrCat("KMSCTL_CONFIG=", kmsctl, " ", KMSCTL_BINARY, " audit tail -o json -n 1000"));
    ASSERT_EQ(tail.exit_code, 0) << tail.out;
    for (absl::string_view line : absl::StrSplit(tail.out, '\n', absl::SkipEmpty())) {
      auto r = nlohmann::json::parse(line, nullptr, false);
      if (!r.is_object() || r.value("tenant_id", "") != "audited-vault") continue;
      if (r["operation"] == "VaultCreateKey") {
        create = true;
        EXPECT_EQ(r["kind"], "admin");
        EXPECT_EQ(r["identity"], "spiffe://kmsd.dev/operator");
        EXPECT_EQ(r["outcome"], "OK");
        EXPECT_EQ(r["request_id"], "vault-audit-1");
      }
      if (r["operation"] == "VaultEncrypt" && r["outcome"] == "OK") {
        encrypt = true;
        EXPECT_EQ(r["kind"], "data");
        EXPECT_EQ(r["key_versions"], "dek:1");
      }
      if (r["operation"] == "VaultRotateKey") {
        refused = true;
        EXPECT_EQ(r["identity"], "spiffe://kmsd.dev/billing");
        EXPECT_EQ(r["outcome"], "PERMISSION_DENIED");
      }
    }
  }
  EXPECT_TRUE(create && encrypt && refused) << create << encrypt << refused;
}

}  // namespace
}  // namespace kms
