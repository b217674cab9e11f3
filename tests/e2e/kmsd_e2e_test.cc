// End to end: a real `kmsd --dev` process (SoftHSM2 token, SQLite, dev CA) driven over
// mutual TLS 1.3 by a gRPC client and by kmsctl.
#include <openssl/crypto.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "src/dev/dev_pki.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using test::RunCommand;

std::string Read(const std::string& path) { return test::ReadFileOrEmpty(path); }

class KmsdE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-e2e-");
    state_ = dir_->Join("state");
    StartKmsd();
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }

  static void StartKmsd() {
    auto p = test::KmsdProcess::Start(
        KMSD_BINARY,
        {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"},
        dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
  }

  static std::string Pki(const std::string& name) { return state_ + "/pki/" + name; }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& client) {
    return e2e::DevChannel(state_, kmsd_->grpc_addr(), client);
  }

  static std::unique_ptr<v1::KeyService::Stub> Keys(const std::string& client = "billing") {
    return v1::KeyService::NewStub(Channel(client));
  }
  static std::unique_ptr<v1::AdminService::Stub> Admin(const std::string& client = "operator") {
    return v1::AdminService::NewStub(Channel(client));
  }

  static void Deadline(grpc::ClientContext& ctx) { e2e::Deadline(ctx); }

  static void CreateTenant(const std::string& id) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    v1::CreateTenantResponse resp;
    grpc::Status s = Admin()->CreateTenant(&ctx, req, &resp);
    ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }

  static grpc::Status Encrypt(const std::string& tenant, const std::string& plaintext,
                              std::map<std::string, std::string> context, v1::EncryptResponse* resp,
                              const std::string& client = "billing") {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::EncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_plaintext(plaintext);
    for (auto& [k, v] : context) (*req.mutable_context())[k] = v;
    return Keys(client)->Encrypt(&ctx, req, resp);
  }

  static grpc::Status Decrypt(const std::string& tenant, const std::string& ciphertext,
                              std::map<std::string, std::string> context, v1::DecryptResponse* resp) {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::DecryptRequest req;
    req.set_tenant_id(tenant);
    req.set_ciphertext(ciphertext);
    for (auto& [k, v] : context) (*req.mutable_context())[k] = v;
    return Keys()->Decrypt(&ctx, req, resp);
  }

  // The server is still serving: a fresh round trip works.
  static void ExpectStillServing() {
    CreateTenant("alive");
    v1::EncryptResponse enc;
    ASSERT_TRUE(Encrypt("alive", "ping", {}, &enc).ok());
    v1::DecryptResponse dec;
    ASSERT_TRUE(Decrypt("alive", enc.ciphertext(), {}, &dec).ok());
    EXPECT_EQ(dec.plaintext(), "ping");
  }

  static std::string Kmsctl(const std::string& args) { return e2e::KmsctlCommand(state_, args); }

  static test::TempDir* dir_;
  static std::string state_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* KmsdE2eTest::dir_ = nullptr;
std::string KmsdE2eTest::state_;
test::KmsdProcess* KmsdE2eTest::kmsd_ = nullptr;

TEST_F(KmsdE2eTest, DevModeCreatesItsStateWithPrivateFilesLockedDown) {
  for (const char* secret : {"/secrets/hsm-user.pin", "/secrets/hsm-so.pin", "/pki/ca.key",
                             "/pki/server.key", "/pki/clients/operator.key", "/kmsd.db"}) {
    struct stat st {};
    ASSERT_EQ(stat((state_ + secret).c_str(), &st), 0) << secret;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << secret;
  }
  auto kmsctl = nlohmann::json::parse(Read(state_ + "/kmsctl.json"));
  EXPECT_EQ(kmsctl["addr"], kmsd_->grpc_addr());
}

