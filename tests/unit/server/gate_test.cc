// The gate every door passes: the identity rule, CallGate (policy, then rate limit),
// the request limits and the text callers may read of an error. No transport here.
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/authz/policy.h"
#include "src/coord/rate_limiters.h"
#include "src/server/gate/call_gate.h"
#include "src/server/gate/identity.h"
#include "src/server/gate/public_status.h"
#include "src/server/gate/request_limits.h"
#include "tests/test_common/simulated_clock.h"

namespace kms::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// --- Identity

TEST(IdentityTest, ASpiffeIdWinsOverEveryOtherName) {
  EXPECT_EQ(IdentityOf({.spiffe_id = "spiffe://kmsd.dev/billing",
                        .uri_sans = {"spiffe://kmsd.dev/billing"},
                        .dns_sans = {"billing.internal"},
                        .common_name = "billing"}),
            "spiffe://kmsd.dev/billing");
}

TEST(IdentityTest, WithoutUriSansTheFirstDnsSanThenTheCommonNameIsTheIdentity) {
  EXPECT_EQ(IdentityOf({.dns_sans = {"a.internal", "b.internal"}, .common_name = "cn"}),
            "a.internal");
  EXPECT_EQ(IdentityOf({.common_name = "billing"}), "billing");
}

TEST(IdentityTest, UriSansWithoutOneSpiffeIdMeanNoIdentityAtAll) {
  // Two URI SANs: no single SPIFFE id, and no falling back to the DNS SAN or CN.
  EXPECT_EQ(IdentityOf({.uri_sans = {"spiffe://a/x", "spiffe://a/y"},
                        .dns_sans = {"x.internal"},
                        .common_name = "x"}),
            "");
  EXPECT_EQ(IdentityOf({.uri_sans = {"https://example.com/x"}, .common_name = "x"}), "");
}

TEST(IdentityTest, ACommonNameShapedLikeAUriIsNoIdentity) {
  EXPECT_EQ(IdentityOf({.common_name = "spiffe://kmsd.dev/operator"}), "");
}

TEST(IdentityTest, SpiffeIdNeedsExactlyOneUriSanWithTheSpiffeScheme) {
  EXPECT_EQ(SpiffeIdOf({"spiffe://kmsd.dev/a"}), "spiffe://kmsd.dev/a");
  EXPECT_EQ(SpiffeIdOf({"spiffe://kmsd.dev/a", "spiffe://kmsd.dev/b"}), "");
  EXPECT_EQ(SpiffeIdOf({"https://kmsd.dev/a"}), "");
  EXPECT_EQ(SpiffeIdOf({}), "");
}

TEST(IdentityTest, SpiffeIdsAreCheckedAsTheSpecificationDefinesThem) {
  EXPECT_TRUE(IsValidSpiffeId("spiffe://kmsd.dev"));
  EXPECT_TRUE(IsValidSpiffeId("spiffe://kmsd.dev/ns/billing-api_v2.1"));
  EXPECT_FALSE(IsValidSpiffeId("spiffe://"));
  EXPECT_FALSE(IsValidSpiffeId("spiffe://KMSD.dev/x"));     // upper-case trust domain
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev/"));      // trailing slash
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev//x"));    // empty segment
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev/a/../b"));
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev/x?y"));   // query
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev/x#y"));   // fragment
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev/%41"));   // percent-encoding
  EXPECT_FALSE(IsValidSpiffeId("spiffe://user@kmsd.dev/x"));
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev:443/x"));
  EXPECT_FALSE(IsValidSpiffeId("spiffe://kmsd.dev/" + std::string(2040, 'a')));
  EXPECT_EQ(SpiffeIdOf({"spiffe://kmsd.dev/a/"}), "");
}

