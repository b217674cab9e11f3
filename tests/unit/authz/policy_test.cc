#include "src/authz/policy.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kms::authz {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr std::string_view kPolicy = R"({
  "version": 1,
  "identities": [
    {"identity": "spiffe://kmsd.dev/billing",
     "operations": ["encrypt", "decrypt"],
     "tenants": ["acme", "globex-*"],
     "rate_limit": {"requests_per_second": 500, "burst": 1000}},
    {"identity": "spiffe://kmsd.dev/etl",
     "operations": ["decrypt"],
     "tenants": ["*"]},
    {"identity": "spiffe://kmsd.dev/ops",
     "operations": ["*"],
     "tenants": ["*"],
     "rate_limit": {"requests_per_second": 5}},
    {"identity": "spiffe://kmsd.dev/monitor",
     "operations": ["get_status", "list_tenants"]},
    {"identity": "spiffe://kmsd.dev/migrator",
     "operations": ["reencrypt"],
     "tenants": ["acme"]},
    {"identity": "spiffe://kmsd.dev/backup",
     "operations": ["generate_data_key"],
     "tenants": ["key:backup", "k*"]},
    {"identity": "spiffe://kmsd.dev/restore",
     "operations": ["decrypt_data_key"],
     "tenants": ["key:*"]},
    {"identity": "spiffe://kmsd.dev/search",
     "operations": ["compute_blind_index"],
     "tenants": ["acme"]}
  ]
})";

std::unique_ptr<PolicyAuthorizer> LoadTestPolicy() {
  auto policy = PolicyAuthorizer::FromJson(kPolicy);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? std::move(*policy) : nullptr;
}

TEST(OperationNameTest, EveryOperationHasADistinctNameThatParsesBack) {
  std::set<std::string_view> names;
  for (Operation op : {Operation::kEncrypt, Operation::kDecrypt, Operation::kCreateTenant,
                       Operation::kGetTenant, Operation::kListTenants, Operation::kGetStatus,
                       Operation::kSignJwt, Operation::kVerifyJwt, Operation::kAdminJwt,
                       Operation::kRotate, Operation::kShred, Operation::kReEncrypt,
                       Operation::kGenerateDataKey, Operation::kGenerateDataKeyWithoutPlaintext,
                       Operation::kDecryptDataKey, Operation::kComputeBlindIndex}) {
    std::string_view name = OperationName(op);
    EXPECT_TRUE(names.insert(name).second) << name;
    EXPECT_EQ(OperationFromName(name), op);
  }
  EXPECT_EQ(OperationName(Operation::kCreateTenant), "create_tenant");
  EXPECT_EQ(OperationName(Operation::kReEncrypt), "reencrypt");
  EXPECT_EQ(OperationFromName("*"), std::nullopt);
  EXPECT_EQ(OperationFromName("Encrypt"), std::nullopt);
}

struct Case {
  std::string name;
  std::string identity;
  Operation op;
  std::string tenant;
  bool allowed;
};

class PolicyDecisionTest : public ::testing::TestWithParam<Case> {};

TEST_P(PolicyDecisionTest, DecidesAsThePolicySays) {
  const Case& tc = GetParam();
  auto policy = LoadTestPolicy();
  ASSERT_NE(policy, nullptr);
  absl::Status s = policy->Authorize(tc.identity, tc.op, tc.tenant);
  if (tc.allowed) {
    EXPECT_TRUE(s.ok()) << s;
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  }
}

const std::string kBilling = "spiffe://kmsd.dev/billing";
const std::string kEtl = "spiffe://kmsd.dev/etl";
const std::string kOps = "spiffe://kmsd.dev/ops";
const std::string kMonitor = "spiffe://kmsd.dev/monitor";
const std::string kMigrator = "spiffe://kmsd.dev/migrator";
const std::string kBackup = "spiffe://kmsd.dev/backup";
const std::string kRestore = "spiffe://kmsd.dev/restore";
const std::string kSearch = "spiffe://kmsd.dev/search";