TEST_F(KmsdE2eTest, RoundTripWithoutContext) {
  CreateTenant("acme");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("acme", "alice@example.com", {}, &enc).ok());
  EXPECT_EQ(enc.dek_version(), 1u);
  EXPECT_EQ(enc.ciphertext().size(), 33u + 17u);
  EXPECT_EQ(enc.ciphertext()[0], '\x01');
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("acme", enc.ciphertext(), {}, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "alice@example.com");
}

TEST_F(KmsdE2eTest, RoundTripWithContextAndWrongContextFails) {
  CreateTenant("acme");
  std::map<std::string, std::string> ctx = {{"table", "users"}, {"column", "email"}};
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("acme", "bob@example.com", ctx, &enc).ok());
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("acme", enc.ciphertext(), ctx, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "bob@example.com");
  grpc::Status wrong = Decrypt("acme", enc.ciphertext(), {{"table", "users"}, {"column", "phone"}}, &dec);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(wrong.error_message(), "decryption failed");
  grpc::Status missing = Decrypt("acme", enc.ciphertext(), {}, &dec);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(KmsdE2eTest, TenantAsCiphertextFailsUnderTenantB) {
  CreateTenant("tenant-a");
  CreateTenant("tenant-b");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("tenant-a", "a's secret", {}, &enc).ok());
  v1::DecryptResponse dec;
  grpc::Status s = Decrypt("tenant-b", enc.ciphertext(), {}, &dec);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "decryption failed");
  EXPECT_TRUE(dec.plaintext().empty());
}

TEST_F(KmsdE2eTest, BadInputGetsClearStatusesAndTheDaemonKeepsServing) {
  CreateTenant("acme");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("acme", "x", {}, &enc).ok());
  const std::string good = enc.ciphertext();
  v1::DecryptResponse dec;

  EXPECT_EQ(Encrypt("acme", "", {}, &enc).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Encrypt("acme", std::string(64 * 1024 + 1, 'a'), {}, &enc).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Encrypt("acme", std::string(64 * 1024, 'a'), {}, &enc).ok());  // at the limit
  EXPECT_EQ(Encrypt("nobody", "x", {}, &enc).error_code(), grpc::StatusCode::NOT_FOUND);
  for (const char* bad_id : {"", "has space", "../../etc", "-lead", "x/y"}) {
    EXPECT_EQ(Encrypt(bad_id, "x", {}, &enc).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad_id;
  }
  EXPECT_EQ(Encrypt(std::string(65, 't'), "x", {}, &enc).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Encrypt("acme", "x", {{"", "empty key"}}, &enc).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Ciphertexts: malformed, truncated at every length, tampered at every byte, empty.
  for (size_t n = 0; n < good.size(); ++n) {
    grpc::Status s = Decrypt("acme", good.substr(0, n), {}, &dec);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "truncated to " << n;
  }
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] ^= 0x40;
    grpc::Status s = Decrypt("acme", bad, {}, &dec);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "byte " << i;
    EXPECT_EQ(s.error_message(), "decryption failed") << "byte " << i;
  }
  EXPECT_EQ(Decrypt("acme", "not a ciphertext at all, just words", {}, &dec).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Decrypt("acme", std::string(70 * 1024, '\x01'), {}, &dec).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Decrypt("nobody", good, {}, &dec).error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectStillServing();
}

