// Security tests at the process level: real kmsd processes (config-file mode over a dev
// state dir: SoftHSM2 token, SQLite, dev CA), driven over mTLS like an attacker and a
// careless client would. See docs/security.md for the list and what kmsd does.
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "src/dev/dev_pki.h"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using Code = grpc::StatusCode;
using test::RunCommand;
using Clock = std::chrono::steady_clock;

// One dev state dir (made once by `kmsd --dev`), test client certificates issued by its
// CA, and a policy with a service per tenant.
class SecurityE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-security-");
    state_ = dir_->Join("state");
    {  // the first start creates the token, the CA, the server and dev client certificates
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0"},
          dir_->Join("dev.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    auto ca = dev::LoadIssued(state_ + "/pki/ca.pem", state_ + "/pki/ca.key");
    ASSERT_TRUE(ca.ok()) << ca.status();
    const std::string td = "spiffe://kmsd.dev/";
    Issue(*ca, "svc-acme", {.common_name = "svc-acme", .uri_sans = {td + "svc-acme"}});
    Issue(*ca, "svc-other", {.common_name = "svc-other", .uri_sans = {td + "svc-other"}});
    Issue(*ca, "stranger", {.common_name = "stranger", .uri_sans = {td + "stranger"}});
    // Two URI SANs (no single SPIFFE id) and a CN shaped like one: no identity at all.
    Issue(*ca, "noid", {.common_name = td + "operator",
                        .uri_sans = {td + "operator", "https://example.com/x"}});
    Issue(*ca, "expired", {.common_name = "svc-acme",
                           .uri_sans = {td + "svc-acme"},
                           .not_before_offset_seconds = -3 * 86400,
                           .not_after_offset_seconds = -86400});
    auto rogue_ca = dev::CreateCa("rogue CA", 30);
    ASSERT_TRUE(rogue_ca.ok());
    auto rogue = dev::IssueClientCert(*rogue_ca, "operator", td + "operator", 30);
    ASSERT_TRUE(rogue.ok());
    ASSERT_TRUE(dev::WriteIssued(*rogue, Client("rogue") + ".pem", Client("rogue") + ".key").ok());

    nlohmann::json policy = {
        {"version", 1},
        {"identities",
         {{{"identity", td + "operator"}, {"operations", {"*"}}, {"tenants", {"*"}}},
          {{"identity", td + "svc-acme"},
           {"operations", {"encrypt", "decrypt", "sign_jwt", "verify_jwt"}},
           {"tenants", {"acme"}}},
          {{"identity", td + "svc-other"},
           {"operations", {"encrypt", "decrypt"}},
           {"tenants", {"other"}}}}}};
    policy_ = dir_->Write("policy.json", policy.dump(2), 0644);
    kmsd_ = Start("main", {}).release();
    ASSERT_NE(kmsd_, nullptr);
    CreateTenant("acme");
    CreateTenant("other");
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }

  static std::string Client(const std::string& name) { return state_ + "/pki/clients/" + name; }

  static void Issue(const dev::IssuedCert& ca, const std::string& name,
                    const dev::TestClientCert& spec) {
    auto cert = dev::IssueTestClientCert(ca, spec);
    ASSERT_TRUE(cert.ok()) << cert.status();
    ASSERT_TRUE(dev::WriteIssued(*cert, Client(name) + ".pem", Client(name) + ".key").ok());
  }

  // A config-file-mode kmsd on this state dir with its own database `name`.db; `patch`
  // changes the config before it is written. `wrapper` runs kmsd under another program
  // (prlimit).
  static nlohmann::json Config(const std::string& name) {
    nlohmann::json c = e2e::DevStateConfig(state_, dir_->Join(name + ".db"));
    c["node_id"] = name;
    c["http"] = {{"listen", "127.0.0.1:0"}};
    c["policy_file"] = policy_;
    c["dek_cache"] = {{"ttl_seconds", 1}};  // a store edit is seen within a second
    return c;
  }
  static std::unique_ptr<test::KmsdProcess> Start(const std::string& name,
                                                  const nlohmann::json& patch,
                                                  std::vector<std::string> wrapper = {}) {
    nlohmann::json c = Config(name);
    if (patch.is_object()) c.merge_patch(patch);
    const std::string path = dir_->Write(name + ".json", c.dump(2), 0644);
    std::vector<std::string> args = wrapper;
    std::string binary = KMSD_BINARY;
    if (!wrapper.empty()) {
      binary = wrapper[0];
      args.erase(args.begin());
      args.push_back(KMSD_BINARY);
    }
    args.push_back("--config");
    args.push_back(path);
    auto p = test::KmsdProcess::Start(binary, args, dir_->Join(name + ".log"));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& client,
                                                test::KmsdProcess* kmsd = nullptr) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = test::ReadFileOrEmpty(state_ + "/pki/ca.pem");
    if (!client.empty()) {
      tls.pem_cert_chain = test::ReadFileOrEmpty(Client(client) + ".pem");
      tls.pem_private_key = test::ReadFileOrEmpty(Client(client) + ".key");
    }
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    args.SetMaxReceiveMessageSize(-1);
    return grpc::CreateCustomChannel((kmsd ? kmsd : kmsd_)->grpc_addr(), grpc::SslCredentials(tls),
                                     args);
  }

  static void CreateTenant(const std::string& id, test::KmsdProcess* kmsd = nullptr) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    v1::CreateTenantResponse resp;
    grpc::Status s = v1::AdminService::NewStub(Channel("operator", kmsd))->CreateTenant(&ctx, req, &resp);
    ASSERT_TRUE(s.ok() || s.error_code() == Code::ALREADY_EXISTS) << s.error_message();
  }

  static grpc::Status Encrypt(const std::string& client, const std::string& tenant,
                              const std::string& plaintext, v1::EncryptResponse* resp,
                              test::KmsdProcess* kmsd = nullptr) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::EncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_plaintext(plaintext);
    return v1::KeyService::NewStub(Channel(client, kmsd))->Encrypt(&ctx, req, resp);
  }
  static grpc::Status Decrypt(const std::string& client, const std::string& tenant,
                              const std::string& ciphertext, v1::DecryptResponse* resp,
                              test::KmsdProcess* kmsd = nullptr) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptRequest req;
    req.set_tenant_id(tenant);
    req.set_ciphertext(ciphertext);
    return v1::KeyService::NewStub(Channel(client, kmsd))->Decrypt(&ctx, req, resp);
  }

  // `curl` on the HTTPS listener: the HTTP status, or 0 when no response came.
  static int Https(int port, const std::string& path, const std::string& client = "",
                   double max_seconds = 5) {
    std::string cmd = absl::StrCat("curl -s -o /dev/null -w '%{http_code}' --max-time ",
                                   max_seconds, " --cacert ", state_, "/pki/ca.pem");
    if (!client.empty()) {
      absl::StrAppend(&cmd, " --cert ", Client(client), ".pem --key ", Client(client), ".key");
    }
    absl::StrAppend(&cmd, " https://localhost:", port, path);
    auto run = RunCommand(cmd);
    return run.out.empty() ? 0 : std::atoi(run.out.c_str());
  }

  static std::string Sql(const std::string& db, const std::string& statements) {
    auto run = RunCommand(absl::StrCat("sqlite3 -cmd '.timeout 10000' ", db), statements);
    return run.out;
  }

  static test::TempDir* dir_;
  static std::string state_;
  static std::string policy_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* SecurityE2eTest::dir_ = nullptr;
