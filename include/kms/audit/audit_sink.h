// The AuditSink seam: where the gate (src/server/gate/call_gate.h) sends one event per
// decided call, so the gate knows nothing of the store. Implemented by audit::AuditLog
// (src/audit/audit_log.h); tests use a recording fake.
#pragma once

#include <string_view>

#include "kms/common/status.h"

namespace kms::audit {

// One decided call. Views are valid only during the call that receives the event.
// Never plaintext, ciphertext, key bytes, nor a hash of them.
struct AuditEvent {
  std::string_view request_id;
  std::string_view identity;      // "" when the credential named none
  std::string_view operation;     // the RPC: "Encrypt", "CreateTenant", ...
  std::string_view tenant;        // "", "*" (every tenant) or a tenant id
  std::string_view key_versions;  // "dek:3", "kek:2", "dek:1,2" or ""
  absl::StatusCode outcome = absl::StatusCode::kOk;
};

// Thread-safe.
class AuditSink {
 public:
  virtual ~AuditSink() = default;

  // Whether an admin call may run now: UNAVAILABLE when its record could not be
  // written (the backlog is full and admin calls are refused while it is).
  virtual absl::Status AdmitAdmin() = 0;

  // A data-plane call (Encrypt, Decrypt, JWT): aggregated and written later; returns at
  // once (never waits on the store). Dropped, and counted, when the backlog is full.
  virtual void RecordData(const AuditEvent& event) = 0;

  // An admin call: returns once its record is durably stored (OK), or UNAVAILABLE when
  // it could not be written in time (the record stays queued and is retried).
  virtual absl::Status RecordAdmin(const AuditEvent& event) = 0;
};

}  // namespace kms::audit
