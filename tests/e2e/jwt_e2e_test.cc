// End to end for the JWT signing service: kmsd signs over mTLS, the JWKS is served over
// HTTPS, a JWT library outside the project (Node's jose) verifies, and a rotation never
// leaves a valid token without its key in the JWKS.
#include <map>
#include <set>
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

using test::RunCommand;

constexpr int kMaxTtl = 4;
constexpr int kClockSkew = 1;
constexpr int kJwksCache = 2;

class JwtE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-jwt-e2e-");
    state_ = dir_->Join("state");
    // The dev run creates the token, certificates and policy; then a config-file run
    // with short JWT windows serves from the same files (HTTPS on, for the JWKS).
    {
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
          dir_->Join("dev.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    nlohmann::json config = e2e::DevStateConfig(state_, dir_->Join("jwt.db"));
    config["http"]["listen"] = "127.0.0.1:0";
    config["jwt"] = {{"issuer", "https://kmsd.test"},
                     {"max_ttl_seconds", kMaxTtl},
                     {"clock_skew_seconds", kClockSkew},
                     {"jwks_cache_seconds", kJwksCache},
                     {"rotation_period_seconds", 3600}};
    const std::string path = dir_->Write("kmsd.json", config.dump(2), 0644);
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", path}, dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
  }
  static void TearDownTestSuite() {
    delete kmsd_;
    delete dir_;
  }

  static std::unique_ptr<v1::KeyService::Stub> Keys(const std::string& client = "iam") {
    return v1::KeyService::NewStub(e2e::DevChannel(state_, kmsd_->grpc_addr(), client));
  }

  static grpc::Status Sign(const std::string& claims, uint32_t ttl, v1::SignJwtResponse* out,
                           const std::string& client = "iam") {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::SignJwtRequest req;
    req.set_claims_json(claims);
    req.set_ttl_seconds(ttl);
    return Keys(client)->SignJwt(&ctx, req, out);
  }

  static std::string JwksUrl() {
    return absl::StrCat("https://localhost:", kmsd_->http_port(), "/.well-known/jwks.json");
  }

  // The kids the HTTPS endpoint publishes now.
  static std::set<std::string> PublishedKids() {
    auto got = RunCommand(absl::StrCat("curl -sS --fail --tlsv1.3 --cacert ", state_, "/pki/ca.pem ", JwksUrl(), " 2>&1"));
    std::set<std::string> kids;
    EXPECT_EQ(got.exit_code, 0) << got.out;
    if (got.exit_code != 0) return kids;
    const nlohmann::json jwks = nlohmann::json::parse(got.out);
    for (const auto& key : jwks["keys"]) kids.insert(key["kid"].get<std::string>());
    return kids;
  }

  static test::CommandResult Jose(const std::string& token) {
    return RunCommand(absl::StrCat("NODE_EXTRA_CA_CERTS=", state_, "/pki/ca.pem node ", KMS_JOSE_VERIFIER,
                                   " ", JwksUrl(), " https://kmsd.test '", token, "'"));
  }

  static test::TempDir* dir_;
  static std::string state_;
  static test::KmsdProcess* kmsd_;
};

test::TempDir* JwtE2eTest::dir_ = nullptr;
std::string JwtE2eTest::state_;
test::KmsdProcess* JwtE2eTest::kmsd_ = nullptr;

TEST_F(JwtE2eTest, JoseVerifiesKmsdTokensAgainstTheHttpsJwksAndRejectsATamperedOne) {
  v1::SignJwtResponse signed_jwt;
  ASSERT_TRUE(Sign(R"({"sub":"alice","scope":"billing:read"})", 0, &signed_jwt).ok());
  auto ok = Jose(signed_jwt.jwt());
  ASSERT_EQ(ok.exit_code, 0) << ok.out;
  auto verified = nlohmann::json::parse(ok.out);
  EXPECT_EQ(verified["kid"], signed_jwt.kid());
  EXPECT_EQ(verified["payload"]["sub"], "alice");
  EXPECT_EQ(verified["payload"]["iss"], "https://kmsd.test");
  EXPECT_EQ(verified["payload"]["exp"].get<int64_t>() - verified["payload"]["iat"].get<int64_t>(), kMaxTtl);

  // Change the payload to claim another subject, keeping the signature.
  std::string token = signed_jwt.jwt();
  size_t dot1 = token.find('.'), dot2 = token.rfind('.');
  std::string forged_payload = "eyJzdWIiOiJtYWxsb3J5In0";  // {"sub":"mallory"}
  std::string forged = token.substr(0, dot1 + 1) + forged_payload + token.substr(dot2);
  auto rejected = Jose(forged);
  EXPECT_EQ(rejected.exit_code, 1) << rejected.out;
  EXPECT_NE(rejected.out.find("rejected"), std::string::npos);
  // A flipped signature byte is rejected too.
  std::string bad_sig = token;
  bad_sig[dot2 + 5] = bad_sig[dot2 + 5] == 'A' ? 'B' : 'A';
  EXPECT_EQ(Jose(bad_sig).exit_code, 1);
}

