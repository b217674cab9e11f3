// PolicyAuthorizer: the Authorizer read from a JSON policy file. Deny by default.
//
// Policy format (version 1):
//
//   {"version": 1,
//    "identities": [
//      {"identity": "spiffe://kmsd.dev/billing",        // exact match, no wildcards
//       "operations": ["encrypt", "decrypt"],           // or ["*"] for all operations
//       "tenants": ["acme", "acme-*", "key:backup", "key:*", "*"],  // exact, prefix*, any
//       "rate_limit": {"requests_per_second": 500, "burst": 1000}}],   // optional
//    "keys": [                                          // optional: per-key allowed operations
//      {"key": "xks-export-key", "operations": ["encrypt"]}]}  // encrypt-only / decrypt-only
//
// Operation names are those of OperationName(): encrypt, decrypt, create_tenant,
// get_tenant, list_tenants, get_status, sign_jwt, verify_jwt, admin_jwt, rotate, shred,
// reencrypt (ReEncrypt; it needs no decrypt grant: the plaintext never leaves kmsd),
// generate_data_key, generate_data_key_without_plaintext, decrypt_data_key,
// compute_blind_index (needs no decrypt grant).
// An operation called without a tenant (tenant_id empty) needs only the operation;
// with a tenant it also needs a matching tenant pattern. "tenants" may be omitted
// (no tenant-scoped access). Named keys (src/keys/key_ref.h) are named "key:NAME" in
// "tenants"; "*" covers every tenant and every named key, "key:*" every named key, and a
// prefix pattern never matches across a ':' (so "k*" does not grant "key:backup").
// Unknown keys, unknown operations, malformed tenant patterns and duplicate identities
// are INVALID_ARGUMENT at load time.
// "keys" restricts what a key (a tenant id or "key:NAME", exact) may be used for,
// whoever is granted it: "operations" is a non-empty subset of ["encrypt", "decrypt"];
// keys not listed allow both. A key listed twice or another operation is INVALID_ARGUMENT.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "kms/authz/authorizer.h"
#include "kms/common/status.h"

namespace kms::authz {

// The inverse of OperationName(); nullopt for an unknown name.
std::optional<Operation> OperationFromName(std::string_view name);

// Immutable after construction, hence thread-safe.
class PolicyAuthorizer final : public Authorizer {
 public:
  // NOT_FOUND when the file does not exist; INVALID_ARGUMENT (prefixed with the path)
  // when it cannot be read or is not a valid policy.
  static absl::StatusOr<std::unique_ptr<PolicyAuthorizer>> FromFile(const std::string& path);
  static absl::StatusOr<std::unique_ptr<PolicyAuthorizer>> FromJson(std::string_view json_text);

  absl::Status Authorize(std::string_view identity, Operation op,
                         std::string_view tenant_id) const override;

  std::optional<RateLimit> RateLimitFor(std::string_view identity) const override;
  KeyUsage UsageOf(std::string_view tenant_id) const override;

  size_t identity_count() const { return grants_.size(); }

 private:
  struct Grant {
    uint32_t operations = 0;  // bit (1 << Operation)
    bool all_tenants = false;
    absl::flat_hash_set<std::string> exact_tenants;
    std::vector<std::string> tenant_prefixes;  // from "prefix*"
    std::optional<RateLimit> rate_limit;

    bool AllowsTenant(std::string_view tenant_id) const;
  };
  friend class PolicyParser;

  explicit PolicyAuthorizer(absl::flat_hash_map<std::string, Grant> grants,
                            absl::flat_hash_map<std::string, KeyUsage> key_usage = {})
      : grants_(std::move(grants)), key_usage_(std::move(key_usage)) {}

  const Grant* Find(std::string_view identity) const;

  absl::flat_hash_map<std::string, Grant> grants_;
  absl::flat_hash_map<std::string, KeyUsage> key_usage_;
};

}  // namespace kms::authz
