// The audit chain: the canonical encoding byte for byte, sealing, and verification that
// names the first broken record.
#include "src/audit/audit_chain.h"

#include <string>

#include "gtest/gtest.h"

namespace kms::audit {
namespace {

store::AuditRecord Admin(const std::string& node, const std::string& tenant) {
  store::AuditRecord r;
  r.node = node;
  r.at_ms = 1700000000123;
  r.kind = "admin";
  r.identity = "spiffe://example.org/ops";
  r.operation = "CreateTenant";
  r.tenant = tenant;
  r.tenants = 1;
  r.calls = 1;
  r.key_versions = "dek:1";
  r.outcome = "OK";
  r.request_id = "req-1";
  return r;
}

std::vector<store::AuditRecord> Chain(const std::string& node, int n) {
  ChainHead head;
  std::vector<store::AuditRecord> out;
  for (int i = 0; i < n; ++i) {
    store::AuditRecord r = Admin(node, "t" + std::to_string(i));
    Seal(r, head);
    r.id = i + 1;
    out.push_back(r);
  }
  return out;
}

TEST(AuditChainTest, CanonicalEncodingIsTheDocumentedLayout) {
  store::AuditRecord r;
  r.node = "n";
  r.seq = 2;
  r.at_ms = 258;
  r.kind = "data";
  r.identity = "i";
  r.operation = "Encrypt";
  r.tenant = "";
  r.tenants = 3;
  r.calls = 4;
  r.key_versions = "dek:1";
  r.outcome = "OK";
  r.request_id = "r";
  r.prev_hash = std::vector<uint8_t>(32, 0xab);
  std::vector<uint8_t> want;
  auto bytes = [&](std::string_view s) { want.insert(want.end(), s.begin(), s.end()); };
  auto u32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) want.push_back(static_cast<uint8_t>(v >> s));
  };
  auto u64 = [&](uint64_t v) {
    u32(static_cast<uint32_t>(v >> 32));
    u32(static_cast<uint32_t>(v));
  };
  auto str = [&](std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    bytes(s);
  };
  bytes("kmsd:audit:v1");
  str("n");
  u64(2);
  u64(258);
  str("data");
  str("i");
  str("Encrypt");
  str("");
  u64(3);
  u64(4);
  str("dek:1");
  str("OK");
  str("r");
  want.insert(want.end(), 32, 0xab);
  EXPECT_EQ(CanonicalEncoding(r), want);
  EXPECT_EQ(RecordHash(r).size(), 32u);
}

TEST(AuditChainTest, SealLinksEachRecordToThePreviousOne) {
  std::vector<store::AuditRecord> chain = Chain("a", 3);
  EXPECT_EQ(chain[0].seq, 1);
  EXPECT_EQ(chain[0].prev_hash, std::vector<uint8_t>(32, 0));
  EXPECT_EQ(chain[1].prev_hash, chain[0].hash);
  EXPECT_EQ(chain[2].prev_hash, chain[1].hash);
  EXPECT_EQ(chain[2].seq, 3);
}

TEST(AuditChainTest, AnIntactChainOfTwoNodesVerifies) {
  std::vector<store::AuditRecord> a = Chain("a", 3), b = Chain("b", 2);
  ChainVerifier v;
  for (const auto* r : {&a[0], &b[0], &a[1], &b[1], &a[2]}) EXPECT_TRUE(v.Add(*r).ok());
  EXPECT_EQ(v.nodes().at("a").records, 3);
  EXPECT_EQ(v.nodes().at("b").last_seq, 2);
}

TEST(AuditChainTest, AChangedFieldNamesThatRecord) {
  std::vector<store::AuditRecord> chain = Chain("a", 4);
  chain[2].tenant = "someone-else";
  ChainVerifier v;
  EXPECT_TRUE(v.Add(chain[0]).ok());
  EXPECT_TRUE(v.Add(chain[1]).ok());
  absl::Status st = v.Add(chain[2]);
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("node a record seq 3 (id 3)"), std::string_view::npos) << st;
  EXPECT_FALSE(v.Add(chain[3]).ok());  // the first error sticks
}

TEST(AuditChainTest, ARecordRehashedInPlaceBreaksTheNextLink) {
  std::vector<store::AuditRecord> chain = Chain("a", 3);
  chain[1].outcome = "PERMISSION_DENIED";
  chain[1].hash = RecordHash(chain[1]);
  ChainVerifier v;
  EXPECT_TRUE(v.Add(chain[0]).ok());
  EXPECT_TRUE(v.Add(chain[1]).ok());
  absl::Status st = v.Add(chain[2]);
  EXPECT_NE(st.message().find("seq 3"), std::string_view::npos) << st;
  EXPECT_NE(st.message().find("prev hash"), std::string_view::npos) << st;
}

TEST(AuditChainTest, ADeletedRecordIsNamedByItsSuccessor) {
  std::vector<store::AuditRecord> chain = Chain("a", 3);
  ChainVerifier v;
  EXPECT_TRUE(v.Add(chain[0]).ok());
  absl::Status st = v.Add(chain[2]);
  EXPECT_NE(st.message().find("seq 3 (id 3): follows seq 1"), std::string_view::npos) << st;
}

TEST(AuditChainTest, VerificationStartsAtTheOldestKeptRecordAfterRetention) {
  std::vector<store::AuditRecord> chain = Chain("a", 5);
  ChainVerifier v;
  for (size_t i = 2; i < chain.size(); ++i) EXPECT_TRUE(v.Add(chain[i]).ok());
  EXPECT_EQ(v.nodes().at("a").first_seq, 3);
  EXPECT_EQ(v.nodes().at("a").first_prev_hash, chain[1].hash);
}

TEST(AuditChainTest, AFirstRecordWithANonZeroPrevHashIsRefused) {
  std::vector<store::AuditRecord> chain = Chain("a", 1);
  chain[0].prev_hash[0] = 1;
  chain[0].hash = RecordHash(chain[0]);
  ChainVerifier v;
  EXPECT_EQ(v.Add(chain[0]).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kms::audit