TEST(IdentityTest, SubjectAltNamesAreSortedByShape) {
  EXPECT_EQ(ClassifySan("billing.internal"), SanKind::kDns);
  EXPECT_EQ(ClassifySan("spiffe://kmsd.dev/x"), SanKind::kUri);
  EXPECT_EQ(ClassifySan("urn:uuid:1234"), SanKind::kUri);
  EXPECT_EQ(ClassifySan("127.0.0.1"), SanKind::kIp);
  EXPECT_EQ(ClassifySan("::1"), SanKind::kIp);
  EXPECT_EQ(ClassifySan("ops@example.com"), SanKind::kEmail);
}

// --- CallGate

constexpr std::string_view kPolicy = R"({
  "version": 1,
  "identities": [
    {"identity": "spiffe://kmsd.dev/billing", "operations": ["encrypt"], "tenants": ["acme"],
     "rate_limit": {"requests_per_second": 1, "burst": 2}},
    {"identity": "spiffe://kmsd.dev/ops", "operations": ["*"], "tenants": ["*"]}
  ]
})";

class CallGateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto policy = authz::PolicyAuthorizer::FromJson(kPolicy);
    ASSERT_TRUE(policy.ok()) << policy.status();
    policy_ = std::move(*policy);
  }
  std::unique_ptr<authz::PolicyAuthorizer> policy_;
  testing::SimulatedClock clock_;
  coord::LocalRateLimiter limiter_{&clock_};
};

TEST_F(CallGateTest, AGrantedCallIsAdmitted) {
  CallGate gate(*policy_, &limiter_);
  EXPECT_TRUE(gate.Admit("spiffe://kmsd.dev/billing", authz::Operation::kEncrypt, "acme").ok());
}

TEST_F(CallGateTest, NoIdentityOrNoGrantIsPermissionDenied) {
  CallGate gate(*policy_, &limiter_);
  EXPECT_TRUE(absl::IsPermissionDenied(gate.Admit("", authz::Operation::kEncrypt, "acme")));
  EXPECT_TRUE(absl::IsPermissionDenied(
      gate.Admit("spiffe://kmsd.dev/billing", authz::Operation::kDecrypt, "acme")));
  EXPECT_TRUE(absl::IsPermissionDenied(
      gate.Admit("spiffe://kmsd.dev/billing", authz::Operation::kEncrypt, "globex")));
  EXPECT_TRUE(absl::IsPermissionDenied(
      gate.Admit("spiffe://kmsd.dev/nobody", authz::Operation::kEncrypt, "acme")));
}

TEST_F(CallGateTest, EveryTenantOperationsNeedAnAllTenantsGrant) {
  CallGate gate(*policy_, &limiter_);
  EXPECT_TRUE(gate.Admit("spiffe://kmsd.dev/ops", authz::Operation::kListTenants,
                         CallGate::kEveryTenant)
                  .ok());
  EXPECT_TRUE(absl::IsPermissionDenied(gate.Admit(
      "spiffe://kmsd.dev/billing", authz::Operation::kListTenants, CallGate::kEveryTenant)));
}

TEST_F(CallGateTest, TheRateLimitAppliesAfterThePolicyAndSaysWhenToRetry) {
  CallGate gate(*policy_, &limiter_);
  const std::string id = "spiffe://kmsd.dev/billing";
  EXPECT_TRUE(gate.Admit(id, authz::Operation::kEncrypt, "acme").ok());
  EXPECT_TRUE(gate.Admit(id, authz::Operation::kEncrypt, "acme").ok());  // burst of 2
  absl::Status limited = gate.Admit(id, authz::Operation::kEncrypt, "acme");
  EXPECT_TRUE(absl::IsResourceExhausted(limited)) << limited;
  EXPECT_THAT(std::string(limited.message()), HasSubstr("retry after"));
  // A denied call spends no token: the policy answers first.
  EXPECT_TRUE(absl::IsPermissionDenied(gate.Admit(id, authz::Operation::kDecrypt, "acme")));
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_TRUE(gate.Admit(id, authz::Operation::kEncrypt, "acme").ok());
  // Identities without a rate limit are never limited.
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(gate.Admit("spiffe://kmsd.dev/ops", authz::Operation::kEncrypt, "x").ok());
  }
}

