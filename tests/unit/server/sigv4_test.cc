// SigV4 verification (src/server/xks/sigv4.h) against the AWS SigV4 test suite
// (sigv4_testsuite/README.md): for every test, the canonical request and the string to
// sign are byte for byte the suite's, and its Authorization header verifies; then the
// checks the XKS door relies on (skew window, region, service, unknown key, tampering,
// two credentials at once).
#include "src/server/xks/sigv4.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace kms::server::xks {
namespace {

constexpr char kSecret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr int64_t kSuiteTime = 1440938160;  // 20150830T123600Z

SecretBytes Secret(const std::string& s) {
  SecretBytes out(s.size());
  std::copy(s.begin(), s.end(), out.mutable_span().begin());
  return out;
}

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A parsed .req file.
struct SuiteRequest {
  std::string method, path, query, body;
  std::vector<std::pair<std::string, std::string>> headers;
  SignedRequest View() const {
    return SignedRequest{.method = method, .path = path, .query = query, .headers = headers, .body = body};
  }
};

SuiteRequest ParseReq(const std::string& text) {
  SuiteRequest r;
  size_t blank = text.find("\n\n");
  std::string head = text.substr(0, blank);
  if (blank != std::string::npos) r.body = text.substr(blank + 2);
  std::vector<std::string> lines = absl::StrSplit(head, '\n');
  // "METHOD TARGET HTTP/1.1": the target may hold spaces (get-space), so split at the ends.
  const std::string& first = lines[0];
  size_t sp1 = first.find(' ');
  size_t sp2 = first.rfind(' ');
  r.method = first.substr(0, sp1);
  std::string target = first.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    r.headers.emplace_back(lines[i].substr(0, colon), lines[i].substr(colon + 1));
  }
  return r;
}

std::vector<std::string> SuiteTests() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(KMS_SIGV4_TESTSUITE_DIR)) {
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class SigV4SuiteTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SigV4SuiteTest, CanonicalRequestStringToSignAndSignatureMatchTheSuite) {
  const std::filesystem::path dir = std::filesystem::path(KMS_SIGV4_TESTSUITE_DIR) / GetParam();
  const std::string name = GetParam();
  SuiteRequest req = ParseReq(ReadFile(dir / (name + ".req")));
  const std::string authz = ReadFile(dir / (name + ".authz"));
  auto parsed = ParseAuthorization(authz);
  ASSERT_TRUE(parsed.ok()) << parsed.status();

  auto creq = CanonicalRequest(req.View(), parsed->signed_headers);
  ASSERT_TRUE(creq.ok()) << creq.status();
  EXPECT_EQ(*creq, ReadFile(dir / (name + ".creq")));
  const std::string scope = parsed->date + "/us-east-1/service/aws4_request";
  const std::string sts = StringToSign("20150830T123600Z", scope, *creq);
  EXPECT_EQ(sts, ReadFile(dir / (name + ".sts")));
  EXPECT_EQ(Signature(Secret(kSecret), "20150830", "us-east-1", "service", sts), parsed->signature);

  std::vector<SigV4Credential> creds;
  creds.push_back({"AKIDEXAMPLE", Secret(kSecret)});
  auto verifier = SigV4Verifier::Create({.region = "us-east-1", .service = "service"}, std::move(creds));
  ASSERT_TRUE(verifier.ok());
  req.headers.emplace_back("Authorization", authz);
  auto verified = verifier->Verify(req.View(), kSuiteTime);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(*verified, "AKIDEXAMPLE");
}

INSTANTIATE_TEST_SUITE_P(Aws4TestSuite, SigV4SuiteTest, ::testing::ValuesIn(SuiteTests()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// post-vanilla, the suite's plain POST, as the XKS checks see it.
class SigV4VerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::filesystem::path dir = std::filesystem::path(KMS_SIGV4_TESTSUITE_DIR) / "post-vanilla";
    req_ = ParseReq(ReadFile(dir / "post-vanilla.req"));
    req_.headers.emplace_back("Authorization", ReadFile(dir / "post-vanilla.authz"));
  }
  absl::StatusOr<SigV4Verifier> Make(const std::string& region, const std::string& service,
                                     std::vector<std::pair<std::string, std::string>> keys) {
    std::vector<SigV4Credential> creds;
    for (auto& [id, secret] : keys) creds.push_back({id, Secret(secret)});
    return SigV4Verifier::Create({.region = region, .service = service, .max_skew_seconds = 300},
                                 std::move(creds));
  }
  SuiteRequest req_;
};