std::string SecurityE2eTest::state_;
std::string SecurityE2eTest::policy_;
test::KmsdProcess* SecurityE2eTest::kmsd_ = nullptr;

// --- Who may call what

TEST_F(SecurityE2eTest, AuthorizationMatrixEveryRpcByEveryKindOfCaller) {
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("operator", "acme", "matrix", &enc).ok());
  grpc::ClientContext sctx;
  e2e::Deadline(sctx);
  v1::SignJwtRequest sreq;
  sreq.set_claims_json(R"({"sub":"m"})");
  v1::SignJwtResponse signed_jwt;
  ASSERT_TRUE(v1::KeyService::NewStub(Channel("operator"))->SignJwt(&sctx, sreq, &signed_jwt).ok());

  using Call = std::function<grpc::Status(const std::string& client)>;
  auto keys = [](const std::string& c) { return v1::KeyService::NewStub(Channel(c)); };
  auto admin = [](const std::string& c) { return v1::AdminService::NewStub(Channel(c)); };
  int shred_counter = 0;
  const std::map<std::string, Call> rpcs = {
      {"Encrypt", [&](const std::string& c) { v1::EncryptResponse r; return Encrypt(c, "acme", "x", &r); }},
      {"Decrypt", [&](const std::string& c) { v1::DecryptResponse r; return Decrypt(c, "acme", enc.ciphertext(), &r); }},
      {"EncryptBatch", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::EncryptBatchRequest q; q.set_tenant_id("acme"); q.add_items()->set_plaintext("x");
         v1::EncryptBatchResponse r; return keys(c)->EncryptBatch(&ctx, q, &r); }},
      {"DecryptBatch", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::DecryptBatchRequest q; q.set_tenant_id("acme"); q.add_items()->set_ciphertext(enc.ciphertext());
         v1::DecryptBatchResponse r; return keys(c)->DecryptBatch(&ctx, q, &r); }},
      {"SignJwt", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::SignJwtResponse r; return keys(c)->SignJwt(&ctx, sreq, &r); }},
      {"VerifyJwt", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::VerifyJwtRequest q; q.set_jwt(signed_jwt.jwt());
         v1::VerifyJwtResponse r; return keys(c)->VerifyJwt(&ctx, q, &r); }},
      {"GetJwks", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::GetJwksResponse r; return keys(c)->GetJwks(&ctx, {}, &r); }},
      {"CreateTenant", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::CreateTenantRequest q; q.set_tenant_id("acme");
         v1::CreateTenantResponse r; return admin(c)->CreateTenant(&ctx, q, &r); }},
      {"GetTenant", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::GetTenantRequest q; q.set_tenant_id("acme");
         v1::GetTenantResponse r; return admin(c)->GetTenant(&ctx, q, &r); }},
      {"ListTenants", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::ListTenantsResponse r; return admin(c)->ListTenants(&ctx, {}, &r); }},
      {"RotateTenantKey", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::RotateTenantKeyRequest q; q.set_tenant_id("acme");
         v1::RotateTenantKeyResponse r; return admin(c)->RotateTenantKey(&ctx, q, &r); }},
      {"ShredTenant", [&](const std::string& c) {
         // A fresh tenant each time, so an allowed shred destroys nothing another call needs.
         const std::string victim = absl::StrCat("victim-", ++shred_counter);
         CreateTenant(victim);
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::ShredTenantRequest q; q.set_tenant_id(victim); q.set_confirm_tenant_id(victim);
         v1::ShredTenantResponse r; return admin(c)->ShredTenant(&ctx, q, &r); }},
      {"RotateKek", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::RotateKekResponse r; return admin(c)->RotateKek(&ctx, {}, &r); }},
      {"GetJwtStatus", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::GetJwtStatusResponse r; return admin(c)->GetJwtStatus(&ctx, {}, &r); }},
      {"RotateJwtKey", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::RotateJwtKeyResponse r; return admin(c)->RotateJwtKey(&ctx, {}, &r); }},
      {"AckJwtCritical", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::AckJwtCriticalResponse r; return admin(c)->AckJwtCritical(&ctx, {}, &r); }},
      {"GetStatus", [&](const std::string& c) {
         grpc::ClientContext ctx; e2e::Deadline(ctx);
         v1::GetStatusResponse r; return admin(c)->GetStatus(&ctx, {}, &r); }},
  };
  // What each caller may do: the operator everything; the acme service its data and JWT
  // operations on acme; the other tenant's service nothing here; an unknown identity and
  // a certificate without an identity nothing.
  const std::set<std::string> acme_allowed = {"Encrypt", "Decrypt", "EncryptBatch",
                                              "DecryptBatch", "SignJwt", "VerifyJwt", "GetJwks"};
  for (const auto& [rpc, call] : rpcs) {
    for (const std::string client : {"operator", "svc-acme", "svc-other", "stranger", "noid"}) {
      const bool allowed =
          client == "operator" || (client == "svc-acme" && acme_allowed.contains(rpc));
      grpc::Status s = call(client);
      if (allowed) {
        // Allowed means served: no refusal of the caller (AckJwtCritical has nothing to
        // acknowledge, CreateTenant finds acme: their own answers, not the gate's).
        EXPECT_NE(s.error_code(), Code::PERMISSION_DENIED) << rpc << " as " << client;
        EXPECT_NE(s.error_code(), Code::UNAUTHENTICATED) << rpc << " as " << client;
        EXPECT_NE(s.error_code(), Code::UNAVAILABLE) << rpc << " as " << client << ": " << s.error_message();
        if (rpc != "AckJwtCritical" && rpc != "CreateTenant") {
          EXPECT_TRUE(s.ok()) << rpc << " as " << client << ": " << s.error_message();
        }
      } else {
        EXPECT_EQ(s.error_code(), Code::PERMISSION_DENIED)
            << rpc << " as " << client << ": " << s.error_message();
      }
    }
  }
  // The other service is served on its own tenant, and only there.
  v1::EncryptResponse other;
  EXPECT_TRUE(Encrypt("svc-other", "other", "mine", &other).ok());
  v1::DecryptResponse dec;
  EXPECT_EQ(Decrypt("svc-acme", "other", other.ciphertext(), &dec).error_code(),
            Code::PERMISSION_DENIED);
}

