// End to end for the rotation API (issue 8, part 2): one real kmsd (SoftHSM2, SQLite,
// the dev CA) over mutual TLS 1.3. A corpus of ciphertexts made before any rotation
// outlives a KEK rotation, two DEK rotations and a JWT rotation; ReEncrypt moves it to
// the primary DEK version; SetMinDecryptVersion retires the old versions (their own
// status, on Decrypt, DecryptBatch and ReEncrypt); a shred returns a signed receipt
// that Node's jose verifies against the HTTPS receipt keys, before and after a JWT
// rotation has retired the key that signed it; kmsctl's new commands and exit codes.
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
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
using Json = nlohmann::json;
using Context = std::map<std::string, std::string>;

constexpr char kIssuer[] = "https://kmsd.rotation.test";
constexpr char kNode[] = "rotation-e2e-node";
constexpr int kMaxTtl = 4;
constexpr int kClockSkew = 1;
constexpr int kJwksCache = 2;

class RotationApiE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-rot-e2e-");
    state_ = dir_->Join("state");
    // The dev run makes the token, CA, certificates and policy; then a config-file run
    // with short JWT windows (a JWT rotation completes in seconds) and HTTPS on.
    {
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY,
          {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
          dir_->Join("dev.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    // A client allowed to re-encrypt and nothing else: ReEncrypt needs no decrypt grant.
    ASSERT_EQ(RunCommand(absl::StrCat(KMSD_BINARY, " --dev --state-dir ", state_,
                                      " --issue-client-cert migrator"))
                  .exit_code,
              0);
    Json policy = Json::parse(test::ReadFileOrEmpty(state_ + "/policy.json"));
    policy["identities"].push_back({{"identity", "spiffe://kmsd.dev/migrator"},
                                    {"operations", {"reencrypt"}},
                                    {"tenants", {"corpus", "policy-*"}}});
    std::ofstream(state_ + "/policy.json") << policy.dump(2);

    Json config = e2e::DevStateConfig(state_, dir_->Join("rotation.db"));
    config["node_id"] = kNode;
    config["http"]["listen"] = "127.0.0.1:0";
    config["jwt"] = {{"issuer", kIssuer},
                     {"max_ttl_seconds", kMaxTtl},
                     {"clock_skew_seconds", kClockSkew},
                     {"jwks_cache_seconds", kJwksCache},
                     {"rotation_period_seconds", 3600}};
    const std::string path = dir_->Write("kmsd.json", config.dump(2), 0644);
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", path}, dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
    // kmsctl reads its connection from kmsctl.json: point it at this process.
    Json kmsctl = Json::parse(test::ReadFileOrEmpty(state_ + "/kmsctl.json"));
    kmsctl["addr"] = kmsd_->grpc_addr();
    std::ofstream(state_ + "/kmsctl.json") << kmsctl.dump(2);
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& client) {
    return e2e::DevChannel(state_, kmsd_->grpc_addr(), client);
  }
  static std::unique_ptr<v1::KeyService::Stub> Keys(const std::string& client = "billing") {
    return v1::KeyService::NewStub(Channel(client));
  }
  static std::unique_ptr<v1::AdminService::Stub> Admin(const std::string& client = "operator") {
    return v1::AdminService::NewStub(Channel(client));
  }

  static void CreateTenant(const std::string& id) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::CreateTenantRequest req;
    req.set_tenant_id(id);
    v1::CreateTenantResponse resp;
    grpc::Status s = Admin()->CreateTenant(&ctx, req, &resp);
    ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }
  static grpc::Status RotateDek(const std::string& id) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateTenantKeyRequest req;
    req.set_tenant_id(id);
    v1::RotateTenantKeyResponse resp;
    return Admin()->RotateTenantKey(&ctx, req, &resp);
  }
  static grpc::Status SetMin(const std::string& id, uint32_t version,
                             v1::SetMinDecryptVersionResponse* resp = nullptr) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::SetMinDecryptVersionRequest req;
    req.set_tenant_id(id);
    req.set_min_decrypt_version(version);
    v1::SetMinDecryptVersionResponse ignored;
    return Admin()->SetMinDecryptVersion(&ctx, req, resp != nullptr ? resp : &ignored);
  }
  static grpc::Status ListKeys(const std::string& tenant, v1::ListKeysResponse* resp) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::ListKeysRequest req;
    req.set_tenant_id(tenant);
    return Admin()->ListKeys(&ctx, req, resp);
  }
  static grpc::Status Encrypt(const std::string& tenant, const std::string& plaintext,
                              const Context& context, v1::EncryptResponse* resp) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::EncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_plaintext(plaintext);
    for (const auto& [k, v] : context) (*req.mutable_context())[k] = v;
    return Keys()->Encrypt(&ctx, req, resp);
  }
  static grpc::Status Decrypt(const std::string& tenant, const std::string& ciphertext,
                              const Context& context, v1::DecryptResponse* resp,
                              const std::string& client = "billing") {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptRequest req;
    req.set_tenant_id(tenant);
    req.set_ciphertext(ciphertext);
    for (const auto& [k, v] : context) (*req.mutable_context())[k] = v;
    return Keys(client)->Decrypt(&ctx, req, resp);
  }
  static grpc::Status ReEncrypt(const std::string& tenant, const std::string& ciphertext,
                                const Context& context, v1::ReEncryptResponse* resp,
                                const std::string& client = "billing",
                                const Context* new_context = nullptr) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::ReEncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_ciphertext(ciphertext);
    for (const auto& [k, v] : context) (*req.mutable_context())[k] = v;
    if (new_context != nullptr) {
      req.set_replace_context(true);
      for (const auto& [k, v] : *new_context) (*req.mutable_new_context())[k] = v;
    }
    return Keys(client)->ReEncrypt(&ctx, req, resp);
  }

  static void ExpectStillServing() {
    v1::EncryptResponse enc;
    ASSERT_TRUE(Encrypt("alive", "ping", {}, &enc).ok());
    v1::DecryptResponse dec;
    ASSERT_TRUE(Decrypt("alive", enc.ciphertext(), {}, &dec).ok());
    EXPECT_EQ(dec.plaintext(), "ping");
  }

  static std::string Kmsctl(const std::string& args) { return e2e::KmsctlCommand(state_, args); }

  static std::string HttpsUrl(const std::string& path) {
    return absl::StrCat("https://localhost:", kmsd_->http_port(), path);
  }
  static Json FetchJson(const std::string& path) {
    auto got = RunCommand(absl::StrCat("curl -sS --fail --tlsv1.3 --cacert ", state_, "/pki/ca.pem ",
                                       HttpsUrl(path), " 2>&1"));
    EXPECT_EQ(got.exit_code, 0) << got.out;
    return got.exit_code == 0 ? Json::parse(got.out) : Json::object();
  }
  static std::set<std::string> Kids(const Json& jwks) {
    std::set<std::string> kids;
    for (const Json& k : jwks.value("keys", Json::array())) kids.insert(k["kid"].get<std::string>());
    return kids;
  }
  // jose, with the receipt keys of the HTTPS endpoint (verify-receipt.mjs checks typ).
  static test::CommandResult JoseReceipt(const std::string& jws) {
    return RunCommand(absl::StrCat("NODE_EXTRA_CA_CERTS=", state_, "/pki/ca.pem node ",
                                   KMS_JOSE_RECEIPT_VERIFIER, " ",
                                   HttpsUrl("/.well-known/kmsd-receipt-keys.json"), " ", kIssuer,
                                   " '", jws, "'"));
  }

  static test::TempDir* dir_;
  static std::string state_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* RotationApiE2eTest::dir_ = nullptr;
