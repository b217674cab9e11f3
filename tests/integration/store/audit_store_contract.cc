// The AuditStore contract (include/kms/store/audit_store.h): see store_contract.h. The
// store keeps records as given; what the hashes mean is src/audit's (unit-tested there).
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store::contract {
namespace {

using ::absl::StatusCode;

AuditRecord Record(const std::string& node, int64_t seq, int64_t at_ms) {
  AuditRecord r;
  r.node = node;
  r.seq = seq;
  r.at_ms = at_ms;
  r.kind = seq % 2 == 0 ? "data" : "admin";
  r.identity = "spiffe://example.org/billing";
  r.operation = seq % 2 == 0 ? "Encrypt" : "CreateTenant";
  r.tenant = seq % 2 == 0 ? "" : absl::StrCat("tenant-", seq);
  r.tenants = seq % 2 == 0 ? 1000 : 1;
  r.calls = seq % 2 == 0 ? 123456 : 1;
  r.key_versions = "dek:1,2";
  r.outcome = "OK";
  r.request_id = absl::StrCat("req-", seq);
  r.prev_hash = TestBlob(static_cast<uint8_t>(seq), 32);
  r.hash = TestBlob(static_cast<uint8_t>(seq + 1), 32);
  return r;
}

void ExpectSame(const AuditRecord& a, const AuditRecord& b) {
  EXPECT_EQ(a.node, b.node);
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.at_ms, b.at_ms);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.identity, b.identity);
  EXPECT_EQ(a.operation, b.operation);
  EXPECT_EQ(a.tenant, b.tenant);
  EXPECT_EQ(a.tenants, b.tenants);
  EXPECT_EQ(a.calls, b.calls);
  EXPECT_EQ(a.key_versions, b.key_versions);
  EXPECT_EQ(a.outcome, b.outcome);
  EXPECT_EQ(a.request_id, b.request_id);
  EXPECT_EQ(a.prev_hash, b.prev_hash);
  EXPECT_EQ(a.hash, b.hash);
}

TEST_P(AuditStoreContractTest, EmptyStoreHasNoRecords) {
  auto read = store().ReadAudit(0, 10, "");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->empty());
  EXPECT_EQ(store().LastAudit("node-a").status().code(), StatusCode::kNotFound);
}

TEST_P(AuditStoreContractTest, AppendedBatchReadsBackInOrderWithIncreasingIds) {
  std::vector<AuditRecord> batch = {Record("node-a", 1, 1000), Record("node-a", 2, 2000),
                                    Record("node-a", 3, 3000)};
  KMS_ASSERT_OK(store().AppendAudit(batch));
  auto read = store().ReadAudit(0, 10, "");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 3u);
  for (size_t i = 0; i < 3; ++i) ExpectSame((*read)[i], batch[i]);
  EXPECT_GT((*read)[0].id, 0);
  EXPECT_LT((*read)[0].id, (*read)[1].id);
  EXPECT_LT((*read)[1].id, (*read)[2].id);

  auto after = store().ReadAudit((*read)[0].id, 1, "");
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].seq, 2);
}

TEST_P(AuditStoreContractTest, ABatchWithAnExistingSequenceWritesNothing) {
  KMS_ASSERT_OK(store().AppendAudit(std::vector<AuditRecord>{Record("node-a", 1, 1000)}));
  std::vector<AuditRecord> batch = {Record("node-a", 2, 2000), Record("node-a", 1, 3000)};
  EXPECT_EQ(store().AppendAudit(batch).code(), StatusCode::kAlreadyExists);
  auto read = store().ReadAudit(0, 10, "");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), 1u);
}

TEST_P(AuditStoreContractTest, MalformedRecordsAreRefused) {
  AuditRecord no_node = Record("node-a", 1, 1);
  no_node.node = "";
  AuditRecord short_hash = Record("node-a", 1, 1);
  short_hash.hash.resize(31);
  AuditRecord bad_kind = Record("node-a", 1, 1);
  bad_kind.kind = "other";
  AuditRecord zero_seq = Record("node-a", 0, 1);
  for (const AuditRecord& r : {no_node, short_hash, bad_kind, zero_seq}) {
    EXPECT_EQ(store().AppendAudit(std::vector<AuditRecord>{r}).code(),
              StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(store().ReadAudit(0, 0, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store().TailAudit(10001, "").status().code(), StatusCode::kInvalidArgument);
}

TEST_P(AuditStoreContractTest, ChainsOfTwoNodesAreReadTogetherOrApart) {
  KMS_ASSERT_OK(store().AppendAudit(std::vector<AuditRecord>{Record("node-a", 1, 10)}));
  KMS_ASSERT_OK(store().AppendAudit(std::vector<AuditRecord>{Record("node-b", 1, 20)}));
  KMS_ASSERT_OK(store().AppendAudit(std::vector<AuditRecord>{Record("node-a", 2, 30)}));
  auto all = store().ReadAudit(0, 10, "");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[1].node, "node-b");
  auto a = store().ReadAudit(0, 10, "node-a");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_EQ(a->size(), 2u);
  EXPECT_EQ((*a)[1].seq, 2);

  auto last = store().LastAudit("node-a");
  ASSERT_TRUE(last.ok()) << last.status();
  ExpectSame(*last, Record("node-a", 2, 30));
  auto last_b = store().LastAudit("node-b");
  ASSERT_TRUE(last_b.ok()) << last_b.status();
  EXPECT_EQ(last_b->seq, 1);
}

TEST_P(AuditStoreContractTest, TailGivesTheLastRecordsOldestFirst) {
  std::vector<AuditRecord> batch;
  for (int64_t seq = 1; seq <= 5; ++seq) batch.push_back(Record("node-a", seq, seq * 100));
  KMS_ASSERT_OK(store().AppendAudit(batch));
  KMS_ASSERT_OK(store().AppendAudit(std::vector<AuditRecord>{Record("node-b", 1, 600)}));
  auto tail = store().TailAudit(2, "node-a");
  ASSERT_TRUE(tail.ok()) << tail.status();
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ((*tail)[0].seq, 4);
  EXPECT_EQ((*tail)[1].seq, 5);
  auto tail_all = store().TailAudit(1, "");
  ASSERT_TRUE(tail_all.ok()) << tail_all.status();
  ASSERT_EQ(tail_all->size(), 1u);
  EXPECT_EQ((*tail_all)[0].node, "node-b");
}

TEST_P(AuditStoreContractTest, RetentionDeletesOnlyOlderRecordsAndLeavesTheEpoch) {
  const int64_t epoch = Epoch(keys());
  std::vector<AuditRecord> batch;
  for (int64_t seq = 1; seq <= 4; ++seq) batch.push_back(Record("node-a", seq, seq * 1000));
  KMS_ASSERT_OK(store().AppendAudit(batch));
  auto deleted = store().DeleteAuditBefore(3000);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 2);
  auto read = store().ReadAudit(0, 10, "");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), 2u);
  // The oldest kept record still carries its prev hash: verification starts there.
  ExpectSame((*read)[0], batch[2]);
  EXPECT_EQ(Epoch(keys()), epoch);
  // The chain resumes after the last record even when older ones are gone.
  auto last = store().LastAudit("node-a");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->seq, 4);
}

}  // namespace
}  // namespace kms::store::contract