TEST_F(JwtE2eTest, JwksIsServedWithACacheLifetimeAndHstsOverTls13Only) {
  auto got = RunCommand(absl::StrCat("curl -sS -i --tlsv1.3 --cacert ", state_, "/pki/ca.pem ", JwksUrl()));
  ASSERT_EQ(got.exit_code, 0) << got.out;
  EXPECT_NE(got.out.find(absl::StrCat("Cache-Control: public, max-age=", kJwksCache)), std::string::npos)
      << got.out;
  EXPECT_NE(got.out.find("Strict-Transport-Security: max-age=63072000"), std::string::npos);
  auto tls12 = RunCommand(absl::StrCat("curl -sS --tlsv1.2 --tls-max 1.2 --cacert ", state_, "/pki/ca.pem ",
                                       JwksUrl(), " 2>&1"));
  EXPECT_NE(tls12.exit_code, 0) << tls12.out;
}

TEST_F(JwtE2eTest, BadClaimsAndTtlsAreInvalidArgument) {
  v1::SignJwtResponse out;
  for (const char* claims : {"[1,2]", "\"just a string\"", "{not json", "", R"({"exp": 1})",
                             R"({"iat": 1})", R"({"iss": "https://someone.else"})"}) {
    EXPECT_EQ(Sign(claims, 0, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << claims;
  }
  EXPECT_EQ(Sign("{}", kMaxTtl + 1, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Sign(absl::StrCat(R"({"pad":")", std::string(9000, 'x'), "\"}"), 0, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Sign("{}", kMaxTtl, &out).ok());
  // billing may encrypt but not sign.
  EXPECT_EQ(Sign("{}", 0, &out, "billing").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(JwtE2eTest, VerifyJwtRpcAcceptsOwnTokensAndRejectsForgeries) {
  v1::SignJwtResponse signed_jwt;
  ASSERT_TRUE(Sign(R"({"sub":"bob"})", 0, &signed_jwt).ok());
  grpc::ClientContext ctx;
  e2e::Deadline(ctx);
  v1::VerifyJwtRequest req;
  req.set_jwt(signed_jwt.jwt());
  v1::VerifyJwtResponse resp;
  ASSERT_TRUE(Keys()->VerifyJwt(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.kid(), signed_jwt.kid());
  EXPECT_EQ(nlohmann::json::parse(resp.claims_json())["sub"], "bob");
  grpc::ClientContext bad_ctx;
  e2e::Deadline(bad_ctx);
  req.set_jwt(signed_jwt.jwt() + "x");
  EXPECT_EQ(Keys()->VerifyJwt(&bad_ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// Tokens are signed every 200 ms while a rotation happens; at every step every
// unexpired token's kid must be in the JWKS the HTTPS endpoint serves, and the new kid
// must be published a JWKS cache lifetime before its first signature.
TEST_F(JwtE2eTest, RotationNeverLeavesAValidTokenWithoutItsKey) {
  using Clock = std::chrono::steady_clock;
  struct Issued {
    std::string kid;
    int64_t exp;
  };
  std::vector<Issued> issued;
  std::map<std::string, Clock::time_point> first_published, first_signed;
  const auto start = Clock::now();
  bool rotated = false;
  std::string old_kid;
  while (Clock::now() - start < std::chrono::seconds(16)) {
    const auto now = Clock::now();
    if (!rotated && now - start > std::chrono::seconds(1)) {
      auto r = RunCommand(e2e::KmsctlCommand(state_, "--addr " + kmsd_->grpc_addr() + " jwt rotate -o json 2>&1"));
      ASSERT_EQ(r.exit_code, 0) << r.out;
      old_kid = nlohmann::json::parse(r.out)["old_kid"];
      rotated = true;
    }
    v1::SignJwtResponse s;
    ASSERT_TRUE(Sign(R"({"sub":"svc"})", kMaxTtl, &s).ok());
    issued.push_back({s.kid(), s.expires_at_unix()});
    first_signed.emplace(s.kid(), now);

    std::set<std::string> kids = PublishedKids();
    ASSERT_FALSE(kids.empty()) << RunCommand(absl::StrCat("curl -sS -i --tlsv1.3 --cacert ", state_, "/pki/ca.pem ", JwksUrl(), " 2>&1")).out;
    for (const std::string& kid : kids) first_published.emplace(kid, now);
    const int64_t unix_now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count();
    for (const Issued& t : issued) {
      if (t.exp + kClockSkew >= unix_now) {
        EXPECT_TRUE(kids.count(t.kid)) << "a valid token's kid " << t.kid << " is missing from the JWKS";
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(rotated);
  ASSERT_EQ(first_signed.size(), 2u) << "the new key never signed within the test window";
  for (const auto& [kid, signed_at] : first_signed) {
    if (kid == old_kid) continue;
    ASSERT_TRUE(first_published.count(kid));
    EXPECT_GE(signed_at - first_published[kid], std::chrono::milliseconds(kJwksCache * 1000 - 300))
        << "the new kid was not published a JWKS cache lifetime before it signed";
  }
  // Its tokens have all expired: the old key has left the JWKS.
  EXPECT_EQ(PublishedKids().count(old_kid), 0u);
}

}  // namespace
}  // namespace kms
