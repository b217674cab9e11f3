// CallGate: the one gate every door passes (gRPC services, HTTPS endpoints, and later the
// Vault, XKS and Kubernetes KMS doors) before a domain operation runs: the caller's
// identity, the policy's grant for the operation and tenant, and the identity's rate
// limit (global through Redis when configured, else per replica), and the audit record
// of the decision and its outcome (through the AuditSink seam, so the gate knows no
// store). It knows no transport: each door turns its credential into an identity
// (gate/identity.h), asks the gate, and reports the call's final status once
// (gate/call_record.h).
#pragma once

#include <string_view>

#include "kms/audit/audit_sink.h"
#include "kms/authz/authorizer.h"
#include "kms/common/status.h"
#include "kms/coord/coordination.h"
#include "kms/metrics/metrics.h"
#include "src/server/gate/call_record.h"

namespace kms::server {

// Thread-safe (the authorizer and limiter are).
class CallGate {
 public:
  // `limiter` may be null (no rate limits enforced), `audit` too (no audit). All must
  // outlive the gate.
  CallGate(const authz::Authorizer& authorizer, coord::RateLimiter* limiter,
           audit::AuditSink* audit = nullptr)
      : authorizer_(authorizer), limiter_(limiter), audit_(audit) {}

  // Operations that act on every tenant at once (listing tenants, rotating the KEK)
  // pass kEveryTenant: only a grant of all tenants ("*") allows them. Operations that
  // are about no tenant pass "".
  static constexpr std::string_view kEveryTenant = "*";

  // OK, or PERMISSION_DENIED (empty identity: the credential named none; or not
  // granted), or RESOURCE_EXHAUSTED ("rate limit exceeded; retry after N ms"), or
  // UNAVAILABLE for a change while the audit log cannot record it (AuditSink::AdmitAdmin).
  // Inside a CallScope the decision is noted in the current CallRecord, to be reported.
  absl::Status Admit(std::string_view identity, authz::Operation op,
                     std::string_view tenant_id) const;

  // Counts every request refused by the rate limit (kmsd_rate_limited_requests_total);
  // set before serving, may stay null.
  void set_rate_limited_counter(metrics::Counter* counter) { rate_limited_ = counter; }
  // The door's report of a decided call's final status: one audit event (a change that
  // succeeded: written before this returns; anything else, refused or failed changes
  // included: aggregated). Returns `status`, or
  // UNAVAILABLE when a change succeeded but its record could not be stored in time.
  absl::Status Report(const CallRecord& call, const absl::Status& status) const;

  // Whether `op` changes keys or tenants (its record is written one by one, durably,
  // and it is refused while the audit backlog is full); reads and the data plane are
  // aggregated.
  static bool IsChange(authz::Operation op);

 private:
  const authz::Authorizer& authorizer_;
  coord::RateLimiter* const limiter_;
  metrics::Counter* rate_limited_ = nullptr;
  audit::AuditSink* const audit_;
};

}  // namespace kms::server
