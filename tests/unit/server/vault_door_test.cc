// The Vault door on fakes (FakeKekRing, SQLite in memory, a simulated clock): what the
// e2e clients cannot easily show — token expiry on the clock, the door before it is
// attached, exactly how Vault's context is bound (the pairs a gRPC caller gives), the
// wire shape of refusals, and that a refused request changes nothing.
#include "src/server/vault/vault_door.h"

#include "src/keys/key_ref.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "src/authz/policy.h"
#include "src/common/base64.h"
#include "src/metrics/registry.h"
#include "src/store/sqlite/sqlite_key_store.h"
#include "tests/fakes/fake_kek_ring.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::server::vault {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPolicy[] = R"({"version":1,"identities":[
  {"identity":"spiffe://t/admin","operations":["*"],"tenants":["*"]},
  {"identity":"spiffe://t/app","operations":["encrypt","decrypt"],"tenants":["app-*"]}]})";

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class VaultDoorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::SqliteKeyStore::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_TRUE(ring_.CreateKek(1).ok());
    auto keys = keys::KeyManager::Create(&ring_, store_.get(), &clock_, {});
    ASSERT_TRUE(keys.ok()) << keys.status();
    keys_ = std::move(*keys);
    jwt::JwtServiceOptions jwt_options;
    auto jwt = jwt::JwtService::Create(&ring_, store_.get(), store_.get(), &clock_, jwt_options);
    ASSERT_TRUE(jwt.ok()) << jwt.status();
    jwt_ = std::move(*jwt);
    ASSERT_TRUE(jwt_->Load().ok());
    auto authz = authz::PolicyAuthorizer::FromJson(kPolicy);
    ASSERT_TRUE(authz.ok()) << authz.status();
    authz_ = std::move(*authz);
    gate_ = std::make_unique<CallGate>(*authz_, nullptr);
    config_.vault.max_batch_items = 3;
    door_ = std::make_unique<VaultDoor>(config_, VaultDoorInfo{.node_id = "n1", .version = "0.1.0"}, clock_);
  }
  void Attach() {
    door_->Attach(*keys_, *jwt_, *gate_, [this] { return serving_; });
  }

  static http::ClientCertificate Cert(const std::string& spiffe, char fingerprint) {
    return http::ClientCertificate{.uri_sans = {spiffe}, .sha256 = std::string(32, fingerprint)};
  }
  http::Response Call(const std::string& method, const std::string& path, const Json& body = nullptr,
                      std::optional<http::ClientCertificate> cert = Cert("spiffe://t/admin", 'a'),
                      const std::string& token = "") {
    http::Request r;
    r.method = method;
    size_t q = path.find('?');
    r.path = path.substr(0, q);
    if (q != std::string::npos) r.query = path.substr(q + 1);
    if (!body.is_null()) r.body = body.dump();
    r.client_certificate = std::move(cert);
    if (!token.empty()) r.headers.emplace_back("X-Vault-Token", token);
    return door_->Serve(r);
  }
  std::string Login(const http::ClientCertificate& cert = Cert("spiffe://t/admin", 'a')) {
    http::Response r = Call("POST", "/v1/auth/cert/login", nullptr, cert);
    EXPECT_EQ(r.status, 200) << r.body;
    return Json::parse(r.body)["auth"]["client_token"].get<std::string>();
  }
  static Json Body(const http::Response& r) { return Json::parse(r.body); }

  testing::SimulatedClock clock_;
  kms::testing::FakeKekRing ring_;
  std::unique_ptr<store::SqliteKeyStore> store_;
  std::unique_ptr<keys::KeyManager> keys_;
  std::unique_ptr<jwt::JwtService> jwt_;
  std::unique_ptr<authz::PolicyAuthorizer> authz_;
  std::unique_ptr<CallGate> gate_;
  config::Config config_;
  std::unique_ptr<VaultDoor> door_;
  bool serving_ = true;
};