// VerifyJwt: every token it does not accept is UNAUTHENTICATED, whatever is wrong with it
// (key_service.proto), up to a token too long for the method.
TEST_F(SecurityE2eTest, EveryRejectedTokenIsUnauthenticated) {
  grpc::ClientContext sctx;
  e2e::Deadline(sctx);
  v1::SignJwtRequest sreq;
  sreq.set_claims_json(R"({"sub":"u1","n":9007199254740991})");
  v1::SignJwtResponse good;
  auto keys = v1::KeyService::NewStub(Channel("svc-acme"));
  ASSERT_TRUE(keys->SignJwt(&sctx, sreq, &good).ok());
  std::string tampered = good.jwt();
  tampered[tampered.size() / 2] ^= 1;
  for (const std::string& token :
       {std::string(), std::string("a.b.c"), tampered, good.jwt() + "x",
        std::string(40 * 1024, 'a'), std::string(70 * 1024, 'a'),
        std::string(200 * 1024, 'a')}) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::VerifyJwtRequest q;
    q.set_jwt(token);
    v1::VerifyJwtResponse r;
    grpc::Status s = keys->VerifyJwt(&ctx, q, &r);
    EXPECT_EQ(s.error_code(), Code::UNAUTHENTICATED) << token.size() << ": " << s.error_message();
    EXPECT_EQ(s.error_message().rfind("token rejected: ", 0), 0u) << s.error_message();
  }
  grpc::ClientContext ctx;
  e2e::Deadline(ctx);
  v1::VerifyJwtRequest q;
  q.set_jwt(good.jwt());
  v1::VerifyJwtResponse r;
  ASSERT_TRUE(keys->VerifyJwt(&ctx, q, &r).ok());
  // The claims come back as signed: the integer is not rounded.
  EXPECT_NE(r.claims_json().find("\"n\":9007199254740991"), std::string::npos) << r.claims_json();
  // The example of the report: refused, not signed as 1.2345678901234568e+29.
  grpc::ClientContext bctx;
  e2e::Deadline(bctx);
  sreq.set_claims_json(R"({"sub":"u1","uid":123456789012345678901234567890})");
  v1::SignJwtResponse big;
  grpc::Status s = keys->SignJwt(&bctx, sreq, &big);
  EXPECT_EQ(s.error_code(), Code::INVALID_ARGUMENT) << s.error_message();
  EXPECT_TRUE(big.jwt().empty());
}