INSTANTIATE_TEST_SUITE_P(
    Table, PolicyDecisionTest,
    ::testing::Values(
        Case{"ExactTenantAllowed", kBilling, Operation::kEncrypt, "acme", true},
        Case{"ExactTenantSecondOperationAllowed", kBilling, Operation::kDecrypt, "acme", true},
        Case{"ExactTenantIsNotAPrefix", kBilling, Operation::kEncrypt, "acme-eu", false},
        Case{"OtherTenantDenied", kBilling, Operation::kEncrypt, "initech", false},
        Case{"PrefixPatternMatches", kBilling, Operation::kEncrypt, "globex-eu", true},
        Case{"PrefixPatternNeedsASuffix", kBilling, Operation::kEncrypt, "globex-", false},
        Case{"PrefixPatternIsCaseSensitive", kBilling, Operation::kEncrypt, "Globex-eu", false},
        Case{"PrefixWithoutDashDenied", kBilling, Operation::kEncrypt, "globex", false},
        Case{"WrongOperationDenied", kBilling, Operation::kShred, "acme", false},
        Case{"WildcardTenantAllowsAnyTenant", kEtl, Operation::kDecrypt, "anything", true},
        Case{"WildcardTenantStillNeedsTheOperation", kEtl, Operation::kEncrypt, "acme", false},
        Case{"WildcardOperationAllowsAdminOperations", kOps, Operation::kShred, "acme", true},
        Case{"WildcardOperationAllowsJwtAdmin", kOps, Operation::kAdminJwt, "", true},
        Case{"UnknownIdentityDenied", "spiffe://kmsd.dev/mallory", Operation::kDecrypt, "acme",
             false},
        Case{"IdentityMatchIsExact", "spiffe://kmsd.dev/billing/", Operation::kEncrypt, "acme",
             false},
        Case{"EmptyIdentityDenied", "", Operation::kGetStatus, "", false},
        Case{"NonTenantOperationNeedsOnlyTheOperation", kMonitor, Operation::kGetStatus, "",
             true},
        Case{"NonTenantOperationNotGrantedDenied", kMonitor, Operation::kSignJwt, "", false},
        Case{"NoTenantsListedDeniesEveryTenant", kMonitor, Operation::kGetStatus, "acme", false},
        Case{"TenantOperationWithoutTenantNeedsOnlyTheOperation", kBilling, Operation::kEncrypt,
             "", true},
        // ReEncrypt is its own grant: it needs no decrypt (the plaintext stays in kmsd),
        // and a decrypt grant does not give it.
        Case{"ReEncryptGrantAllowsReEncrypt", kMigrator, Operation::kReEncrypt, "acme", true},
        Case{"ReEncryptGrantDoesNotAllowDecrypt", kMigrator, Operation::kDecrypt, "acme", false},
        Case{"ReEncryptGrantKeepsItsTenants", kMigrator, Operation::kReEncrypt, "globex-eu",
             false},
        Case{"DecryptGrantDoesNotAllowReEncrypt", kEtl, Operation::kReEncrypt, "acme", false},
        Case{"WildcardOperationAllowsReEncrypt", kOps, Operation::kReEncrypt, "acme", true},
        // Named keys are "key:NAME": exact, "key:*", or "*"; a prefix never crosses ':'.
        Case{"NamedKeyExactGrant", kBackup, Operation::kGenerateDataKey, "key:backup", true},
        Case{"NamedKeyExactGrantIsOnlyThatKey", kBackup, Operation::kGenerateDataKey,
             "key:clickhouse-disk", false},
        Case{"PrefixPatternDoesNotReachIntoNamedKeys", kBackup, Operation::kGenerateDataKey,
             "key:other", false},
        Case{"PrefixPatternStillMatchesTenants", kBackup, Operation::kGenerateDataKey, "kappa",
             true},
        Case{"NamedKeyNamespaceGrant", kRestore, Operation::kDecryptDataKey, "key:anything",
             true},
        Case{"NamedKeyNamespaceGrantIsNoTenantGrant", kRestore, Operation::kDecryptDataKey,
             "acme", false},
        Case{"GenerateDataKeyIsNotDecryptDataKey", kBackup, Operation::kDecryptDataKey,
             "key:backup", false},
        Case{"DecryptDataKeyIsNotDecrypt", kRestore, Operation::kDecrypt, "key:backup", false},
        Case{"WildcardTenantCoversNamedKeys", kOps, Operation::kGenerateDataKey, "key:backup",
             true},
        Case{"BlindIndexNeedsNoDecrypt", kSearch, Operation::kComputeBlindIndex, "acme", true},
        Case{"BlindIndexGrantIsNoDecrypt", kSearch, Operation::kDecrypt, "acme", false},
        Case{"DecryptGrantIsNoBlindIndex", kEtl, Operation::kComputeBlindIndex, "acme", false}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(PolicyAuthorizerTest, DenialMessageNamesTheOperationButNotTheTenantOrPolicy) {
  auto policy = LoadTestPolicy();
  ASSERT_NE(policy, nullptr);
  absl::Status s = policy->Authorize(kBilling, Operation::kShred, "secret-tenant-42");
  ASSERT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "identity is not allowed to shred on this tenant");
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("secret-tenant-42")));
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("acme")));

  s = policy->Authorize(kMonitor, Operation::kSignJwt, "");
  EXPECT_EQ(s.message(), "identity is not allowed to sign_jwt");
}

