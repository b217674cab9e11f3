#include "src/authz/policy.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "src/common/strict_json.h"
#include "src/common/strings.h"
#include "src/common/text_file.h"

namespace kms::authz {
namespace {

using Json = nlohmann::json;

constexpr int kPolicyVersion = 1;
constexpr int kMaxJsonDepth = 16;
constexpr double kMaxRequestsPerSecond = 1e9;

constexpr Operation kAllOperations[] = {
    Operation::kEncrypt,   Operation::kDecrypt,     Operation::kCreateTenant,
    Operation::kGetTenant, Operation::kListTenants, Operation::kGetStatus,
    Operation::kSignJwt,   Operation::kVerifyJwt,   Operation::kAdminJwt,
    Operation::kRotate,    Operation::kShred,       Operation::kReEncrypt,
    Operation::kReadAudit,
};

uint32_t Bit(Operation op) { return uint32_t{1} << static_cast<uint32_t>(op); }

uint32_t AllOperationBits() {
  uint32_t bits = 0;
  for (Operation op : kAllOperations) bits |= Bit(op);
  return bits;
}

absl::Status Invalid(std::string_view where, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("policy: ", Av(where), ": ", Av(what)));
}

absl::Status CheckKeys(const Json& obj, std::string_view where,
                       std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : obj.items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || a == key;
    if (!known) return Invalid(where, absl::StrCat("unknown key '", key, "'"));
  }
  return absl::OkStatus();
}

std::string TypeMismatch(std::string_view expected, const Json& v) {
  return absl::StrCat("expected ", Av(expected), ", got ", v.type_name());
}

}  // namespace

std::optional<Operation> OperationFromName(std::string_view name) {
  for (Operation op : kAllOperations) {
    if (OperationName(op) == name) return op;
  }
  return std::nullopt;
}

// Builds the grants map from parsed JSON. A class (a friend of PolicyAuthorizer) so it
// may construct the private Grant type.
class PolicyParser {
 public:
  using Grant = PolicyAuthorizer::Grant;

  static absl::StatusOr<std::unique_ptr<PolicyAuthorizer>> Parse(const Json& root) {
    if (!root.is_object()) return Invalid("top level", TypeMismatch("an object", root));
    KMS_RETURN_IF_ERROR(CheckKeys(root, "top level", {"version", "identities"}));

    auto version = root.find("version");
    if (version == root.end()) return Invalid("version", "required (use 1)");
    if (!version->is_number_integer() || version->get<int64_t>() != kPolicyVersion) {
      return Invalid("version", absl::StrCat("unsupported (", version->dump(), "), use 1"));
    }

    auto identities = root.find("identities");
    if (identities == root.end()) return Invalid("identities", "required");
    if (!identities->is_array()) {
      return Invalid("identities", TypeMismatch("an array", *identities));
    }

    absl::flat_hash_map<std::string, Grant> grants;
    for (size_t i = 0; i < identities->size(); ++i) {
      const std::string where = absl::StrCat("identities[", i, "]");
      std::string identity;
      KMS_ASSIGN_OR_RETURN(Grant grant, ParseEntry((*identities)[i], where, &identity));
      if (!grants.emplace(identity, std::move(grant)).second) {
        return Invalid(where, absl::StrCat("identity '", identity, "' is listed twice"));
      }
    }
    return std::unique_ptr<PolicyAuthorizer>(new PolicyAuthorizer(std::move(grants)));
  }

 private:
  static absl::StatusOr<Grant> ParseEntry(const Json& entry, const std::string& where,
                                          std::string* identity) {
    if (!entry.is_object()) return Invalid(where, TypeMismatch("an object", entry));
    KMS_RETURN_IF_ERROR(
        CheckKeys(entry, where, {"identity", "operations", "tenants", "rate_limit"}));

    auto id = entry.find("identity");
    if (id == entry.end()) return Invalid(where + ".identity", "required");
    if (!id->is_string()) return Invalid(where + ".identity", TypeMismatch("a string", *id));
    *identity = id->get<std::string>();
    if (identity->empty()) return Invalid(where + ".identity", "must not be empty");
    if (identity->find('*') != std::string::npos) {
      return Invalid(where + ".identity",
                     "wildcard identities are not supported (name each identity)");
    }

    Grant grant;
    KMS_RETURN_IF_ERROR(ParseOperations(entry, where + ".operations", grant));
    KMS_RETURN_IF_ERROR(ParseTenants(entry, where + ".tenants", grant));
    if (auto rl = entry.find("rate_limit"); rl != entry.end()) {
      KMS_ASSIGN_OR_RETURN(grant.rate_limit, ParseRateLimit(*rl, where + ".rate_limit"));
    }
    return grant;
  }

  static absl::Status ParseOperations(const Json& entry, const std::string& where,
                                      Grant& grant) {
    auto ops = entry.find("operations");
    if (ops == entry.end()) return Invalid(where, "required");
    if (!ops->is_array()) return Invalid(where, TypeMismatch("an array", *ops));
    if (ops->empty()) return Invalid(where, "must name at least one operation");
    for (size_t j = 0; j < ops->size(); ++j) {
      const Json& op = (*ops)[j];
      const std::string item = absl::StrCat(where, "[", j, "]");
      if (!op.is_string()) return Invalid(item, TypeMismatch("a string", op));
      const std::string name = op.get<std::string>();
      if (name == "*") {
        grant.operations |= AllOperationBits();
      } else if (std::optional<Operation> parsed = OperationFromName(name)) {
        grant.operations |= Bit(*parsed);
      } else {
        return Invalid(item, absl::StrCat("unknown operation '", name, "'"));
      }
    }
    return absl::OkStatus();
  }