TEST_F(SecurityE2eTest, AnExpiredClientCertificateIsRefusedOnBothListeners) {
  v1::EncryptResponse enc;
  grpc::Status s = Encrypt("expired", "acme", "x", &enc);
  EXPECT_EQ(s.error_code(), Code::UNAVAILABLE) << s.error_message();  // no handshake
  EXPECT_TRUE(enc.ciphertext().empty());
  EXPECT_EQ(Https(kmsd_->http_port(), "/healthz", "expired"), 0);
  // The same identity with a valid certificate is served.
  EXPECT_TRUE(Encrypt("svc-acme", "acme", "x", &enc).ok());
}

TEST_F(SecurityE2eTest, ACertificateOfAnotherCaIsRefusedOnBothListeners) {
  v1::EncryptResponse enc;
  EXPECT_EQ(Encrypt("rogue", "acme", "x", &enc).error_code(), Code::UNAVAILABLE);
  EXPECT_EQ(Https(kmsd_->http_port(), "/healthz", "rogue"), 0);
  // Without any certificate the HTTPS listener serves its public endpoints.
  EXPECT_EQ(Https(kmsd_->http_port(), "/healthz"), 200);
  EXPECT_EQ(Https(kmsd_->http_port(), "/.well-known/jwks.json"), 200);
}