TEST_F(CallGateTest, EveryRateLimitRefusalIsCountedAndNothingElse) {
  CallGate gate(*policy_, &limiter_);
  metrics::Counter refused;
  gate.set_rate_limited_counter(&refused);
  const std::string id = "spiffe://kmsd.dev/billing";
  for (int i = 0; i < 5; ++i) (void)gate.Admit(id, authz::Operation::kEncrypt, "acme");  // 2 pass
  EXPECT_TRUE(absl::IsPermissionDenied(gate.Admit(id, authz::Operation::kDecrypt, "acme")));
  EXPECT_EQ(refused.Value(), 3u);
}

TEST_F(CallGateTest, WithoutALimiterNothingIsRateLimited) {
  CallGate gate(*policy_, nullptr);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(gate.Admit("spiffe://kmsd.dev/billing", authz::Operation::kEncrypt, "acme").ok());
  }
}

// --- Request limits

config::LimitsConfig Limits() {
  config::LimitsConfig l;
  l.max_plaintext_bytes = 16;
  l.max_context_pairs = 2;
  l.max_context_bytes = 10;
  l.max_batch_items = 3;
  return l;
}

TEST(RequestLimitsTest, ContextWithinItsLimitsBecomesAnEncryptionContext) {
  std::map<std::string, std::string> m = {{"table", "users"}};
  auto ctx = ValidateContext(m, Limits());
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  EXPECT_EQ(ctx->size(), 1u);
  EXPECT_EQ(ctx->bytes(), 10u);
  EXPECT_EQ(ctx->pairs()[0].first, "table");
}

TEST(RequestLimitsTest, ContextOverItsLimitsOrWithAnEmptyKeyIsRefused) {
  std::map<std::string, std::string> too_many = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
  std::map<std::string, std::string> too_big = {{"table", "users!"}};
  std::map<std::string, std::string> empty_key = {{"", "x"}};
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateContext(too_many, Limits()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateContext(too_big, Limits()).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateContext(empty_key, Limits()).status()));
}

TEST(RequestLimitsTest, PlaintextCiphertextAndBatchBoundsAndMessagesEchoNoInput) {
  EXPECT_TRUE(ValidatePlaintext(std::string(16, 'x'), Limits()).ok());
  absl::Status big = ValidatePlaintext(std::string(17, 's'), Limits());
  EXPECT_TRUE(absl::IsInvalidArgument(big));
  EXPECT_THAT(std::string(big.message()), Not(HasSubstr("sss")));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidatePlaintext("", Limits())));
  EXPECT_TRUE(ValidateCiphertext(std::string(16 + keys::kCiphertextOverhead, 'c'), Limits()).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(
      ValidateCiphertext(std::string(17 + keys::kCiphertextOverhead, 'c'), Limits())));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateCiphertext("", Limits())));
  EXPECT_TRUE(ValidateBatchSize(3, Limits()).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateBatchSize(0, Limits())));
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateBatchSize(4, Limits())));
}

// --- Public status

TEST(PublicStatusTest, CallersReadTheirOwnErrorsButNoBackendDetail) {
  EXPECT_EQ(PublicMessage(absl::InvalidArgumentError("plaintext is empty"), "Encrypt"),
            "plaintext is empty");
  EXPECT_EQ(PublicMessage(absl::NotFoundError("tenant not found"), "Encrypt"), "tenant not found");
  const std::string unavailable =
      PublicMessage(absl::UnavailableError("pg: connection to 10.0.0.5 refused"), "Encrypt");
  EXPECT_THAT(unavailable, Not(HasSubstr("10.0.0.5")));
  EXPECT_THAT(unavailable, HasSubstr("retry"));
  EXPECT_EQ(PublicMessage(absl::InternalError("CKR_DEVICE_ERROR in C_Decrypt"), "Encrypt"),
            "internal error");
  EXPECT_EQ(PublicMessage(absl::DataLossError("blob of tenant x"), "Encrypt"), "internal error");
}