std::string RotationApiE2eTest::state_;
test::KmsdProcess* RotationApiE2eTest::kmsd_ = nullptr;

struct Item {
  std::string plaintext;
  Context context;
  std::string ciphertext;
};

TEST_F(RotationApiE2eTest, ACorpusOutlivesEveryRotationMovesToThePrimaryAndThenRetires) {
  CreateTenant("alive");
  CreateTenant("corpus");
  // The corpus, made before any rotation.
  std::vector<Item> corpus;
  for (int i = 0; i < 40; ++i) {
    Item item{.plaintext = absl::StrCat("user-", i, "@example.com")};
    if (i % 2 == 0) item.context = {{"table", "users"}, {"row", std::to_string(i)}};
    v1::EncryptResponse enc;
    ASSERT_TRUE(Encrypt("corpus", item.plaintext, item.context, &enc).ok());
    ASSERT_EQ(enc.dek_version(), 1u);
    item.ciphertext = enc.ciphertext();
    corpus.push_back(std::move(item));
  }

  // A KEK rotation, two DEK rotations, a JWT rotation.
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateKekResponse kek;
    ASSERT_TRUE(Admin()->RotateKek(&ctx, {}, &kek).ok());
    EXPECT_EQ(kek.primary_kek_version(), 2u);
  }
  ASSERT_TRUE(RotateDek("corpus").ok());
  ASSERT_TRUE(RotateDek("corpus").ok());
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateJwtKeyResponse jwt;
    ASSERT_TRUE(Admin()->RotateJwtKey(&ctx, {}, &jwt).ok());
  }
  for (const Item& item : corpus) {
    v1::DecryptResponse dec;
    ASSERT_TRUE(Decrypt("corpus", item.ciphertext, item.context, &dec).ok());
    EXPECT_EQ(dec.plaintext(), item.plaintext);
    EXPECT_EQ(dec.dek_version(), 1u);
  }

  // ListKeys: both KEK versions, the tenant's three DEK versions.
  v1::ListKeysResponse listed;
  ASSERT_TRUE(ListKeys("corpus", &listed).ok());
  ASSERT_EQ(listed.keks_size(), 2);
  EXPECT_FALSE(listed.keks(0).primary());
  EXPECT_TRUE(listed.keks(1).primary());
  // Corpus v1 and alive v1 were made under KEK 1, corpus v2 and v3 under KEK 2; the
  // re-wrap job that RotateKek started may have moved some of the first two already.
  EXPECT_EQ(listed.keks(0).deks_wrapped() + listed.keks(1).deks_wrapped(), 4u);
  EXPECT_GE(listed.keks(1).deks_wrapped(), 2u);
  EXPECT_GE(listed.keks(1).jwt_keys_wrapped(), 1u);  // the JWT key made by the rotation
  EXPECT_FALSE(listed.keks(0).wrap_mechanism().empty());
  // KEK 2 was made moments ago: due in about the default period (90 days).
  EXPECT_GT(listed.kek_rotation_due_in_seconds(), 7776000 - 600);
  EXPECT_LE(listed.kek_rotation_due_in_seconds(), 7776000);
  ASSERT_EQ(listed.tenants_size(), 1);
  ASSERT_EQ(listed.tenants(0).dek_versions_size(), 3);
  EXPECT_EQ(listed.tenants(0).dek_versions(1).encryptions(), 0u);  // v2 never encrypted
  EXPECT_TRUE(listed.tenants(0).dek_versions(2).primary());
  EXPECT_EQ(listed.tenants(0).dek_versions(2).kek_version(), 2u);

  // ReEncrypt moves them all to the primary: half one by one (some to a new context),
  // half in one batch.
  std::vector<Item> moved(corpus.size());
  for (size_t i = 0; i < corpus.size() / 2; ++i) {
    v1::ReEncryptResponse r;
    Context fresh = {{"table", "users_v2"}};
    const bool rebind = i % 4 == 1;
    ASSERT_TRUE(ReEncrypt("corpus", corpus[i].ciphertext, corpus[i].context, &r, "billing",
                          rebind ? &fresh : nullptr)
                    .ok());
    EXPECT_EQ(r.source_dek_version(), 1u);
    EXPECT_EQ(r.dek_version(), 3u);
    moved[i] = {corpus[i].plaintext, rebind ? fresh : corpus[i].context, r.ciphertext()};
  }
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::ReEncryptBatchRequest req;
    req.set_tenant_id("corpus");
    for (size_t i = corpus.size() / 2; i < corpus.size(); ++i) {
      v1::ReEncryptBatchItem* item = req.add_items();
      item->set_ciphertext(corpus[i].ciphertext);
      for (const auto& [k, v] : corpus[i].context) (*item->mutable_context())[k] = v;
    }
    v1::ReEncryptBatchItem* foreign = req.add_items();  // one bad item among them
    foreign->set_ciphertext("not a ciphertext");
    v1::ReEncryptBatchResponse resp;
    ASSERT_TRUE(Keys()->ReEncryptBatch(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.results_size(), req.items_size());
    for (size_t i = corpus.size() / 2; i < corpus.size(); ++i) {
      const auto& result = resp.results(static_cast<int>(i - corpus.size() / 2));
      ASSERT_TRUE(result.has_ok()) << result.error().message();
      EXPECT_EQ(result.ok().dek_version(), 3u);
      moved[i] = {corpus[i].plaintext, corpus[i].context, result.ok().ciphertext()};
    }
    const auto& bad = resp.results(resp.results_size() - 1);
    ASSERT_TRUE(bad.has_error());
    EXPECT_EQ(bad.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    EXPECT_EQ(bad.error().message(), "decryption failed");
  }
  for (const Item& item : moved) {
    v1::DecryptResponse dec;
    ASSERT_TRUE(Decrypt("corpus", item.ciphertext, item.context, &dec).ok());
    EXPECT_EQ(dec.plaintext(), item.plaintext);
    EXPECT_EQ(dec.dek_version(), 3u);
  }

  // Retire versions 1 and 2 with kmsctl.
  auto set = RunCommand(Kmsctl("tenant min-version corpus 3 -o json"));
  ASSERT_EQ(set.exit_code, 0) << set.out;
  EXPECT_EQ(Json::parse(set.out)["min_decrypt_version"], 3);

  // The old ciphertexts now fail with the retired-version status, everywhere.
  for (const Item& item : corpus) {
    v1::DecryptResponse dec;
    grpc::Status s = Decrypt("corpus", item.ciphertext, item.context, &dec);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(s.error_message().find("DEK version 1 is retired"), std::string::npos)
        << s.error_message();
    v1::ReEncryptResponse r;
    grpc::Status re = ReEncrypt("corpus", item.ciphertext, item.context, &r);
    EXPECT_EQ(re.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(re.error_message().find("DEK version 1 is retired"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::DecryptBatchRequest req;
    req.set_tenant_id("corpus");
    v1::DecryptBatchItem* old_item = req.add_items();
    old_item->set_ciphertext(corpus[1].ciphertext);
    v1::DecryptBatchItem* new_item = req.add_items();
    new_item->set_ciphertext(moved[3].ciphertext);
    for (const auto& [k, v] : moved[3].context) (*new_item->mutable_context())[k] = v;
    v1::DecryptBatchResponse resp;
    ASSERT_TRUE(Keys()->DecryptBatch(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.results_size(), 2);
    ASSERT_TRUE(resp.results(0).has_error());
    EXPECT_EQ(resp.results(0).error().code(),
              static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
    EXPECT_NE(resp.results(0).error().message().find("is retired"), std::string::npos);
    ASSERT_TRUE(resp.results(1).has_ok());
    EXPECT_EQ(resp.results(1).ok().plaintext(), moved[3].plaintext);
  }
  for (const Item& item : moved) {
    v1::DecryptResponse dec;
    ASSERT_TRUE(Decrypt("corpus", item.ciphertext, item.context, &dec).ok());
    EXPECT_EQ(dec.plaintext(), item.plaintext);
  }

  // kmsctl keys list shows the states, with RFC 3339 times.
  auto keys = RunCommand(Kmsctl("keys list --tenant corpus -o json"));
  ASSERT_EQ(keys.exit_code, 0) << keys.out;
  const Json j = Json::parse(keys.out);
  ASSERT_EQ(j["tenants"][0]["dek_versions"].size(), 3u);
  EXPECT_EQ(j["tenants"][0]["dek_versions"][0]["state"], "retired");
  EXPECT_EQ(j["tenants"][0]["dek_versions"][1]["state"], "retired");
  EXPECT_EQ(j["tenants"][0]["dek_versions"][2]["state"], "active");
  EXPECT_EQ(j["tenants"][0]["dek_versions"][2]["primary"], true);
  EXPECT_EQ(j["keks"].size(), 2u);
  const std::string created = j["keks"][0]["created_at"];
  EXPECT_EQ(created.size(), 20u) << created;  // 2024-05-01T12:00:00Z
  EXPECT_EQ(created.back(), 'Z');
  auto text = RunCommand(Kmsctl("keys list"));
  ASSERT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("tenant corpus:"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(" ago)"), std::string::npos) << text.out;
  ExpectStillServing();
}

TEST_F(RotationApiE2eTest, BadInputGetsAClearStatusChangesNothingAndTheDaemonKeepsServing) {
  CreateTenant("alive");
  CreateTenant("bad-a");
  CreateTenant("bad-b");
  ASSERT_TRUE(RotateDek("bad-a").ok());
  v1::EncryptResponse theirs;
  ASSERT_TRUE(Encrypt("bad-b", "b's secret", {}, &theirs).ok());

  grpc::Status s = SetMin("nobody", 1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = SetMin("bad-a", 3);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("above the primary DEK version 2"), std::string::npos)
      << s.error_message();
  ASSERT_TRUE(SetMin("bad-a", 2).ok());
  s = SetMin("bad-a", 1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  s = SetMin("Bad/Id", 1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  // Another tenant's ciphertext fails as Decrypt does ("alive" has DEK version 1 active,
  // like the ciphertext's header says); an unknown tenant is NOT_FOUND.
  v1::ReEncryptResponse r;
  s = ReEncrypt("alive", theirs.ciphertext(), {}, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "decryption failed");
  // Under bad-a, whose version 1 is retired, Decrypt and ReEncrypt agree as well: the
  // version in the ciphertext's (clear) header is retired there.
  v1::DecryptResponse refused;
  grpc::Status d = Decrypt("bad-a", theirs.ciphertext(), {}, &refused);
  s = ReEncrypt("bad-a", theirs.ciphertext(), {}, &r);
  EXPECT_EQ(s.error_code(), d.error_code());
  EXPECT_EQ(s.error_message(), d.error_message());
  s = ReEncrypt("nobody", theirs.ciphertext(), {}, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  // new_context without replace_context is a mistake, not silently ignored.
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::ReEncryptRequest req;
    req.set_tenant_id("bad-b");
    req.set_ciphertext(theirs.ciphertext());
    (*req.mutable_new_context())["k"] = "v";
    EXPECT_EQ(Keys()->ReEncrypt(&ctx, req, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::ListKeysResponse listed;
  EXPECT_EQ(ListKeys("nobody", &listed).error_code(), grpc::StatusCode::NOT_FOUND);

  // Nothing changed: b's ciphertext still decrypts and a's minimum is 2.
  v1::DecryptResponse dec;
  ASSERT_TRUE(Decrypt("bad-b", theirs.ciphertext(), {}, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "b's secret");
  ASSERT_TRUE(ListKeys("bad-a", &listed).ok());
  EXPECT_EQ(listed.tenants(0).dek_versions(0).state(), "retired");
  EXPECT_EQ(listed.tenants(0).dek_versions(1).state(), "active");
  ExpectStillServing();
}

TEST_F(RotationApiE2eTest, ReEncryptNeedsItsOwnGrantAndNoDecryptGrant) {
  CreateTenant("policy-a");
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("policy-a", "moved but never read", {}, &enc).ok());
  ASSERT_TRUE(RotateDek("policy-a").ok());
  // migrator holds only "reencrypt".
  v1::ReEncryptResponse r;
  grpc::Status s = ReEncrypt("policy-a", enc.ciphertext(), {}, &r, "migrator");
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.dek_version(), 2u);
  EXPECT_EQ(r.ciphertext().find("moved but never read"), std::string::npos);
  v1::DecryptResponse dec;
  EXPECT_EQ(Decrypt("policy-a", r.ciphertext(), {}, &dec, "migrator").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // iam has neither.
  EXPECT_EQ(ReEncrypt("policy-a", enc.ciphertext(), {}, &r, "iam").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(Decrypt("policy-a", r.ciphertext(), {}, &dec).ok());
  EXPECT_EQ(dec.plaintext(), "moved but never read");
}

TEST_F(RotationApiE2eTest, KmsctlReEncryptReadsStdinAndRebindsTheContext) {
  CreateTenant("cli-re");
  auto enc = RunCommand(Kmsctl("encrypt --tenant cli-re --data hello --context col=a"));
  ASSERT_EQ(enc.exit_code, 0) << enc.out;
  ASSERT_EQ(RunCommand(Kmsctl("tenant rotate cli-re")).exit_code, 0);
  auto re = RunCommand(Kmsctl("reencrypt --tenant cli-re --context col=a --new-context col=b -o json"),
                       enc.out);
  ASSERT_EQ(re.exit_code, 0) << re.out;
  const Json j = Json::parse(re.out);
  EXPECT_EQ(j["source_dek_version"], 1);
  EXPECT_EQ(j["dek_version"], 2);
  auto dec = RunCommand(Kmsctl("decrypt --tenant cli-re --context col=b --data " +
                               j["ciphertext"].get<std::string>()));
  ASSERT_EQ(dec.exit_code, 0) << dec.out;
  EXPECT_EQ(dec.out, "hello");
  // Failures: the server's (exit 1, the status named) and the input's (exit 2).
  auto wrong = RunCommand(Kmsctl("reencrypt --tenant cli-re --context col=z 2>&1"), enc.out);
  EXPECT_EQ(wrong.exit_code, 1) << wrong.out;
  EXPECT_NE(wrong.out.find("INVALID_ARGUMENT: decryption failed"), std::string::npos) << wrong.out;
  auto garbage = RunCommand(Kmsctl("reencrypt --tenant cli-re --data '%%%' 2>&1"));
  EXPECT_EQ(garbage.exit_code, 2) << garbage.out;
  auto bad_ctx = RunCommand(Kmsctl("reencrypt --tenant cli-re --new-context novalue 2>&1"), enc.out);
  EXPECT_EQ(bad_ctx.exit_code, 2) << bad_ctx.out;
  auto above = RunCommand(Kmsctl("tenant min-version cli-re 9 2>&1"));
  EXPECT_EQ(above.exit_code, 1) << above.out;
  EXPECT_NE(above.out.find("FAILED_PRECONDITION"), std::string::npos) << above.out;
  auto unknown = RunCommand(Kmsctl("keys list --tenant nobody 2>&1"));
  EXPECT_EQ(unknown.exit_code, 1) << unknown.out;
  EXPECT_NE(unknown.out.find("NOT_FOUND"), std::string::npos) << unknown.out;
}

// Last: rotates the JWT key and waits for the old one to retire.
TEST_F(RotationApiE2eTest, AShredReceiptVerifiesWithJoseBeforeAndAfterAJwtRotation) {
  CreateTenant("alive");
  CreateTenant("shred-me");
  ASSERT_TRUE(RotateDek("shred-me").ok());
  ASSERT_TRUE(RotateDek("shred-me").ok());
  v1::EncryptResponse enc;
  ASSERT_TRUE(Encrypt("shred-me", "soon unreadable", {}, &enc).ok());

  const std::string receipt_path = dir_->Join("receipt.jws");
  auto shred = RunCommand(Kmsctl(absl::StrCat("tenant shred shred-me --confirm shred-me --receipt-out ",
                                              receipt_path, " -o json")));
  ASSERT_EQ(shred.exit_code, 0) << shred.out;
  const Json out = Json::parse(shred.out);
  const std::string jws = out["receipt_jws"];
  EXPECT_EQ(test::ReadFileOrEmpty(receipt_path), jws + "\n");
  EXPECT_EQ(out["destroyed_dek_versions"], Json({1, 2, 3}));
  EXPECT_EQ(out["node_id"], kNode);
  EXPECT_EQ(out["receipt_file"], receipt_path);
  v1::DecryptResponse dec;
  EXPECT_EQ(Decrypt("shred-me", enc.ciphertext(), {}, &dec).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  // jose verifies it against the HTTPS receipt keys, typ and iss included.
  auto verified = RunCommand(absl::StrCat(
      "NODE_EXTRA_CA_CERTS=", state_, "/pki/ca.pem node ", KMS_JOSE_RECEIPT_VERIFIER, " ",
      HttpsUrl("/.well-known/kmsd-receipt-keys.json"), " ", kIssuer, " $(cat ", receipt_path, ")"));
  ASSERT_EQ(verified.exit_code, 0) << verified.out;
  const Json v = Json::parse(verified.out);
  EXPECT_EQ(v["typ"], "kmsd-shred-receipt+jwt");
  EXPECT_EQ(v["payload"]["tenant"], "shred-me");
  EXPECT_EQ(v["payload"]["destroyed_dek_versions"], Json({1, 2, 3}));
  EXPECT_EQ(v["payload"]["node"], kNode);
  EXPECT_EQ(v["payload"]["iss"], kIssuer);
  EXPECT_EQ(v["payload"]["shredded_at"], out["shredded_at_unix"]);
  const std::string receipt_kid = v["kid"];

  // Never an access token: kmsd's VerifyJwt refuses it, and the receipt verifier
  // refuses an access token.
  {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::VerifyJwtRequest req;
    req.set_jwt(jws);
    v1::VerifyJwtResponse resp;
    grpc::Status s = Keys("iam")->VerifyJwt(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(s.error_message().find("typ"), std::string::npos) << s.error_message();
    grpc::ClientContext sign_ctx;
    e2e::Deadline(sign_ctx);
    v1::SignJwtRequest sign;
    sign.set_claims_json(R"({"sub":"svc"})");
    v1::SignJwtResponse token;
    ASSERT_TRUE(Keys("iam")->SignJwt(&sign_ctx, sign, &token).ok());
    auto as_receipt = JoseReceipt(token.jwt());
    EXPECT_EQ(as_receipt.exit_code, 1) << as_receipt.out;
    EXPECT_NE(as_receipt.out.find("typ"), std::string::npos) << as_receipt.out;
  }
  // A tampered receipt fails.
  std::string forged = jws;
  const size_t dot = forged.find('.');
  forged[dot + 3] = forged[dot + 3] == 'A' ? 'B' : 'A';
  EXPECT_EQ(JoseReceipt(forged).exit_code, 1);

  // --receipt-out never overwrites, and nothing is shredded when it would have to.
  CreateTenant("shred-two");
  auto refused = RunCommand(Kmsctl(absl::StrCat("tenant shred shred-two --confirm shred-two --receipt-out ",
                                                receipt_path, " 2>&1")));
  EXPECT_EQ(refused.exit_code, 2) << refused.out;
  EXPECT_NE(refused.out.find("refusing to overwrite"), std::string::npos) << refused.out;
  EXPECT_EQ(test::ReadFileOrEmpty(receipt_path), jws + "\n");
  EXPECT_TRUE(Encrypt("shred-two", "still alive", {}, &enc).ok());
  // The default file is shred-receipt-<tenant>.jws in the current directory.
  const std::string cwd = dir_->MakeDir("cwd");
  auto by_default = RunCommand(absl::StrCat(
      "cd ", cwd, " && ", Kmsctl("tenant shred shred-two --confirm shred-two")));
  ASSERT_EQ(by_default.exit_code, 0) << by_default.out;
  EXPECT_NE(by_default.out.find("shred-receipt-shred-two.jws"), std::string::npos) << by_default.out;
  const std::string second = test::ReadFileOrEmpty(cwd + "/shred-receipt-shred-two.jws");
  ASSERT_FALSE(second.empty());
  auto again = RunCommand(absl::StrCat(
      "cd ", cwd, " && ", Kmsctl("tenant shred shred-two --confirm shred-two 2>&1")));
  EXPECT_EQ(again.exit_code, 2) << again.out;
  EXPECT_EQ(test::ReadFileOrEmpty(cwd + "/shred-receipt-shred-two.jws"), second);

  // A JWT rotation: the signing key leaves the access-token JWKS once retired, and the
  // receipt still verifies against the receipt keys. (An earlier test's rotation may
  // still be in progress: FAILED_PRECONDITION until its key signs.)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::RotateJwtKeyResponse rotated;
    grpc::Status s = Admin()->RotateJwtKey(&ctx, {}, &rotated);
    if (s.ok()) break;
    ASSERT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << s.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  while (Kids(FetchJson("/.well-known/jwks.json")).count(receipt_kid) > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  ASSERT_EQ(Kids(FetchJson("/.well-known/jwks.json")).count(receipt_kid), 0u)
      << "the receipt's key never left the access-token JWKS";
  EXPECT_EQ(Kids(FetchJson("/.well-known/kmsd-receipt-keys.json")).count(receipt_kid), 1u);
  auto after = JoseReceipt(jws);
  ASSERT_EQ(after.exit_code, 0) << after.out;
  EXPECT_EQ(Json::parse(after.out)["kid"], receipt_kid);
  ExpectStillServing();
}

}  // namespace
}  // namespace kms