// --- Stored bytes that were tampered with

TEST_F(SecurityE2eTest, AWrappedDekEditedInTheStoreIsDetectedNeverUsedAndReported) {
  CreateTenant("tamper");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("operator", "tamper", "the secret", &enc).ok());
  const std::string db = dir_->Join("main.db");
  // Flip one bit of the sealed DEK (inside its GCM ciphertext), under the running kmsd.
  const std::string before = Sql(db, "SELECT hex(wrapped) FROM tenant_deks WHERE tenant_id = 'tamper';");
  Sql(db, "UPDATE tenant_deks SET wrapped = CAST(substr(wrapped, 1, 20) || "
          "CASE WHEN substr(wrapped, 21, 1) = x'00' THEN x'01' ELSE x'00' END || "
          "substr(wrapped, 22) AS BLOB) WHERE tenant_id = 'tamper';");
  const std::string after = Sql(db, "SELECT hex(wrapped) FROM tenant_deks WHERE tenant_id = 'tamper';");
  ASSERT_EQ(before.size(), after.size());
  ASSERT_NE(before, after);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // past the 1 s cache TTL
  for (int i = 0; i < 3; ++i) {
    v1::DecryptResponse dec;
    grpc::Status s = Decrypt("operator", "tamper", enc.ciphertext(), &dec);
    EXPECT_EQ(s.error_code(), Code::INTERNAL) << s.error_message();
    EXPECT_TRUE(dec.plaintext().empty());
    EXPECT_EQ(s.error_message().find("secret"), std::string::npos);
    v1::EncryptResponse again;
    EXPECT_EQ(Encrypt("operator", "tamper", "more", &again).error_code(), Code::INTERNAL);
    EXPECT_TRUE(again.ciphertext().empty());
  }
  // Reported: the log names the failure (and no key byte or plaintext).
  const std::string log = test::ReadFileOrEmpty(kmsd_->log_path());
  EXPECT_NE(log.find("tamper"), std::string::npos) << log;
  EXPECT_EQ(log.find("the secret"), std::string::npos);
  // Other tenants are unaffected.
  EXPECT_TRUE(Encrypt("operator", "acme", "fine", &enc).ok());
}

