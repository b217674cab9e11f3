#include "src/server/gate/call_gate.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace kms::server {

absl::Status CheckKeyUsage(const authz::KeyUsage& usage, authz::Operation op) {
  using authz::Operation;
  // What each operation does with the key: a data key is sealed under it (encrypt) or
  // opened by it (decrypt), so the data-key operations count like Encrypt and Decrypt.
  const bool encrypts = op == Operation::kEncrypt || op == Operation::kReEncrypt ||
                        op == Operation::kGenerateDataKey ||
                        op == Operation::kGenerateDataKeyWithoutPlaintext;
  const bool decrypts = op == Operation::kDecrypt || op == Operation::kReEncrypt ||
                        op == Operation::kDecryptDataKey;
  if ((encrypts && !usage.encrypt) || (decrypts && !usage.decrypt)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the key does not allow ", std::string(authz::OperationName(op))));
  }
  return absl::OkStatus();
}

bool CallGate::IsChange(authz::Operation op) {
  switch (op) {
    case authz::Operation::kEncrypt:
    case authz::Operation::kDecrypt:
    case authz::Operation::kSignJwt:
    case authz::Operation::kVerifyJwt:
    case authz::Operation::kGetTenant:
    case authz::Operation::kListTenants:
    case authz::Operation::kGetStatus:
    case authz::Operation::kReadAudit:
    case authz::Operation::kReEncrypt:  // the data plane: no key or tenant changes
    case authz::Operation::kGenerateDataKey:
    case authz::Operation::kGenerateDataKeyWithoutPlaintext:
    case authz::Operation::kDecryptDataKey:
    // A key set's first blind index makes its index key (KeyManager::GetBlindIndexKeys);
    // that is set-up, not an operator's change: the call is aggregated like the others.
    case authz::Operation::kComputeBlindIndex:
      return false;
    default:
      return true;  // every other operation (and any added later) is recorded durably
  }
}

absl::Status CallGate::Admit(std::string_view identity, authz::Operation op,
                             std::string_view tenant_id) const {
  if (CallRecord* call = CallScope::Current()) {
    call->gate = this;
    call->identity = std::string(identity);
    call->tenant = std::string(tenant_id);
    call->durable = IsChange(op);
  }
  if (identity.empty()) return absl::PermissionDeniedError("the client certificate has no identity");
  KMS_RETURN_IF_ERROR(authorizer_.Authorize(identity, op, tenant_id));
  if (!tenant_id.empty() && tenant_id != kEveryTenant) {
    KMS_RETURN_IF_ERROR(CheckKeyUsage(authorizer_.UsageOf(tenant_id), op));
  }
  if (limiter_ != nullptr) {
    if (std::optional<authz::RateLimit> limit = authorizer_.RateLimitFor(identity)) {
      absl::Status acquired = limiter_->Acquire(identity, limit->rps, limit->burst);
      if (!acquired.ok()) {
        if (rate_limited_ != nullptr && absl::IsResourceExhausted(acquired)) rate_limited_->Increment();
        return acquired;
      }
    }
  }
  if (audit_ != nullptr && IsChange(op)) KMS_RETURN_IF_ERROR(audit_->AdmitAdmin());
  return absl::OkStatus();
}

absl::Status CallGate::Report(const CallRecord& call, const absl::Status& status) const {
  if (audit_ == nullptr) return status;
  const audit::AuditEvent event{.request_id = call.request_id,
                                .identity = call.identity,
                                .operation = call.method,
                                .tenant = call.tenant,
                                .key_versions = call.key_versions,
                                .outcome = status.code()};
  // A change that did not happen (refused, failed) changed nothing: it is aggregated
  // like a read, so a flood of refused admin calls cannot stall on the audit store.
  if (!call.durable || !status.ok()) {
    audit_->RecordData(event);
    return status;
  }
  absl::Status recorded = audit_->RecordAdmin(event);
  if (!recorded.ok() && status.ok()) return recorded;
  return status;
}

}  // namespace kms::server
