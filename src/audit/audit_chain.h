// The audit log's hash chain: how a record is encoded for hashing, how a node's chain is
// extended, and how a chain is checked. Pure functions and one small verifier; used by
// kmsd's writer (audit_log.h) and by kmsctl (`kmsctl audit verify` checks the chain on
// the auditor's machine, so the auditor does not have to trust kmsd's answer).
//
// One chain per node (kmsd replica), not one global chain. Why: a global chain needs a
// cluster-wide lock (or a leader) around every append, so one slow or partitioned
// replica would stall every replica's audit, and the audit of a replica cut off from
// the others could not be written at all. A chain per node needs no coordination; each
// node's writer thread owns its chain head, and resumes it after a restart from the
// node's last stored record. Verification is per node; a node's chain proves its own
// order and completeness between its first kept record and its last one.
//
// Canonical encoding of a record, version 1 (all integers big-endian; len32(x) = u32
// byte length of x, then the bytes of x; strings are UTF-8 as stored):
//
//   offset  field
//   0       "kmsd:audit:v1"            13 ASCII bytes, no length prefix
//   13      len32(node)       ‖ node
//           u64(seq)                    1 for a node's first record, then +1 each
//           u64(at_ms)                  Unix milliseconds, two's complement
//           len32(kind)       ‖ kind    "admin" or "data"
//           len32(identity)   ‖ identity
//           len32(operation)  ‖ operation
//           len32(tenant)     ‖ tenant
//           u64(tenants)
//           u64(calls)
//           len32(key_versions) ‖ key_versions
//           len32(outcome)    ‖ outcome
//           len32(request_id) ‖ request_id
//           prev_hash                   32 bytes
//
// hash = SHA-256(encoding) (FIPS 180-4). prev_hash of a node's record seq 1 is 32 zero
// bytes; of seq n > 1, the hash of the node's record n - 1. The store's id is not
// hashed (it orders reads; the chain is (node, seq)).
//
// Retention deletes a node's oldest records; verification then starts at the oldest
// kept record and trusts its prev_hash (it is stored in the record, and reported). What
// a chain cannot show alone: that records at its very end were deleted (compare the
// last seq with the node's live one, or anchor the head hash elsewhere), and a chain
// rewritten in full by someone who can write the store (there is no key: anchor exported
// heads outside the store, docs/operations.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kms/common/status.h"
#include "kms/store/audit_store.h"

namespace kms::audit {

inline constexpr size_t kHashBytes = 32;

std::vector<uint8_t> CanonicalEncoding(const store::AuditRecord& record);
// SHA-256 of CanonicalEncoding(record).
std::vector<uint8_t> RecordHash(const store::AuditRecord& record);

// A node's chain head: the last record's seq and hash (seq 0 and zero hash: empty).
struct ChainHead {
  int64_t seq = 0;
  std::vector<uint8_t> hash = std::vector<uint8_t>(kHashBytes, 0);
};

// Gives `record` the next seq, the head's hash as prev_hash, and its own hash; advances
// `head` to it.
void Seal(store::AuditRecord& record, ChainHead& head);

// Checks records fed in store order (ascending id, any mix of nodes). Not thread-safe.
class ChainVerifier {
 public:
  struct NodeSummary {
    int64_t first_seq = 0;
    int64_t last_seq = 0;
    int64_t records = 0;
    std::vector<uint8_t> first_prev_hash;  // what verification trusted at the start
    std::vector<uint8_t> last_hash;
  };

  // OK, or DATA_LOSS naming the first broken record: "node N record seq S (id I): ..."
  // (its hash does not match its contents; its prev hash does not match the previous
  // record's hash; records are missing before it; a seq 1 whose prev hash is not zero).
  // After an error the verifier keeps the error and refuses further records.
  absl::Status Add(const store::AuditRecord& record);

  const std::map<std::string, NodeSummary>& nodes() const { return nodes_; }
  const absl::Status& status() const { return status_; }

 private:
  std::map<std::string, NodeSummary> nodes_;
  absl::Status status_;
};

}  // namespace kms::audit