TEST(PublicStatusTest, DataLossReachesCallersAsInternalAndOtherCodesPassThrough) {
  EXPECT_EQ(PublicCode(absl::DataLossError("x")), absl::StatusCode::kInternal);
  for (absl::StatusCode code :
       {absl::StatusCode::kInvalidArgument, absl::StatusCode::kNotFound,
        absl::StatusCode::kPermissionDenied, absl::StatusCode::kUnavailable,
        absl::StatusCode::kResourceExhausted, absl::StatusCode::kFailedPrecondition}) {
    EXPECT_EQ(PublicCode(absl::Status(code, "m")), code);
  }
}

TEST(CallGateKeyUsageTest, AKeysAllowedOperationsBindEveryCallerButOnlyAfterTheGrant) {
  auto policy = authz::PolicyAuthorizer::FromJson(R"({"version": 1,
    "identities": [{"identity": "xks", "operations": ["encrypt", "decrypt", "reencrypt"],
                    "tenants": ["*"]}],
    "keys": [{"key": "encrypt-only", "operations": ["encrypt"]},
             {"key": "decrypt-only", "operations": ["decrypt"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  CallGate gate(**policy, nullptr);
  using authz::Operation;
  EXPECT_TRUE(gate.Admit("xks", Operation::kEncrypt, "encrypt-only").ok());
  EXPECT_EQ(gate.Admit("xks", Operation::kDecrypt, "encrypt-only").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(gate.Admit("xks", Operation::kDecrypt, "decrypt-only").ok());
  EXPECT_EQ(gate.Admit("xks", Operation::kEncrypt, "decrypt-only").code(),
            absl::StatusCode::kFailedPrecondition);
  // ReEncrypt opens and seals: it needs both.
  EXPECT_EQ(gate.Admit("xks", Operation::kReEncrypt, "decrypt-only").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(gate.Admit("xks", Operation::kReEncrypt, "encrypt-only").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(gate.Admit("xks", Operation::kReEncrypt, "acme").ok());
  // A stranger learns nothing about the key's configuration: the denial comes first.
  EXPECT_EQ(gate.Admit("stranger", Operation::kDecrypt, "encrypt-only").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(gate.UsageOf("encrypt-only").decrypt);
}

TEST(CallGateKeyUsageTest, DataKeyOperationsAreBoundByTheKeysAllowedOperationsToo) {
  // A data key is sealed under the key (GenerateDataKey*) or opened by it
  // (DecryptDataKey): an encrypt-only key must not open one, a decrypt-only key must not
  // make one.
  auto policy = authz::PolicyAuthorizer::FromJson(R"({"version": 1,
    "identities": [{"identity": "job", "operations": ["generate_data_key",
                    "generate_data_key_without_plaintext", "decrypt_data_key"],
                    "tenants": ["*"]}],
    "keys": [{"key": "encrypt-only", "operations": ["encrypt"]},
             {"key": "decrypt-only", "operations": ["decrypt"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  CallGate gate(**policy, nullptr);
  using authz::Operation;
  for (Operation seal : {Operation::kGenerateDataKey, Operation::kGenerateDataKeyWithoutPlaintext}) {
    EXPECT_TRUE(gate.Admit("job", seal, "encrypt-only").ok());
    EXPECT_EQ(gate.Admit("job", seal, "decrypt-only").code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(gate.Admit("job", Operation::kDecryptDataKey, "decrypt-only").ok());
  EXPECT_EQ(gate.Admit("job", Operation::kDecryptDataKey, "encrypt-only").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(gate.Admit("job", Operation::kDecryptDataKey, "acme").ok());
}

}  // namespace
}  // namespace kms::server
