#include "src/audit/audit_chain.h"

#include <openssl/sha.h>

#include "absl/strings/str_cat.h"
#include "src/common/big_endian.h"

namespace kms::audit {
namespace {

void AppendU64(std::vector<uint8_t>& out, uint64_t v) {
  AppendU32(out, static_cast<uint32_t>(v >> 32));
  AppendU32(out, static_cast<uint32_t>(v));
}

std::string Where(const store::AuditRecord& r) {
  return absl::StrCat("node ", r.node, " record seq ", r.seq, " (id ", r.id, ")");
}

}  // namespace

std::vector<uint8_t> CanonicalEncoding(const store::AuditRecord& r) {
  std::vector<uint8_t> out;
  out.reserve(160 + r.node.size() + r.identity.size() + r.operation.size() + r.tenant.size() +
              r.key_versions.size() + r.request_id.size());
  AppendBytes(out, std::string_view("kmsd:audit:v1"));
  AppendLengthPrefixed(out, r.node);
  AppendU64(out, static_cast<uint64_t>(r.seq));
  AppendU64(out, static_cast<uint64_t>(r.at_ms));
  AppendLengthPrefixed(out, r.kind);
  AppendLengthPrefixed(out, r.identity);
  AppendLengthPrefixed(out, r.operation);
  AppendLengthPrefixed(out, r.tenant);
  AppendU64(out, r.tenants);
  AppendU64(out, r.calls);
  AppendLengthPrefixed(out, r.key_versions);
  AppendLengthPrefixed(out, r.outcome);
  AppendLengthPrefixed(out, r.request_id);
  AppendBytes(out, std::span<const uint8_t>(r.prev_hash));
  return out;
}

std::vector<uint8_t> RecordHash(const store::AuditRecord& r) {
  const std::vector<uint8_t> encoding = CanonicalEncoding(r);
  std::vector<uint8_t> hash(kHashBytes);
  SHA256(encoding.data(), encoding.size(), hash.data());
  return hash;
}

void Seal(store::AuditRecord& record, ChainHead& head) {
  record.seq = head.seq + 1;
  record.prev_hash = head.hash;
  record.hash = RecordHash(record);
  head.seq = record.seq;
  head.hash = record.hash;
}

absl::Status ChainVerifier::Add(const store::AuditRecord& r) {
  if (!status_.ok()) return status_;
  if (r.hash != RecordHash(r)) {
    status_ = absl::DataLossError(
        absl::StrCat(Where(r), ": its hash does not match its contents (changed after it was written)"));
    return status_;
  }
  auto it = nodes_.find(r.node);
  if (it == nodes_.end()) {
    if (r.seq == 1 && r.prev_hash != std::vector<uint8_t>(kHashBytes, 0)) {
      status_ = absl::DataLossError(
          absl::StrCat(Where(r), ": the first record of a chain must have a zero prev hash"));
      return status_;
    }
    nodes_.emplace(r.node, NodeSummary{.first_seq = r.seq,
                                       .last_seq = r.seq,
                                       .records = 1,
                                       .first_prev_hash = r.prev_hash,
                                       .last_hash = r.hash});
    return absl::OkStatus();
  }
  NodeSummary& n = it->second;
  if (r.seq != n.last_seq + 1) {
    status_ = absl::DataLossError(absl::StrCat(Where(r), ": follows seq ", n.last_seq,
                                               " (records missing or out of order)"));
    return status_;
  }
  if (r.prev_hash != n.last_hash) {
    status_ = absl::DataLossError(absl::StrCat(
        Where(r), ": its prev hash does not match the hash of seq ", n.last_seq,
        " (that record or this one was changed)"));
    return status_;
  }
  n.last_seq = r.seq;
  n.last_hash = r.hash;
  ++n.records;
  return absl::OkStatus();
}

}  // namespace kms::audit
