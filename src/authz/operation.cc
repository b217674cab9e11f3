#include "kms/authz/authorizer.h"

namespace kms::authz {

std::string_view OperationName(Operation op) {
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
  }
  return "unknown";
}

}  // namespace kms::authz
