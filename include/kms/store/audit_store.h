// The AuditStore seam: where the hash-chained audit log persists (DESIGN §3).
//
// Implemented by both backends (src/store/sqlite, src/store/postgres) next to KeyStore,
// checked by the contract suite in tests/integration/store (audit_store_contract.cc).
// The chain itself (what prev_hash and hash mean, the canonical encoding) is
// src/audit/audit_chain.h's; the store keeps the records as given and checks only their
// shape. Each kmsd node writes its own chain (one writer per node: src/audit/audit_log.h),
// so (node, seq) is unique and a node's records are read back in seq order.
//
// Thread-safe. Errors common to every method: UNAVAILABLE (backend unreachable, locked or
// out of resources: retry later), INVALID_ARGUMENT (arguments refused before anything is
// written), INTERNAL (anything else). Audit writes never move the store epoch.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kms/common/status.h"

namespace kms::store {

// One audit record: a single admin call, or the data-plane calls of one identity, one
// operation and one outcome within one second on one node (aggregated). Never holds
// plaintext, ciphertext, key bytes nor a hash of any of them.
struct AuditRecord {
  int64_t id = 0;            // assigned by the store on append (> 0, increasing); ignored on append
  std::string node;          // the node (kmsd replica) that wrote it; its chain
  int64_t seq = 0;           // position in the node's chain: 1, 2, 3, ...
  int64_t at_ms = 0;         // Unix milliseconds (aggregates: the start of their second)
  std::string kind;          // "admin" or "data"
  std::string identity;      // the caller's certificate identity ("" when it had none)
  std::string operation;     // the RPC: "Encrypt", "CreateTenant", ...
  std::string tenant;        // the tenant; aggregates: the tenant when only one, else ""
  uint64_t tenants = 0;      // distinct tenants (aggregates); 1 or 0 for an admin call
  uint64_t calls = 1;        // calls aggregated (>= 1)
  std::string key_versions;  // e.g. "dek:3", "kek:2", "dek:1,2"; "" when none
  std::string outcome;       // the status code: "OK", "PERMISSION_DENIED", ...
  std::string request_id;    // the call's request id (aggregates: the first one)
  std::vector<uint8_t> prev_hash;  // 32 bytes: the hash of the node's previous record
  std::vector<uint8_t> hash;       // 32 bytes: SHA-256 of this record's canonical encoding
};

class AuditStore {
 public:
  virtual ~AuditStore() = default;

  // Appends `records` in one transaction, in order; their ids are assigned in append
  // order, so a reader paging by id never sees a later append before an earlier one.
  // ALREADY_EXISTS when a (node, seq) is already stored (then nothing is written).
  // INVALID_ARGUMENT: empty node, seq < 1, kind not admin/data, calls < 1, a hash that
  // is not 32 bytes.
  virtual absl::Status AppendAudit(std::span<const AuditRecord> records) = 0;

  // Records with id > after_id, ascending by id, at most `limit` (1..10000, else
  // INVALID_ARGUMENT); only `node`'s when it is not empty.
  virtual absl::StatusOr<std::vector<AuditRecord>> ReadAudit(int64_t after_id, int limit,
                                                             const std::string& node) = 0;

  // The last `count` records (1..10000), ascending by id; only `node`'s when not empty.
  virtual absl::StatusOr<std::vector<AuditRecord>> TailAudit(int count,
                                                             const std::string& node) = 0;

  // The node's record with the highest seq, to resume its chain after a restart.
  // NOT_FOUND when the node has written none.
  virtual absl::StatusOr<AuditRecord> LastAudit(const std::string& node) = 0;

  // Deletes every record with at_ms < before_ms (retention); how many were deleted.
  virtual absl::StatusOr<int64_t> DeleteAuditBefore(int64_t before_ms) = 0;
};

}  // namespace kms::store