TEST_F(VaultDoorTest, BeforeAttachEverythingIsSealed) {
  http::Response r = Call("GET", "/v1/sys/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Body(r), Json({{"errors", {"Vault is sealed"}}}));
  EXPECT_EQ(Call("POST", "/v1/auth/cert/login").status, 503);
  Attach();
  EXPECT_EQ(Call("GET", "/v1/sys/health").status, 200);
  serving_ = false;
  r = Call("GET", "/v1/sys/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(Body(r)["sealed"], true);
  EXPECT_EQ(Call("GET", "/v1/sys/health?sealedcode=200").status, 200);
  EXPECT_EQ(Body(Call("GET", "/v1/sys/seal-status"))["sealed"], true);
}

// Every request is counted by its operation and the HTTP status answered, and timed;
// labels come from the operation names, never from the path (a key name stays out).
TEST_F(VaultDoorTest, RequestsAreCountedByOperationAndStatus) {
  metrics::MetricRegistry registry;
  door_->set_metrics(&registry);
  Attach();
  EXPECT_EQ(Call("GET", "/v1/sys/health").status, 200);
  const std::string token = Login();
  const http::ClientCertificate admin = Cert("spiffe://t/admin", 'a');
  EXPECT_EQ(Call("POST", "/v1/transit/keys/app-secret-name", Json::object(), admin, token).status, 200);
  const Json plaintext = {{"plaintext", Base64Encode(Bytes("hi"))}};
  EXPECT_EQ(Call("POST", "/v1/transit/encrypt/app-secret-name", plaintext, admin, token).status, 200);
  EXPECT_EQ(Call("POST", "/v1/transit/encrypt/app-secret-name", plaintext, admin, token).status, 200);
  EXPECT_EQ(Call("POST", "/v1/transit/decrypt/app-secret-name", Json{{"ciphertext", "vault:v1:AAAA"}},
                 admin, token).status, 400);
  EXPECT_EQ(Call("GET", "/v1/elsewhere", nullptr, admin, token).status, 404);

  const std::string text = registry.WriteText();
  EXPECT_THAT(text, HasSubstr("kmsd_vault_requests_total{code=\"200\",operation=\"VaultHealth\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_vault_requests_total{code=\"200\",operation=\"VaultLogin\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_vault_requests_total{code=\"200\",operation=\"VaultCreateKey\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_vault_requests_total{code=\"200\",operation=\"VaultEncrypt\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_vault_requests_total{code=\"400\",operation=\"VaultDecrypt\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_vault_requests_total{code=\"404\",operation=\"VaultOther\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kmsd_vault_request_duration_seconds_count{operation=\"VaultEncrypt\"} 2\n"));
  EXPECT_THAT(text, Not(HasSubstr("app-secret-name")));
}

TEST_F(VaultDoorTest, TokensExpireOnTheClockAndNeedTheirCertificate) {
  Attach();
  const std::string token = Login();
  EXPECT_EQ(Call("POST", "/v1/transit/keys/app-1", Json::object(), Cert("spiffe://t/admin", 'a'), token).status, 200);
  // The same identity with another certificate (another fingerprint) is refused.
  http::Response other = Call("GET", "/v1/transit/keys/app-1", nullptr, Cert("spiffe://t/admin", 'b'), token);
  EXPECT_EQ(other.status, 403);
  EXPECT_EQ(Body(other), Json({{"errors", {"permission denied"}}}));
  EXPECT_EQ(Call("GET", "/v1/transit/keys/app-1", nullptr, std::nullopt, token).status, 403);
  EXPECT_EQ(Call("GET", "/v1/auth/token/lookup-self", nullptr, Cert("spiffe://t/admin", 'a'), token).status, 200);
  clock_.Advance(std::chrono::seconds(config_.vault.TokenTtl(config_.jwt) + 61));  // past exp and leeway
  EXPECT_EQ(Call("GET", "/v1/transit/keys/app-1", nullptr, Cert("spiffe://t/admin", 'a'), token).status, 403);
  // A certificate without an identity cannot log in.
  EXPECT_EQ(Call("POST", "/v1/auth/cert/login", nullptr, Cert("https://not-spiffe", 'c')).status, 403);
}

TEST_F(VaultDoorTest, ContextAndAssociatedDataAreBoundAsTheirBase64Text) {
  Attach();
  const std::string token = Login();
  ASSERT_TRUE(keys_->CreateTenant(keys::TenantId::Parse("app-1").value()).ok());
  const std::string ctx = Base64Encode(Bytes("row-7")), ad = Base64Encode(Bytes("table"));
  http::Response r = Call("POST", "/v1/transit/encrypt/app-1",
                          {{"plaintext", Base64Encode(Bytes("secret"))}, {"context", ctx}, {"associated_data", ad}},
                          Cert("spiffe://t/admin", 'a'), token);
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string ct = Body(r)["data"]["ciphertext"];
  ASSERT_EQ(ct.rfind("vault:v1:", 0), 0u);
  auto bytes = Base64Decode(ct.substr(9));
  ASSERT_TRUE(bytes.ok());
  // What a gRPC caller gives to Decrypt the same bytes.
  keys::EncryptionContext pairs;
  ASSERT_TRUE(pairs.Add("vault.context", ctx).ok());
  ASSERT_TRUE(pairs.Add("vault.associated_data", ad).ok());
  auto opened = keys_->Decrypt(keys::TenantId::Parse("app-1").value(), pairs, *bytes);
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->plaintext, "secret");
  keys::EncryptionContext only_context;
  ASSERT_TRUE(only_context.Add("vault.context", ctx).ok());
  EXPECT_FALSE(keys_->Decrypt(keys::TenantId::Parse("app-1").value(), only_context, *bytes).ok());
}

TEST_F(VaultDoorTest, RefusalsAreVaultShapedAndChangeNothing) {
  Attach();
  const std::string admin = Login();
  auto call = [&](const std::string& method, const std::string& path, const Json& body = nullptr) {
    return Call(method, path, body, Cert("spiffe://t/admin", 'a'), admin);
  };
  for (const Json& options : {Json{{"type", "rsa-4096"}}, Json{{"convergent_encryption", true}},
                              Json{{"exportable", true}}, Json{{"auto_rotate_period", "24h"}},
                              Json{{"auto_rotate_period", 3600}}, Json{{"allow_plaintext_backup", true}}}) {
    http::Response r = call("POST", "/v1/transit/keys/app-x", options);
    EXPECT_TRUE(r.status == 400) << options << r.body;
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_TRUE(Body(r)["errors"].is_array() && Body(r)["errors"].size() == 1) << r.body;
  }
  EXPECT_EQ(call("GET", "/v1/transit/keys/app-x").status, 404);
  EXPECT_EQ(Body(call("GET", "/v1/transit/keys/app-x")), Json({{"errors", Json::array()}}));
  EXPECT_EQ(call("LIST", "/v1/transit/keys").status, 404);  // no keys yet, as Vault answers

  ASSERT_EQ(call("POST", "/v1/transit/keys/app-1").status, 200);
  Json items = Json::array();
  for (int i = 0; i < 4; ++i) items.push_back({{"plaintext", Base64Encode(Bytes("x"))}});
  http::Response over = call("POST", "/v1/transit/encrypt/app-1", {{"batch_input", items}});
  EXPECT_EQ(over.status, 400);
  EXPECT_NE(Body(over)["errors"][0].get<std::string>().find("more than 3"), std::string::npos);
  EXPECT_EQ(keys_->cache().stats().hits + keys_->cache().stats().misses, 0u) << "a key was reached";

  EXPECT_EQ(call("POST", "/v1/transit/encrypt/app-1", {{"plaintext", "!!"}}).status, 400);
  EXPECT_EQ(call("POST", "/v1/transit/encrypt/app-1", "[1]").status, 400);
  EXPECT_EQ(call("GET", "/v1/transit/encrypt/app-1").status, 405);
  EXPECT_EQ(call("POST", "/v1/transit/nope").status, 404);
  EXPECT_EQ(call("POST", "/v1/transit/sign/app-1").status, 400);
  EXPECT_EQ(call("POST", "/v1/transit/datakey/both/app-1").status, 400);
  EXPECT_EQ(call("POST", "/v1/transit/datakey/plaintext/app-1", {{"bits", 128}}).status, 400);
  EXPECT_EQ(call("POST", "/v1/transit/keys/bad%20name").status, 400);
  EXPECT_EQ(keys_->cache().stats().hits + keys_->cache().stats().misses, 0u) << "a key was reached";

  // An unknown parameter is not an error, but it is reported.
  http::Response warned = call("POST", "/v1/transit/encrypt/app-1",
                               {{"plaintext", Base64Encode(Bytes("x"))}, {"colour", "blue"}});
  ASSERT_EQ(warned.status, 200) << warned.body;
  EXPECT_EQ(Body(warned)["warnings"][0], "Endpoint ignored these unrecognized parameters: [colour]");

  // Not granted: 403, and the policy's operation per endpoint (app may not rotate).
  const std::string app = Login(Cert("spiffe://t/app", 'p'));
  http::Response rotate = Call("POST", "/v1/transit/keys/app-1/rotate", nullptr, Cert("spiffe://t/app", 'p'), app);
  EXPECT_EQ(rotate.status, 403);
  EXPECT_EQ(keys_->GetTenant(keys::TenantId::Parse("app-1").value())->tenant.primary_dek_version, 1u);

  // LIST names transit keys (tenants) only: a named key's row is not one.
  auto named = keys::KeyRef::ForNamedKey("backup");
  ASSERT_TRUE(named.ok());
  ASSERT_TRUE(keys_->CreateTenant(named->storage_id()).ok());
  http::Response listed = call("LIST", "/v1/transit/keys");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(Body(listed)["data"]["keys"], Json::array({"app-1"})) << listed.body;
}

TEST_F(VaultDoorTest, BatchItemsFailAloneAndPartialFailureCodeApplies) {
  Attach();
  const std::string token = Login();
  ASSERT_TRUE(keys_->CreateTenant(keys::TenantId::Parse("app-1").value()).ok());
  Json items = {{{"plaintext", Base64Encode(Bytes("a"))}, {"reference", "one"}},
                {{"plaintext", "%%%"}, {"reference", "two"}}};
  http::Response r = Call("POST", "/v1/transit/encrypt/app-1", {{"batch_input", items}},
                          Cert("spiffe://t/admin", 'a'), token);
  EXPECT_EQ(r.status, 400);
  Json results = Body(r)["data"]["batch_results"];
  ASSERT_EQ(results.size(), 2u) << r.body;
  EXPECT_EQ(results[0]["reference"], "one");
  EXPECT_TRUE(results[0].contains("ciphertext"));
  EXPECT_EQ(results[1]["reference"], "two");
  EXPECT_NE(results[1]["error"].get<std::string>().find("base64"), std::string::npos);
  r = Call("POST", "/v1/transit/encrypt/app-1", {{"batch_input", items}, {"partial_failure_response_code", 207}},
           Cert("spiffe://t/admin", 'a'), token);
  EXPECT_EQ(r.status, 207);
}

}  // namespace
}  // namespace kms::server::vault