TEST(PolicyAuthorizerTest, UnknownIdentityGetsTheSameMessageAsAKnownOne) {
  auto policy = LoadTestPolicy();
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(policy->Authorize("spiffe://x/unknown", Operation::kEncrypt, "acme").message(),
            policy->Authorize(kEtl, Operation::kEncrypt, "acme").message());
}

TEST(PolicyAuthorizerTest, RateLimitIsExposedPerIdentity) {
  auto policy = LoadTestPolicy();
  ASSERT_NE(policy, nullptr);
  std::optional<RateLimit> rl = policy->RateLimitFor(kBilling);
  ASSERT_TRUE(rl.has_value());
  EXPECT_DOUBLE_EQ(rl->rps, 500);
  EXPECT_DOUBLE_EQ(rl->burst, 1000);

  rl = policy->RateLimitFor(kOps);  // burst defaults to the rate
  ASSERT_TRUE(rl.has_value());
  EXPECT_DOUBLE_EQ(rl->rps, 5);
  EXPECT_DOUBLE_EQ(rl->burst, 5);

  EXPECT_FALSE(policy->RateLimitFor(kEtl).has_value());
  EXPECT_FALSE(policy->RateLimitFor("spiffe://x/unknown").has_value());
  EXPECT_EQ(policy->identity_count(), 8u);
}

TEST(PolicyAuthorizerTest, EmptyIdentityListDeniesEverything) {
  auto policy = PolicyAuthorizer::FromJson(R"({"version": 1, "identities": []})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ((*policy)->Authorize(kOps, Operation::kGetStatus, "").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(PolicyAuthorizerTest, ConcurrentLookupsAgree) {
  auto policy = LoadTestPolicy();
  ASSERT_NE(policy, nullptr);
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        if (!policy->Authorize(kBilling, Operation::kEncrypt, "globex-1").ok()) ++wrong;
        if (policy->Authorize(kBilling, Operation::kEncrypt, "initech").ok()) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

struct BadPolicy {
  std::string name;
  std::string json;
  std::string expected;
};

class MalformedPolicyTest : public ::testing::TestWithParam<BadPolicy> {};

TEST_P(MalformedPolicyTest, IsRejectedWithAMessageSayingWhere) {
  auto policy = PolicyAuthorizer::FromJson(GetParam().json);
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr(GetParam().expected));
}

std::string Entry(const std::string& body) {
  return R"({"version": 1, "identities": [)" + body + "]}";
}

INSTANTIATE_TEST_SUITE_P(
    Table, MalformedPolicyTest,
    ::testing::Values(
        BadPolicy{"NotJson", "{", "not valid JSON"},
        BadPolicy{"NotAnObject", "[]", "expected an object"},
        BadPolicy{"MissingVersion", R"({"identities": []})", "version: required"},
        BadPolicy{"WrongVersion", R"({"version": 2, "identities": []})", "version: unsupported"},
        BadPolicy{"VersionAsString", R"({"version": "1", "identities": []})",
                  "version: unsupported"},
        BadPolicy{"MissingIdentities", R"({"version": 1})", "identities: required"},
        BadPolicy{"UnknownTopLevelKey", R"({"version": 1, "identities": [], "default": "allow"})",
                  "unknown key 'default'"},
        BadPolicy{"UnknownEntryKey",
                  Entry(R"({"identity": "a", "operations": ["encrypt"], "tenant": ["x"]})"),
                  "identities[0]: unknown key 'tenant'"},
        BadPolicy{"UnknownOperation", Entry(R"({"identity": "a", "operations": ["encryt"]})"),
                  "identities[0].operations[0]: unknown operation 'encryt'"},
        BadPolicy{"OperationNotAString", Entry(R"({"identity": "a", "operations": [1]})"),
                  "identities[0].operations[0]: expected a string"},
        BadPolicy{"NoOperations", Entry(R"({"identity": "a", "operations": []})"),
                  "must name at least one operation"},
        BadPolicy{"MissingOperations", Entry(R"({"identity": "a"})"),
                  "identities[0].operations: required"},
        BadPolicy{"MissingIdentity", Entry(R"({"operations": ["encrypt"]})"),
                  "identities[0].identity: required"},
        BadPolicy{"EmptyIdentity", Entry(R"({"identity": "", "operations": ["encrypt"]})"),
                  "must not be empty"},
        BadPolicy{"WildcardIdentity", Entry(R"({"identity": "*", "operations": ["encrypt"]})"),
                  "wildcard identities are not supported"},
        BadPolicy{"DuplicateIdentity",
                  Entry(R"({"identity": "a", "operations": ["encrypt"]},
                           {"identity": "a", "operations": ["decrypt"]})"),
                  "identities[1]: identity 'a' is listed twice"},
        BadPolicy{"StarInsideTenantPattern",
                  Entry(R"({"identity": "a", "operations": ["encrypt"], "tenants": ["a*b"]})"),
                  "identities[0].tenants[0]: '*' may only end"},
        BadPolicy{"EmptyTenant",
                  Entry(R"({"identity": "a", "operations": ["encrypt"], "tenants": [""]})"),
                  "identities[0].tenants[0]: must not be empty"},
        BadPolicy{"TenantsNotAnArray",
                  Entry(R"({"identity": "a", "operations": ["encrypt"], "tenants": "*"})"),
                  "identities[0].tenants: expected an array"},
        BadPolicy{"ZeroRate",
                  Entry(R"({"identity": "a", "operations": ["encrypt"],
                            "rate_limit": {"requests_per_second": 0}})"),
                  "rate_limit.requests_per_second: must be > 0"},
        BadPolicy{"BurstBelowOne",
                  Entry(R"({"identity": "a", "operations": ["encrypt"],
                            "rate_limit": {"requests_per_second": 1, "burst": 0.5}})"),
                  "rate_limit.burst: must be >= 1"},
        BadPolicy{"RateLimitUnknownKey",
                  Entry(R"({"identity": "a", "operations": ["encrypt"],
                            "rate_limit": {"rps": 1}})"),
                  "unknown key 'rps'"},
        BadPolicy{"DuplicateJsonKey",
                  Entry(R"({"identity": "a", "operations": ["encrypt"], "operations": ["*"]})"),
                  "duplicate key 'operations'"}),
    [](const ::testing::TestParamInfo<BadPolicy>& info) { return info.param.name; });

class PolicyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "kms_authz_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(PolicyFileTest, LoadsAPolicyFile) {
  std::ofstream(dir_ / "policy.json") << kPolicy;
  auto policy = PolicyAuthorizer::FromFile((dir_ / "policy.json").string());
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE((*policy)->Authorize(kEtl, Operation::kDecrypt, "acme").ok());
}

TEST_F(PolicyFileTest, MissingFileIsNotFound) {
  auto policy = PolicyAuthorizer::FromFile((dir_ / "nope.json").string());
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(PolicyFileTest, ErrorsNameTheFile) {
  std::ofstream(dir_ / "policy.json") << R"({"version": 1})";
  auto policy = PolicyAuthorizer::FromFile((dir_ / "policy.json").string());
  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(std::string(policy.status().message()),
              HasSubstr((dir_ / "policy.json").string() + ": policy: identities: required"));
}

TEST(PolicyAuthorizerTest, KeysListTheirAllowedOperations) {
  auto policy = PolicyAuthorizer::FromJson(R"({"version": 1, "identities": [],
    "keys": [{"key": "export-only", "operations": ["encrypt"]},
             {"key": "archive", "operations": ["decrypt"]},
             {"key": "both", "operations": ["decrypt", "encrypt"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE((*policy)->UsageOf("export-only").encrypt);
  EXPECT_FALSE((*policy)->UsageOf("export-only").decrypt);
  EXPECT_FALSE((*policy)->UsageOf("archive").encrypt);
  EXPECT_TRUE((*policy)->UsageOf("archive").decrypt);
  EXPECT_TRUE((*policy)->UsageOf("both").encrypt && (*policy)->UsageOf("both").decrypt);
  // Keys not listed allow both.
  EXPECT_TRUE((*policy)->UsageOf("acme").encrypt && (*policy)->UsageOf("acme").decrypt);
}

TEST(PolicyAuthorizerTest, MalformedKeyEntriesAreRefusedAtLoad) {
  for (const char* keys : {R"("keys": {})", R"("keys": [{"key": "k"}])",
                           R"("keys": [{"key": "k", "operations": []}])",
                           R"("keys": [{"key": "k", "operations": ["sign_jwt"]}])",
                           R"("keys": [{"key": "k*", "operations": ["encrypt"]}])",
                           R"("keys": [{"key": "k", "operations": ["encrypt"], "x": 1}])",
                           R"("keys": [{"key": "k", "operations": ["encrypt"]},
                                       {"key": "k", "operations": ["decrypt"]}])"}) {
    auto policy = PolicyAuthorizer::FromJson(
        absl::StrCat(R"({"version": 1, "identities": [], )", keys, "}"));
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument) << keys;
  }
}

}  // namespace
}  // namespace kms::authz