  static absl::Status ParseTenants(const Json& entry, const std::string& where, Grant& grant) {
    auto tenants = entry.find("tenants");
    if (tenants == entry.end()) return absl::OkStatus();
    if (!tenants->is_array()) return Invalid(where, TypeMismatch("an array", *tenants));
    for (size_t j = 0; j < tenants->size(); ++j) {
      const Json& t = (*tenants)[j];
      const std::string item = absl::StrCat(where, "[", j, "]");
      if (!t.is_string()) return Invalid(item, TypeMismatch("a string", t));
      std::string pattern = t.get<std::string>();
      if (pattern.empty()) return Invalid(item, "must not be empty");
      size_t star = pattern.find('*');
      if (pattern == "*") {
        grant.all_tenants = true;
      } else if (star == std::string::npos) {
        grant.exact_tenants.insert(std::move(pattern));
      } else if (star == pattern.size() - 1) {
        pattern.pop_back();
        grant.tenant_prefixes.push_back(std::move(pattern));
      } else {
        return Invalid(item, "'*' may only end a tenant pattern (\"acme-*\") or stand alone");
      }
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<RateLimit> ParseRateLimit(const Json& rl, const std::string& where) {
    if (!rl.is_object()) return Invalid(where, TypeMismatch("an object", rl));
    KMS_RETURN_IF_ERROR(CheckKeys(rl, where, {"requests_per_second", "burst"}));
    RateLimit limit;
    auto rps = rl.find("requests_per_second");
    if (rps == rl.end()) return Invalid(where + ".requests_per_second", "required");
    if (!rps->is_number()) {
      return Invalid(where + ".requests_per_second", TypeMismatch("a number", *rps));
    }
    limit.rps = rps->get<double>();
    if (!(limit.rps > 0 && limit.rps <= kMaxRequestsPerSecond)) {
      return Invalid(where + ".requests_per_second", "must be > 0 and <= 1e9");
    }
    limit.burst = std::max(1.0, limit.rps);
    if (auto burst = rl.find("burst"); burst != rl.end()) {
      if (!burst->is_number()) return Invalid(where + ".burst", TypeMismatch("a number", *burst));
      limit.burst = burst->get<double>();
      if (!(limit.burst >= 1 && limit.burst <= kMaxRequestsPerSecond)) {
        return Invalid(where + ".burst", "must be >= 1 and <= 1e9");
      }
    }
    return limit;
  }
};

bool PolicyAuthorizer::Grant::AllowsTenant(std::string_view tenant_id) const {
  if (all_tenants) return true;
  if (exact_tenants.contains(Av(tenant_id))) return true;
  for (const std::string& prefix : tenant_prefixes) {
    // "acme-*" needs at least one character after the prefix.
    if (tenant_id.size() > prefix.size() && tenant_id.starts_with(prefix)) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<PolicyAuthorizer>> PolicyAuthorizer::FromJson(
    std::string_view json_text) {
  // Duplicate keys (which nlohmann would silently collapse) and absurd nesting are errors.
  KMS_ASSIGN_OR_RETURN(Json root,
                       ParseStrictJson(json_text, "policy", kMaxJsonDepth, "policy: "));
  try {
    return PolicyParser::Parse(root);
  } catch (const std::exception& e) {  // nlohmann type errors: a bug, but never escape
    return absl::InvalidArgumentError(absl::StrCat("policy: ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<PolicyAuthorizer>> PolicyAuthorizer::FromFile(
    const std::string& path) {
  KMS_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, "policy"));
  auto policy = FromJson(text);
  if (!policy.ok()) {
    return absl::Status(policy.status().code(),
                        absl::StrCat(path, ": ", policy.status().message()));
  }
  return policy;
}

const PolicyAuthorizer::Grant* PolicyAuthorizer::Find(std::string_view identity) const {
  auto it = grants_.find(Av(identity));
  return it == grants_.end() ? nullptr : &it->second;
}

absl::Status PolicyAuthorizer::Authorize(std::string_view identity, Operation op,
                                         std::string_view tenant_id) const {
  const Grant* grant = Find(identity);
  bool allowed = grant != nullptr && (grant->operations & Bit(op)) != 0 &&
                 (tenant_id.empty() || grant->AllowsTenant(tenant_id));
  if (allowed) return absl::OkStatus();
  // The same message whether the identity is unknown, lacks the operation or the
  // tenant: a denial reveals nothing about the policy.
  return absl::PermissionDeniedError(
      tenant_id.empty()
          ? absl::StrCat("identity is not allowed to ", Av(OperationName(op)))
          : absl::StrCat("identity is not allowed to ", Av(OperationName(op)),
                         " on this tenant"));
}

std::optional<RateLimit> PolicyAuthorizer::RateLimitFor(std::string_view identity) const {
  const Grant* grant = Find(identity);
  return grant == nullptr ? std::nullopt : grant->rate_limit;
}

}  // namespace kms::authz
