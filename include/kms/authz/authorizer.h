// The Authorizer seam: who may do what, to which tenant. Deny by default.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "kms/common/status.h"

namespace kms::authz {

// The operations a policy grants. Batch RPCs need the single-item operation.
enum class Operation {
  kEncrypt,
  kDecrypt,
  kCreateTenant,
  kGetTenant,
  kListTenants,
  kGetStatus,
  kSignJwt,
  kVerifyJwt,
  kAdminJwt,  // jwt rotate / ack / status
  kRotate,    // manual key rotation
  kShred,     // crypto-shredding
  kReEncrypt,  // ReEncrypt: a ciphertext moved to the primary DEK; needs no kDecrypt
  kReadAudit,  // read the audit log (kmsctl audit tail / verify); needs every tenant ("*")
};
// "encrypt", "create_tenant", ... (the policy file's spelling).
inline std::string_view OperationName(Operation op) {
  switch (op) {
    case Operation::kEncrypt:
      return "encrypt";
    case Operation::kDecrypt:
      return "decrypt";
    case Operation::kCreateTenant:
      return "create_tenant";
    case Operation::kGetTenant:
      return "get_tenant";
    case Operation::kListTenants:
      return "list_tenants";
    case Operation::kGetStatus:
      return "get_status";
    case Operation::kSignJwt:
      return "sign_jwt";
    case Operation::kVerifyJwt:
      return "verify_jwt";
    case Operation::kAdminJwt:
      return "admin_jwt";
    case Operation::kRotate:
      return "rotate";
    case Operation::kShred:
      return "shred";
    case Operation::kReEncrypt:
      return "reencrypt";
    case Operation::kReadAudit:
      return "read_audit";
  }
  return "unknown";
}

// A token bucket's parameters for one identity (enforced by a coord::RateLimiter).
struct RateLimit {
  double rps = 0;    // sustained requests per second, > 0
  double burst = 0;  // bucket size, >= 1 (default: max(1, rps))
};

// Thread-safe.
class Authorizer {
 public:
  virtual ~Authorizer() = default;
  // OK when `identity` may perform `op` on `tenant_id` (empty for operations that
  // are not about one tenant); PERMISSION_DENIED otherwise, with a message that
  // names neither the tenant nor the policy's contents.
  virtual absl::Status Authorize(std::string_view identity, Operation op,
                                 std::string_view tenant_id) const = 0;
  // The identity's rate limit; nullopt when none is set (not limited).
  virtual std::optional<RateLimit> RateLimitFor(std::string_view identity) const = 0;
};

}  // namespace kms::authz
