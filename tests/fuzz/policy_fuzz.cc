// PolicyAuthorizer::FromJson on arbitrary text; when it parses, Authorize for a fixed
// set of identities x operations x tenants (the identities and tenants of the seeds)
// and RateLimitFor, checking the contracts of policy.h and authorizer.h.
#include <string_view>

#include "src/authz/policy.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {
namespace {

constexpr std::string_view kIdentities[] = {"spiffe://kmsd.dev/billing", "spiffe://kmsd.dev/admin",
                                            "a", "*", ""};
constexpr std::string_view kTenants[] = {"", "acme", "acme-1", "acme-", "other", "a", "*"};
constexpr authz::Operation kOperations[] = {
    authz::Operation::kEncrypt,   authz::Operation::kDecrypt,     authz::Operation::kCreateTenant,
    authz::Operation::kGetTenant, authz::Operation::kListTenants, authz::Operation::kGetStatus,
    authz::Operation::kSignJwt,   authz::Operation::kVerifyJwt,   authz::Operation::kAdminJwt,
    authz::Operation::kRotate,    authz::Operation::kShred};

}  // namespace

int FuzzPolicy(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto policy = authz::PolicyAuthorizer::FromJson(text);
  if (!policy.ok()) {
    FUZZ_CHECK(policy.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  for (std::string_view identity : kIdentities) {
    bool any_allowed = false;
    for (authz::Operation op : kOperations) {
      FUZZ_CHECK(authz::OperationFromName(authz::OperationName(op)) == op);
      for (std::string_view tenant : kTenants) {
        absl::Status s = (*policy)->Authorize(identity, op, tenant);
        FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kPermissionDenied);
        any_allowed |= s.ok();
      }
    }
    if (auto limit = (*policy)->RateLimitFor(identity); limit.has_value()) {
      FUZZ_CHECK(limit->rps > 0 && limit->burst >= 1);
    }
    // Deny by default: with no identities, nobody may do anything.
    if ((*policy)->identity_count() == 0) FUZZ_CHECK(!any_allowed);
  }
  return 0;
}

}  // namespace kms::fuzz