TEST_F(SecurityE2eTest, AKekBlobSwappedBetweenVersionsIsDetectedAndNeverUsed) {
  auto kmsd = Start("kekswap", {});
  ASSERT_NE(kmsd, nullptr);
  CreateTenant("before", kmsd.get());
  v1::EncryptResponse before;
  ASSERT_TRUE(Encrypt("operator", "before", "under kek 1", &before, kmsd.get()).ok());
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateKekResponse r;
    ASSERT_TRUE(v1::AdminService::NewStub(Channel("operator", kmsd.get()))->RotateKek(&ctx, {}, &r).ok());
  }
  CreateTenant("after", kmsd.get());
  v1::EncryptResponse after;
  ASSERT_TRUE(Encrypt("operator", "after", "under kek 2", &after, kmsd.get()).ok());
  ASSERT_EQ(kmsd->Stop(), 0);

  const std::string db = dir_->Join("kekswap.db");
  ASSERT_EQ(Sql(db, "SELECT count(*) FROM kek_versions;"), "2\n");
  const std::string blobs = "SELECT hex(wrapped) FROM kek_versions ORDER BY version;";
  const std::string unswapped = Sql(db, blobs);
  // A swap through a copy (one UPDATE reading the table it writes would copy one blob
  // onto both rows in SQLite).
  Sql(db, "BEGIN; CREATE TEMP TABLE k AS SELECT version, wrapped FROM kek_versions; "
          "UPDATE kek_versions SET wrapped = (SELECT wrapped FROM k WHERE k.version = "
          "3 - kek_versions.version) WHERE version IN (1, 2); COMMIT;");
  const std::string swapped = Sql(db, blobs);
  const size_t nl = unswapped.find('\n');
  ASSERT_NE(nl, std::string::npos);
  ASSERT_EQ(swapped, unswapped.substr(nl + 1) + unswapped.substr(0, nl + 1)) << "not swapped";

  // Either kmsd refuses to start (what it sealed under a KEK no longer authenticates), or
  // it serves and every key under a swapped KEK fails: never a plaintext.
  const std::string log_path = dir_->Join("kekswap-2.log");
  auto config = Config("kekswap");
  const std::string path = dir_->Write("kekswap-2.json", config.dump(2), 0644);
  auto restarted = test::KmsdProcess::Start(KMSD_BINARY, {"--config", path}, log_path,
                                            std::chrono::seconds(60));
  if (!restarted.ok()) {
    const std::string log = test::ReadFileOrEmpty(log_path);
    std::printf("[kek swap] kmsd refused to start: %s\n", log.substr(log.rfind("kmsd")).c_str());
    EXPECT_TRUE(log.find("authenticat") != std::string::npos ||
                log.find("DATA_LOSS") != std::string::npos ||
                log.find("does not open") != std::string::npos) << log;
    return;
  }
  for (const auto& [tenant, ct] : {std::pair{"before", before.ciphertext()},
                                   std::pair{"after", after.ciphertext()}}) {
    v1::DecryptResponse dec;
    grpc::Status s = Decrypt("operator", tenant, ct, &dec, restarted->get());
    EXPECT_FALSE(s.ok()) << tenant;
    EXPECT_TRUE(dec.plaintext().empty()) << tenant;
  }
}

// --- Hostile peers on the listeners

// A TLS connection to the HTTPS listener that sends a request line, then one header byte
// every `gap` (no client certificate), until `stop`.
void Slowloris(int port, std::atomic<bool>& stop, std::chrono::milliseconds gap) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{.sin_family = AF_INET, .sin_port = htons(static_cast<uint16_t>(port)),
                   .sin_addr = {htonl(INADDR_LOOPBACK)}};
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) == 1) {
    const std::string line = "GET /healthz HTTP/1.1\r\nHost: kmsd\r\nX-Slow: ";
    SSL_write(ssl, line.data(), static_cast<int>(line.size()));
    while (!stop) {
      std::this_thread::sleep_for(gap);
      if (SSL_write(ssl, "a", 1) <= 0) break;  // the server closed it: fine
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
}

TEST_F(SecurityE2eTest, SlowlorisOnTheHttpsListenerLeavesHealthAndJwksFast) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> slow;
  for (int i = 0; i < 32; ++i) {
    slow.emplace_back(Slowloris, kmsd_->http_port(), std::ref(stop), std::chrono::seconds(2));
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));
  for (int round = 0; round < 5; ++round) {
    const auto start = Clock::now();
    EXPECT_EQ(Https(kmsd_->http_port(), "/healthz", "", 2), 200) << "round " << round;
    EXPECT_EQ(Https(kmsd_->http_port(), "/readyz", "", 2), 200) << "round " << round;
    EXPECT_EQ(Https(kmsd_->http_port(), "/.well-known/jwks.json", "", 2), 200) << "round " << round;
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(6));
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  stop = true;
  for (auto& t : slow) t.join();
}