TEST_F(KmsdE2eTest, BatchesReturnOneResultPerItemAndEnforceTheirLimit) {
  CreateTenant("acme");
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::EncryptBatchRequest req;
  req.set_tenant_id("acme");
  req.add_items()->set_plaintext("first");
  req.add_items()->set_plaintext("");  // bad item
  auto* third = req.add_items();
  third->set_plaintext("third");
  (*third->mutable_context())["column"] = "email";
  v1::EncryptBatchResponse resp;
  ASSERT_TRUE(Keys()->EncryptBatch(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_TRUE(resp.results(0).has_ok());
  ASSERT_TRUE(resp.results(1).has_error());
  EXPECT_EQ(resp.results(1).error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_TRUE(resp.results(2).has_ok());

  grpc::ClientContext dctx;
  Deadline(dctx);
  v1::DecryptBatchRequest dreq;
  dreq.set_tenant_id("acme");
  dreq.add_items()->set_ciphertext(resp.results(0).ok().ciphertext());
  auto* d2 = dreq.add_items();
  d2->set_ciphertext(resp.results(2).ok().ciphertext());
  (*d2->mutable_context())["column"] = "email";
  dreq.add_items()->set_ciphertext(resp.results(2).ok().ciphertext());  // context missing
  v1::DecryptBatchResponse dresp;
  ASSERT_TRUE(Keys()->DecryptBatch(&dctx, dreq, &dresp).ok());
  ASSERT_EQ(dresp.results_size(), 3);
  EXPECT_EQ(dresp.results(0).ok().plaintext(), "first");
  EXPECT_EQ(dresp.results(1).ok().plaintext(), "third");
  ASSERT_TRUE(dresp.results(2).has_error());
  EXPECT_EQ(dresp.results(2).error().message(), "decryption failed");

  grpc::ClientContext big_ctx;
  Deadline(big_ctx);
  v1::EncryptBatchRequest big;
  big.set_tenant_id("acme");
  for (int i = 0; i < 1001; ++i) big.add_items()->set_plaintext("x");
  v1::EncryptBatchResponse big_resp;
  EXPECT_EQ(Keys()->EncryptBatch(&big_ctx, big, &big_resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  big.mutable_items()->RemoveLast();
  grpc::ClientContext ok_ctx;
  Deadline(ok_ctx);
  ASSERT_TRUE(Keys()->EncryptBatch(&ok_ctx, big, &big_resp).ok());  // exactly at the limit
  EXPECT_EQ(big_resp.results_size(), 1000);
}

TEST_F(KmsdE2eTest, IdentityOutsideThePolicyIsDenied) {
  CreateTenant("acme");
  // billing may encrypt but not administer.
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::CreateTenantRequest req;
  req.set_tenant_id("billing-made");
  v1::CreateTenantResponse resp;
  EXPECT_EQ(Admin("billing")->CreateTenant(&ctx, req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // A certificate from the right CA for an identity the policy does not know.
  auto issued = RunCommand(absl::StrCat(KMSD_BINARY, " --dev --state-dir ", state_,
                                        " --issue-client-cert intruder"));
  ASSERT_EQ(issued.exit_code, 0) << issued.out;
  v1::EncryptResponse enc;
  grpc::Status s = Encrypt("acme", "x", {}, &enc, "intruder");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message().find("acme"), std::string::npos);  // names no tenant
}

TEST_F(KmsdE2eTest, ACommonNameThatLooksLikeASpiffeIdIsNoIdentity) {
  // Signed by the right CA, no URI SAN, CN = the operator's SPIFFE id: it must not pass
  // as the operator.
  const std::string key = dir_->Join("cn-only.key"), cert = dir_->Join("cn-only.pem");
  const std::string ext = dir_->Write("client.ext", "extendedKeyUsage=clientAuth\n", 0644);
  auto issued = RunCommand(absl::StrCat(
      "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ", key,
      " && openssl req -new -key ", key, " -subj '/CN=spiffe:\\/\\/kmsd.dev\\/operator'",
      " | openssl x509 -req -days 1 -CA ", Pki("ca.pem"), " -CAkey ", Pki("ca.key"),
      " -CAcreateserial -out ", cert, " -extfile ", ext, " 2>&1"));
  ASSERT_EQ(issued.exit_code, 0) << issued.out;
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = Read(Pki("ca.pem"));
  tls.pem_cert_chain = Read(cert);
  tls.pem_private_key = Read(key);
  auto admin = v1::AdminService::NewStub(grpc::CreateChannel(kmsd_->grpc_addr(), grpc::SslCredentials(tls)));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetStatusResponse resp;
  EXPECT_EQ(admin->GetStatus(&ctx, {}, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(KmsdE2eTest, ClientWithoutCertificateIsRefused) {
  auto keys = v1::KeyService::NewStub(Channel(""));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::EncryptRequest req;
  req.set_tenant_id("acme");
  req.set_plaintext("x");
  v1::EncryptResponse resp;
  EXPECT_EQ(keys->Encrypt(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(KmsdE2eTest, CertificateFromAnotherCaIsRefused) {
  auto ca = dev::CreateCa("rogue CA", 30);
  ASSERT_TRUE(ca.ok());
  auto client = dev::IssueClientCert(*ca, "operator", "spiffe://kmsd.dev/operator", 30);
  ASSERT_TRUE(client.ok());
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = Read(Pki("ca.pem"));
  tls.pem_cert_chain = client->cert_pem;
  tls.pem_private_key.assign(reinterpret_cast<const char*>(client->key_pem.data()),
                             client->key_pem.size());
  auto admin = v1::AdminService::NewStub(grpc::CreateChannel(kmsd_->grpc_addr(), grpc::SslCredentials(tls)));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetStatusResponse resp;
  EXPECT_EQ(admin->GetStatus(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// The protocol and cipher `openssl s_client` negotiated with the operator's certificate,
// e.g. "TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384", or "(NONE), Cipher is (NONE)" when the
// handshake failed. (Its exit code is no guide: gRPC may close the connection first.)
std::string Negotiated(const std::string& version, int port, const std::string& state) {
  auto run = RunCommand(absl::StrCat(
      "openssl s_client -connect 127.0.0.1:", port, " ", version, " -CAfile ", state,
      "/pki/ca.pem -cert ", state, "/pki/clients/operator.pem -key ", state,
      "/pki/clients/operator.key 2>&1"), "Q\n");
  size_t at = run.out.find("New, ");
  if (at == std::string::npos) return "no handshake report: " + run.out;
  return run.out.substr(at + 5, run.out.find('\n', at) - at - 5);
}

TEST_F(KmsdE2eTest, GrpcListenerSpeaksTls13AndRefusesTls12) {
  EXPECT_EQ(Negotiated("-tls1_3", kmsd_->grpc_port(), state_).rfind("TLSv1.3, Cipher is TLS_", 0), 0u);
  EXPECT_EQ(Negotiated("-tls1_2", kmsd_->grpc_port(), state_), "(NONE), Cipher is (NONE)");
}

TEST_F(KmsdE2eTest, HttpsListenerServesHealthOverTls13OnlyWithHsts) {
  ASSERT_NE(kmsd_->http_port(), 0);
  EXPECT_EQ(Negotiated("-tls1_2", kmsd_->http_port(), state_), "(NONE), Cipher is (NONE)");
  EXPECT_EQ(Negotiated("-tls1_3", kmsd_->http_port(), state_).rfind("TLSv1.3, Cipher is TLS_", 0), 0u);
  auto ready = RunCommand(absl::StrCat("curl -sS --tlsv1.3 -i --cacert ", state_, "/pki/ca.pem https://localhost:",
                                       kmsd_->http_port(), "/readyz"));
  ASSERT_EQ(ready.exit_code, 0) << ready.out;
  EXPECT_NE(ready.out.find("200"), std::string::npos);
  EXPECT_NE(ready.out.find("Strict-Transport-Security: max-age=63072000; includeSubDomains; preload"),
            std::string::npos);
}

TEST_F(KmsdE2eTest, KmsctlRoundTripsAndReportsFailuresWithNonZeroExit) {
  auto created = RunCommand(Kmsctl("tenant create kmsctl-co"));
  ASSERT_EQ(created.exit_code, 0) << created.out;
  auto enc = RunCommand(Kmsctl("encrypt --tenant kmsctl-co --context table=users --context column=email"),
                        "carol@example.com");
  ASSERT_EQ(enc.exit_code, 0) << enc.out;
  auto dec = RunCommand(Kmsctl("decrypt --tenant kmsctl-co --context table=users --context column=email"),
                        enc.out);
  ASSERT_EQ(dec.exit_code, 0);
  EXPECT_EQ(dec.out, "carol@example.com");
  auto wrong = RunCommand(Kmsctl("decrypt --tenant kmsctl-co 2>&1"), enc.out);
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.out.find("INVALID_ARGUMENT"), std::string::npos) << wrong.out;
  auto status = RunCommand(Kmsctl("status -o json"));
  ASSERT_EQ(status.exit_code, 0) << status.out;
  auto j = nlohmann::json::parse(status.out);
  EXPECT_EQ(j["ready"], true);
  EXPECT_EQ(j["master_key_kind"], "rsa-4096");
  EXPECT_GE(j["primary_kek_version"].get<int>(), 1);
  EXPECT_EQ(j["kek_versions"][0]["wrap_mechanism"], "rsa-oaep-sha1");
  auto list = RunCommand(Kmsctl("tenant list --all -o json"));
  ASSERT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find("kmsctl-co"), std::string::npos);
}

TEST_F(KmsdE2eTest, NoPlaintextOrKeyMaterialReachesTheLog) {
  CreateTenant("acme");
  const std::string marker = "pii-marker-7f3a9c";
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("acme", marker, {}, &enc).ok());
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("acme", enc.ciphertext(), {}, &dec).ok());
  std::string bad = enc.ciphertext();
  bad.back() ^= 1;
  Decrypt("acme", bad, {}, &dec);
  const std::string log = Read(kmsd_->log_path());
  EXPECT_EQ(log.find(marker), std::string::npos);
  std::string pin = Read(state_ + "/secrets/hsm-user.pin");
  ASSERT_FALSE(pin.empty());
  EXPECT_EQ(log.find(pin), std::string::npos);

  // stderr is a file here, so the log is JSON lines: every line is one object with the
  // documented keys, and a call's lines carry its request id.
  std::istringstream lines(log);
  std::string line;
  int parsed = 0;
  bool created_with_request_id = false;
  while (std::getline(lines, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* key : {"time", "level", "node", "request_id", "event", "fields"}) {
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
    }
    if (j["event"] == "tenant_created" && j["fields"]["tenant"] == "acme" &&
        !j["request_id"].get<std::string>().empty()) {
      created_with_request_id = true;
    }
    ++parsed;
  }
  EXPECT_GT(parsed, 0);
  EXPECT_TRUE(created_with_request_id) << log;
}

TEST_F(KmsdE2eTest, NoPlaintextOrPinReachesTheTextLogEither) {
  const std::string config = dir_->Write(
      "text-log.json", e2e::DevStateConfig(state_, dir_->Join("text-log.db")).dump(2), 0644);
  auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", config, "--log-format", "text"},
                                    dir_->Join("text-log.log"));
  ASSERT_TRUE(p.ok()) << p.status();
  auto keys = v1::KeyService::NewStub(e2e::DevChannel(state_, (*p)->grpc_addr(), "billing"));
  auto admin = v1::AdminService::NewStub(e2e::DevChannel(state_, (*p)->grpc_addr(), "operator"));
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_tenant_id("text-acme");
    v1::CreateTenantResponse resp;
    ASSERT_TRUE(admin->CreateTenant(&ctx, req, &resp).ok());
  }
  const std::string marker = "pii-marker-text-8d1e";
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::EncryptRequest req;
  req.set_tenant_id("text-acme");
  req.set_plaintext(marker);
  v1::EncryptResponse enc;
  ASSERT_TRUE(keys->Encrypt(&ctx, req, &enc).ok());
  EXPECT_EQ((*p)->Stop(), 0);
  const std::string log = Read(dir_->Join("text-log.log"));
  EXPECT_NE(log.find(" info "), std::string::npos) << log;
  const size_t event = log.find(" tenant_created ");
  ASSERT_NE(event, std::string::npos) << log;
  EXPECT_NE(log.find("tenant=text-acme", event), std::string::npos) << log;
  EXPECT_NE(log.rfind("{\"time\"", 0), 0u) << "text, not JSON: " << log;
  EXPECT_EQ(log.find(marker), std::string::npos);
  const std::string pin = Read(state_ + "/secrets/hsm-user.pin");
  ASSERT_FALSE(pin.empty());
  EXPECT_EQ(log.find(pin), std::string::npos);
}

using e2e::RawCall;

TEST_F(KmsdE2eTest, HealthServiceReportsServing) {
  // grpc.health.v1.Health/Check with an empty HealthCheckRequest: the answer is
  // HealthCheckResponse{status: SERVING (1)} = bytes 08 01.
  auto [status, bytes] = RawCall(Channel("billing"), "/grpc.health.v1.Health/Check", "");
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

TEST_F(KmsdE2eTest, UndecodableRequestsGetInvalidArgumentOnEveryRpcAndNameNoInputByte) {
  CreateTenant("acme");
  // tenant_id (field 1, a proto3 string) = 61 63 6d 65 ff: not UTF-8.
  const std::string not_utf8("\x0a\x05" "acme\xff", 7);
  const std::string garbage("\xff\xff\xff\xff", 4);  // field 0 / bad wire type
  const std::string truncated("\x0a\x20" "acme", 6);   // a 32-byte string with 4 bytes
  const char* key_methods[] = {"Encrypt", "Decrypt", "EncryptBatch", "DecryptBatch",
                               "SignJwt", "VerifyJwt", "GetJwks", "ReEncrypt", "ReEncryptBatch"};
  const char* admin_methods[] = {"CreateTenant", "GetTenant", "ListTenants", "GetStatus",
                                 "RotateTenantKey", "ShredTenant", "RotateKek", "GetJwtStatus",
                                 "RotateJwtKey", "AckJwtCritical", "SetMinDecryptVersion",
                                 "ListKeys"};
  auto check = [&](const std::string& service, const std::string& method,
                   const std::string& client) {
    for (const std::string& bytes : {not_utf8, garbage, truncated}) {
      auto [status, out] = RawCall(Channel(client), "/kms.v1." + service + "/" + method, bytes);
      // `not_utf8` is undecodable only where field 1 is a string (tenant_id); elsewhere
      // it is an unknown field, which proto3 keeps.
      const bool tenant_in_field_1 =
          method == "Encrypt" || method == "Decrypt" || method == "EncryptBatch" ||
          method == "DecryptBatch" || method == "CreateTenant" || method == "GetTenant" ||
          method == "RotateTenantKey" || method == "ShredTenant" || method == "ReEncrypt" ||
          method == "ReEncryptBatch" || method == "SetMinDecryptVersion" || method == "ListKeys";
      if (bytes == not_utf8 && !tenant_in_field_1) continue;
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
      EXPECT_NE(status.error_message().find("is not a valid kms.v1."), std::string::npos)
          << method << ": " << status.error_message();
      EXPECT_EQ(status.error_message().find("acme"), std::string::npos) << method;
    }
  };
  for (const char* m : key_methods) check("KeyService", m, "billing");
  for (const char* m : admin_methods) check("AdminService", m, "operator");
  // Still serving.
  v1::EncryptResponse resp;
  EXPECT_TRUE(Encrypt("acme", "x", {}, &resp).ok());
}

TEST_F(KmsdE2eTest, EachMethodHasItsOwnRequestSizeLimit) {
  CreateTenant("acme");
  // An Encrypt request far over one item's limit is refused before decoding, while an
  // EncryptBatch of the same total size is within its own, larger limit and served.
  v1::EncryptRequest big;
  big.set_tenant_id("acme");
  big.set_plaintext(std::string(2 * 1024 * 1024, 'x'));
  auto [status, out] = RawCall(Channel("billing"), "/kms.v1.KeyService/Encrypt",
                               big.SerializeAsString());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("bytes this method accepts"), std::string::npos)
      << status.error_message();
  v1::EncryptBatchRequest batch;
  batch.set_tenant_id("acme");
  for (int i = 0; i < 40; ++i) batch.add_items()->set_plaintext(std::string(60 * 1024, 'y'));
  auto [batch_status, batch_out] = RawCall(Channel("billing"), "/kms.v1.KeyService/EncryptBatch",
                                           batch.SerializeAsString());
  EXPECT_TRUE(batch_status.ok()) << batch_status.error_message();
  v1::EncryptBatchResponse results;
  ASSERT_TRUE(results.ParseFromString(batch_out));
  EXPECT_EQ(results.results_size(), 40);
}

std::string ConfigJson(const std::string& state, const std::string& sqlite_path,
                       const std::string& cert_file) {
  nlohmann::json j = e2e::DevStateConfig(state, sqlite_path);
  j["tls"]["cert_file"] = cert_file;
  return j.dump(2);
}

TEST_F(KmsdE2eTest, ConfigFileModeServesFromTheSameFiles) {
  const std::string config = dir_->Write(
      "kmsd.json", ConfigJson(state_, dir_->Join("config-mode.db"), Pki("server.pem")), 0644);
  auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", config}, dir_->Join("config-mode.log"));
  ASSERT_TRUE(p.ok()) << p.status();
  auto admin = v1::AdminService::NewStub(e2e::DevChannel(state_, (*p)->grpc_addr(), "operator"));
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetStatusResponse status;
  ASSERT_TRUE(admin->GetStatus(&ctx, {}, &status).ok());
  EXPECT_EQ(status.node_id(), "config-mode");
  EXPECT_TRUE(status.ready());
  EXPECT_EQ((*p)->Stop(), 0);
}

// A second kmsd on a gRPC port in use refuses to start (gRPC's SO_REUSEPORT would let it
// listen beside the first and take part of its connections).
TEST_F(KmsdE2eTest, ASecondKmsdOnTheSameGrpcPortRefusesToStart) {
  nlohmann::json j = nlohmann::json::parse(
      ConfigJson(state_, dir_->Join("second.db"), Pki("server.pem")));
  j["grpc"]["listen"] = kmsd_->grpc_addr();
  const std::string config = dir_->Write("second.json", j.dump(2), 0644);
  auto run = RunCommand(absl::StrCat("timeout 60 ", KMSD_BINARY, " --config ", config, " 2>&1"));
  EXPECT_NE(run.exit_code, 0) << run.out;
  EXPECT_NE(run.exit_code, 124) << "still running after 60 s: it started beside the first";
  EXPECT_NE(run.out.find("cannot listen for gRPC on " + kmsd_->grpc_addr()), std::string::npos)
      << run.out;
  EXPECT_TRUE(kmsd_->Running());
}

TEST_F(KmsdE2eTest, ConfigFileModeRefusesToStartAndSaysWhatToFix) {
  const std::string config = dir_->Write(
      "broken.json", ConfigJson(state_, dir_->Join("broken.db"), "/nonexistent/server.pem"), 0644);
  auto run = RunCommand(absl::StrCat(KMSD_BINARY, " --config ", config, " 2>&1"));
  EXPECT_EQ(run.exit_code, 2) << run.out;
  EXPECT_NE(run.out.find("tls.cert_file"), std::string::npos) << run.out;
  auto typo = RunCommand(absl::StrCat(KMSD_BINARY, " --config ",
                                      dir_->Write("typo.json", R"({"grpc": {"listn": "x"}})", 0644),
                                      " 2>&1"));
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_NE(typo.out.find("grpc.listn"), std::string::npos) << typo.out;
  auto neither = RunCommand(absl::StrCat(KMSD_BINARY, " 2>&1"));
  EXPECT_EQ(neither.exit_code, 2);
}

TEST_F(KmsdE2eTest, TenantKeyRotationKeepsOldCiphertextsReadable) {
  CreateTenant("rotating");
  v1::EncryptResponse before;
  ASSERT_TRUE(Encrypt("rotating", "v1 data", {}, &before).ok());
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::RotateTenantKeyRequest req;
  req.set_tenant_id("rotating");
  v1::RotateTenantKeyResponse resp;
  ASSERT_TRUE(Admin()->RotateTenantKey(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.tenant().primary_dek_version(), before.dek_version() + 1);
  v1::EncryptResponse after;
  ASSERT_TRUE(Encrypt("rotating", "v2 data", {}, &after).ok());
  EXPECT_EQ(after.dek_version(), before.dek_version() + 1);
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("rotating", before.ciphertext(), {}, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "v1 data");
  EXPECT_EQ(dec.dek_version(), before.dek_version());
}

TEST_F(KmsdE2eTest, ShreddedTenantCanNeitherEncryptNorDecrypt) {
  CreateTenant("doomed");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("doomed", "gone soon", {}, &enc).ok());
  {
    grpc::ClientContext ctx;
    Deadline(ctx);
    v1::ShredTenantRequest req;
    req.set_tenant_id("doomed");
    req.set_confirm_tenant_id("doomd");
    v1::ShredTenantResponse resp;
    EXPECT_EQ(Admin()->ShredTenant(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto shred = RunCommand(Kmsctl("tenant shred doomed --confirm doomed --receipt-out " +
                                 dir_->Join("doomed-receipt.jws")));
  ASSERT_EQ(shred.exit_code, 0) << shred.out;
  v1::DecryptResponse dec;
  EXPECT_EQ(Decrypt("doomed", enc.ciphertext(), {}, &dec).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Encrypt("doomed", "more", {}, &enc).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  // billing may not shred.
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::ShredTenantRequest req;
  req.set_tenant_id("alive");
  req.set_confirm_tenant_id("alive");
  v1::ShredTenantResponse resp;
  EXPECT_EQ(Admin("billing")->ShredTenant(&ctx, req, &resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(KmsdE2eTest, KekRotationWrapsNewDeksUnderTheNewVersionAndOldOnesStillWork) {
  CreateTenant("pre-kek");
  v1::EncryptResponse old_ct;
  ASSERT_TRUE(Encrypt("pre-kek", "under the old KEK", {}, &old_ct).ok());
  auto rotated = RunCommand(Kmsctl("kek rotate -o json"));
  ASSERT_EQ(rotated.exit_code, 0) << rotated.out;
  const int primary = nlohmann::json::parse(rotated.out)["primary_kek_version"];
  EXPECT_GE(primary, 2);
  CreateTenant("post-kek");
  v1::EncryptResponse new_ct;
  ASSERT_TRUE(Encrypt("post-kek", "under the new KEK", {}, &new_ct).ok());
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("pre-kek", old_ct.ciphertext(), {}, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "under the old KEK");
  auto status = nlohmann::json::parse(RunCommand(Kmsctl("status -o json")).out);
  EXPECT_EQ(status["primary_kek_version"], primary);
  EXPECT_EQ(status["kek_versions"].size(), static_cast<size_t>(primary));
}

// Last in the file: restarts the shared process.
TEST_F(KmsdE2eTest, CiphertextFromBeforeARestartDecryptsAfterIt) {
  CreateTenant("durable");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("durable", "+1 555 0100", {{"column", "phone"}}, &enc).ok());
  grpc::ClientContext before_ctx;
  Deadline(before_ctx);
  v1::GetStatusResponse before;
  ASSERT_TRUE(Admin()->GetStatus(&before_ctx, {}, &before).ok());
  EXPECT_EQ(kmsd_->Stop(), 0);
  delete kmsd_;
  kmsd_ = nullptr;
  StartKmsd();
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("durable", enc.ciphertext(), {{"column", "phone"}}, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "+1 555 0100");
  // The restart reused the token and the KEKs: no new KEK version.
  grpc::ClientContext ctx;
  Deadline(ctx);
  v1::GetStatusResponse status;
  ASSERT_TRUE(Admin()->GetStatus(&ctx, {}, &status).ok());
  EXPECT_EQ(status.kek_versions_size(), before.kek_versions_size());
  EXPECT_EQ(status.primary_kek_version(), before.primary_kek_version());
}

}  // namespace
}  // namespace kms