TEST_F(SigV4VerifierTest, RequestTimeMustBeWithinFiveMinutesEitherWay) {
  auto v = Make("us-east-1", "service", {{"AKIDEXAMPLE", kSecret}});
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->Verify(req_.View(), kSuiteTime + 300).ok());
  EXPECT_TRUE(v->Verify(req_.View(), kSuiteTime - 300).ok());
  auto stale = v->Verify(req_.View(), kSuiteTime + 301);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(v->Verify(req_.View(), kSuiteTime - 301).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(SigV4VerifierTest, OtherRegionServiceOrUnknownKeyFail) {
  for (auto [region, service, id] : {std::tuple{"eu-west-1", "service", "AKIDEXAMPLE"},
                                     std::tuple{"us-east-1", "kms-xks-proxy", "AKIDEXAMPLE"},
                                     std::tuple{"us-east-1", "service", "OTHERKEY"}}) {
    auto v = Make(region, service, {{id, kSecret}});
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->Verify(req_.View(), kSuiteTime).status().code(), absl::StatusCode::kUnauthenticated)
        << region << " " << service << " " << id;
  }
  auto wrong_secret = Make("us-east-1", "service", {{"AKIDEXAMPLE", "another secret"}});
  EXPECT_FALSE(wrong_secret->Verify(req_.View(), kSuiteTime).ok());
}

TEST_F(SigV4VerifierTest, TamperedBodyPathOrDateFail) {
  auto v = Make("us-east-1", "service", {{"AKIDEXAMPLE", kSecret}});
  SuiteRequest body = req_;
  body.body = "x";
  EXPECT_FALSE(v->Verify(body.View(), kSuiteTime).ok());
  SuiteRequest path = req_;
  path.path = "/other";
  EXPECT_FALSE(v->Verify(path.View(), kSuiteTime).ok());
  SuiteRequest date = req_;
  for (auto& [k, value] : date.headers) {
    if (k == "X-Amz-Date") value = "20150830T123601Z";
  }
  EXPECT_FALSE(v->Verify(date.View(), kSuiteTime).ok());
  SuiteRequest none = req_;
  none.headers.pop_back();  // the Authorization header
  EXPECT_FALSE(v->Verify(none.View(), kSuiteTime).ok());
}

TEST_F(SigV4VerifierTest, TwoCredentialsAreAcceptedAtOnce) {
  auto v = Make("us-east-1", "service", {{"NEWKEY", "new secret"}, {"AKIDEXAMPLE", kSecret}});
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->Verify(req_.View(), kSuiteTime).value(), "AKIDEXAMPLE");
  EXPECT_FALSE(Make("us-east-1", "service", {{"A", "x"}, {"A", "y"}}).ok());
  EXPECT_FALSE(Make("us-east-1", "service", {}).ok());
}

TEST(SigV4ParseTest, MalformedAuthorizationHeadersAreRefused) {
  for (const char* bad : {"", "AWS4-HMAC-SHA1 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host, Signature=00",
                          "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host",
                          "AWS4-HMAC-SHA256 Credential=A/20150830/r/aws4_request, SignedHeaders=host, "
                          "Signature=0000000000000000000000000000000000000000000000000000000000000000",
                          "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=Host, "
                          "Signature=0000000000000000000000000000000000000000000000000000000000000000"}) {
    EXPECT_FALSE(ParseAuthorization(bad).ok()) << bad;
  }
  EXPECT_EQ(ParseAmzDate("20150830T123600Z").value(), kSuiteTime);
  EXPECT_FALSE(ParseAmzDate("2015-08-30T12:36:00Z").ok());
  EXPECT_FALSE(ParseAmzDate("20151330T123600Z").ok());
}

}  // namespace
}  // namespace kms::server::xks