// 16 maximal EncryptBatch requests (1000 x 64 KiB) at once: each gets an answer or a
// refusal, and kmsd's peak resident memory stays under 512 MiB. A refusal is
// RESOURCE_EXHAUSTED (the in-flight budget) or, when gRPC's memory quota reclaims a
// connection under pressure, UNAVAILABLE with the server's GOAWAY; nothing else.
TEST_F(SecurityE2eTest, SixteenMaximalBatchesAtOnceStayWithinTheMemoryBound) {
  auto kmsd = Start("memory", {});
  ASSERT_NE(kmsd, nullptr);
  CreateTenant("bulk", kmsd.get());
  v1::EncryptBatchRequest req;
  req.set_tenant_id("bulk");
  for (int i = 0; i < 1000; ++i) req.add_items()->set_plaintext(std::string(64 * 1024, 'a' + i % 26));
  std::atomic<int> ok{0}, exhausted{0}, other{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 16; ++i) {
    callers.emplace_back([&, i] {
      // Separate connections, as separate peers would use.
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(-1);
      args.SetMaxReceiveMessageSize(-1);
      args.SetInt("kmsd.test.peer", i);
      grpc::SslCredentialsOptions tls;
      tls.pem_root_certs = test::ReadFileOrEmpty(state_ + "/pki/ca.pem");
      tls.pem_cert_chain = test::ReadFileOrEmpty(Client("operator") + ".pem");
      tls.pem_private_key = test::ReadFileOrEmpty(Client("operator") + ".key");
      auto stub = v1::KeyService::NewStub(
          grpc::CreateCustomChannel(kmsd->grpc_addr(), grpc::SslCredentials(tls), args));
      grpc::ClientContext ctx;
      e2e::Deadline(ctx, std::chrono::seconds(120));
      v1::EncryptBatchResponse resp;
      grpc::Status s = stub->EncryptBatch(&ctx, req, &resp);
      if (s.ok() && resp.results_size() == 1000) {
        ++ok;
      } else if (s.error_code() == Code::RESOURCE_EXHAUSTED ||
                 (s.error_code() == Code::UNAVAILABLE &&
                  s.error_message().find("GOAWAY") != std::string::npos)) {
        ++exhausted;
      } else {
        ++other;
        ADD_FAILURE() << "call " << i << ": " << s.error_code() << " " << s.error_message();
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(ok + exhausted, 16);
  EXPECT_GE(ok.load(), 1);
  const std::string status = test::ReadFileOrEmpty(absl::StrCat("/proc/", kmsd->pid(), "/status"));
  const size_t at = status.find("VmHWM:");
  ASSERT_NE(at, std::string::npos);
  const long hwm_kib = std::atol(status.c_str() + at + 6);
  std::printf("[memory] ok=%d refused=%d VmHWM=%ld KiB\n", ok.load(), exhausted.load(),
              hwm_kib);
  EXPECT_LT(hwm_kib, 512 * 1024);
  // Still serving afterwards.
  v1::EncryptResponse enc;
  EXPECT_TRUE(Encrypt("operator", "bulk", "after", &enc, kmsd.get()).ok());
}

// 1100 idle TCP connections (no TLS) to the gRPC port of a kmsd limited to 1024 open
// files. gRPC 1.51 stops accepting for good once accept4 fails with EMFILE; what kmsd
// guarantees is that it then says so: /readyz 503 naming the gRPC listener (and /healthz
// keeps answering), or else a legitimate client is still served fast.
TEST_F(SecurityE2eTest, IdleConnectionsExhaustingDescriptorsMakeTheNodeNotReadyOrLeaveItServing) {
  auto kmsd = Start("fds", {}, {"/usr/bin/prlimit", "--nofile=1024:1024"});
  ASSERT_NE(kmsd, nullptr);
  CreateTenant("fd", kmsd.get());
  v1::EncryptResponse warm;
  ASSERT_TRUE(Encrypt("operator", "fd", "warm the cache", &warm, kmsd.get()).ok());
  const std::string limits = test::ReadFileOrEmpty(absl::StrCat("/proc/", kmsd->pid(), "/limits"));
  ASSERT_NE(limits.find("Max open files            1024"), std::string::npos) << limits;

  rlimit own{};
  getrlimit(RLIMIT_NOFILE, &own);
  own.rlim_cur = own.rlim_max;
  setrlimit(RLIMIT_NOFILE, &own);
  std::vector<int> idle;
  // More than the limit leaves after kmsd's own descriptors: accept must fail (EMFILE).
  for (int i = 0; i < 1100; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{.sin_family = AF_INET,
                     .sin_port = htons(static_cast<uint16_t>(kmsd->grpc_port())),
                     .sin_addr = {htonl(INADDR_LOOPBACK)}};
    if (fd < 0) break;
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      idle.push_back(fd);
    } else {
      close(fd);
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto count_fds = [&] {
    auto run = RunCommand(absl::StrCat("ls /proc/", kmsd->pid(), "/fd | wc -l"));
    return std::atoi(run.out.c_str());
  };
  std::printf("[fds] %zu idle connections open; kmsd holds %d descriptors\n", idle.size(),
              count_fds());

  // Within two probe intervals either a legitimate client is served fast, or the node
  // reports not ready with the reason.
  bool served = true;
  bool reported = false;
  std::string readyz;
  const auto deadline = Clock::now() + std::chrono::seconds(25);
  while (Clock::now() < deadline && !reported) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::EncryptRequest q;
    q.set_tenant_id("fd");
    q.set_plaintext("legit");
    v1::EncryptResponse r;
    const auto start = Clock::now();
    grpc::Status s = v1::KeyService::NewStub(Channel("operator", kmsd.get()))->Encrypt(&ctx, q, &r);
    if (!s.ok() || Clock::now() - start > std::chrono::seconds(1)) served = false;
    auto run = RunCommand(absl::StrCat("curl -s --max-time 3 --cacert ", state_,
                                       "/pki/ca.pem -w ' %{http_code}' https://localhost:",
                                       kmsd->http_port(), "/readyz"));
    readyz = run.out;
    if (readyz.find("gRPC listener not accepting connections") != std::string::npos &&
        readyz.find(" 503") != std::string::npos) {
      reported = true;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::printf("[fds] served=%d reported=%d readyz=%s\n", served, reported, readyz.c_str());
  EXPECT_TRUE(served || reported) << readyz;
  // Health keeps answering (liveness fails only after the listener has been dead a while).
  EXPECT_NE(Https(kmsd->http_port(), "/healthz", "", 3), 0);
  const std::string log = test::ReadFileOrEmpty(kmsd->log_path());
  if (reported) EXPECT_NE(log.find("gRPC listener is not accepting connections"), std::string::npos);
  // What gRPC said about accept (EMFILE) and what kmsd said about its listener.
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("accept4") != std::string::npos || line.find("gRPC listener is") != std::string::npos ||
        line.find("open-file") != std::string::npos) {
      std::printf("[fds log] %s\n", line.substr(0, 200).c_str());
    }
  }
  for (int fd : idle) close(fd);
}

}  // namespace
}  // namespace kms
