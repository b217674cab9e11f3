// AuditLog: aggregation of data-plane calls, admin records durable before RecordAdmin
// returns, the chain resumed after a restart, and the bounded backlog.
#include "src/audit/audit_log.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/audit/fake_audit_store.h"

namespace kms::audit {
namespace {

using testing::FakeAuditStore;

class AuditLogTest : public ::testing::Test {
 protected:
  std::unique_ptr<AuditLog> Make(size_t max_backlog = 1000, bool refuse = true) {
    AuditLogOptions o;
    o.node = "node-1";
    o.max_backlog = max_backlog;
    o.refuse_admin_when_full = refuse;
    o.flush_interval = std::chrono::hours(1);  // tests flush by hand or by admin calls
    o.admin_timeout = std::chrono::milliseconds(300);
    o.now_ms = [this] { return now_ms_.load(); };
    auto log = AuditLog::Create(store_, std::move(o));
    EXPECT_TRUE(log.ok()) << log.status();
    return std::move(*log);
  }
  static AuditEvent Data(std::string_view tenant, std::string_view op = "Encrypt",
                         absl::StatusCode code = absl::StatusCode::kOk) {
    return AuditEvent{.request_id = "req",
                      .identity = "spiffe://example.org/billing",
                      .operation = op,
                      .tenant = tenant,
                      .key_versions = "dek:1",
                      .outcome = code};
  }

  FakeAuditStore store_;
  std::atomic<int64_t> now_ms_{1700000000000};
};

TEST_F(AuditLogTest, DataCallsOfOneSecondBecomeOneRecordWithTheTenantsCounted) {
  auto log = Make();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2500; ++i) log->RecordData(Data("tenant-" + std::to_string(i % 500 + t)));
    });
  }
  for (auto& th : threads) th.join();
  log->RecordData(Data("tenant-1", "Encrypt", absl::StatusCode::kPermissionDenied));
  ASSERT_TRUE(log->FlushNow().ok());
  std::vector<store::AuditRecord> records = store_.records();
  ASSERT_EQ(records.size(), 2u);  // one per outcome
  const store::AuditRecord& ok =
      records[0].outcome == "OK" ? records[0] : records[1];
  EXPECT_EQ(ok.kind, "data");
  EXPECT_EQ(ok.calls, 10000u);
  EXPECT_EQ(ok.tenants, 503u);
  EXPECT_EQ(ok.tenant, "");  // many tenants: none named
  EXPECT_EQ(ok.key_versions, "dek:1");
  EXPECT_EQ(ok.at_ms, 1700000000000);
  const store::AuditRecord& denied = records[0].outcome == "OK" ? records[1] : records[0];
  EXPECT_EQ(denied.outcome, "PERMISSION_DENIED");
  EXPECT_EQ(denied.tenant, "tenant-1");  // one tenant: named
  EXPECT_EQ(log->stats().backlog, 0u);
  EXPECT_EQ(log->stats().written, 2u);
}

TEST_F(AuditLogTest, EachSecondIsItsOwnRecordAndTheChainLinksThem) {
  auto log = Make();
  log->RecordData(Data("a"));
  now_ms_ += 1000;
  log->RecordData(Data("a"));
  ASSERT_TRUE(log->FlushNow().ok());
  std::vector<store::AuditRecord> records = store_.records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].seq, 1);
  EXPECT_EQ(records[1].seq, 2);
  EXPECT_EQ(records[1].prev_hash, records[0].hash);
  ChainVerifier v;
  for (const auto& r : records) EXPECT_TRUE(v.Add(r).ok());
}

TEST_F(AuditLogTest, AnAdminRecordIsStoredBeforeRecordAdminReturns) {
  auto log = Make();
  log->Start();
  AuditEvent e{.request_id = "r1", .identity = "ops", .operation = "ShredTenant",
               .tenant = "acme", .outcome = absl::StatusCode::kOk};
  ASSERT_TRUE(log->RecordAdmin(e).ok());
  std::vector<store::AuditRecord> records = store_.records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].kind, "admin");
  EXPECT_EQ(records[0].operation, "ShredTenant");
  EXPECT_EQ(records[0].tenant, "acme");
  EXPECT_EQ(records[0].request_id, "r1");
  log->Stop();
}

TEST_F(AuditLogTest, ARestartedNodeContinuesItsChain) {
  {
    auto log = Make();
    log->RecordData(Data("a"));
    ASSERT_TRUE(log->FlushNow().ok());
  }
  auto log = Make();
  now_ms_ += 5000;
  log->RecordData(Data("b"));
  ASSERT_TRUE(log->FlushNow().ok());
  std::vector<store::AuditRecord> records = store_.records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].seq, 2);
  EXPECT_EQ(records[1].prev_hash, records[0].hash);
}

TEST_F(AuditLogTest, AFailedAppendIsRetriedWithoutAHoleInTheChain) {
  auto log = Make();
  log->RecordData(Data("a"));
  store_.set_unavailable(true);
  EXPECT_EQ(log->FlushNow().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(log->stats().store_failing);
  EXPECT_TRUE(log->stats().degraded());
  store_.set_unavailable(false);
  now_ms_ += 1000;
  log->RecordData(Data("b"));
  ASSERT_TRUE(log->FlushNow().ok());
  std::vector<store::AuditRecord> records = store_.records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].seq, 1);
  EXPECT_EQ(records[1].seq, 2);
  EXPECT_FALSE(log->stats().degraded());
}

TEST_F(AuditLogTest, AFullBacklogDropsNewDataRecordsAndRefusesAdminCalls) {
  auto log = Make(/*max_backlog=*/2);
  store_.set_unavailable(true);
  log->RecordData(Data("a", "Encrypt"));
  log->RecordData(Data("a", "Decrypt"));
  log->RecordData(Data("a", "Encrypt"));  // an existing aggregate still counts
  EXPECT_EQ(log->stats().dropped, 0u);
  log->RecordData(Data("a", "SignJwt"));  // would need a third record
  EXPECT_EQ(log->stats().dropped, 1u);
  EXPECT_TRUE(log->stats().full);
  EXPECT_TRUE(log->stats().degraded());
  EXPECT_EQ(log->AdmitAdmin().code(), absl::StatusCode::kUnavailable);

  store_.set_unavailable(false);
  ASSERT_TRUE(log->FlushNow().ok());
  EXPECT_FALSE(log->stats().full);
  EXPECT_TRUE(log->AdmitAdmin().ok());
  ASSERT_EQ(store_.records().size(), 2u);
}

TEST_F(AuditLogTest, AFullBacklogAdmitsAdminCallsWhenConfiguredTo) {
  auto log = Make(/*max_backlog=*/1, /*refuse=*/false);
  log->RecordData(Data("a"));
  EXPECT_TRUE(log->stats().full);
  EXPECT_TRUE(log->AdmitAdmin().ok());
}

TEST_F(AuditLogTest, AnAdminRecordTheStoreCannotTakeInTimeIsReportedAndKept) {
  auto log = Make();
  store_.set_unavailable(true);
  log->Start();
  AuditEvent e{.request_id = "r", .identity = "ops", .operation = "RotateKek",
               .tenant = "*", .outcome = absl::StatusCode::kOk};
  EXPECT_EQ(log->RecordAdmin(e).code(), absl::StatusCode::kUnavailable);
  store_.set_unavailable(false);
  log->Stop();  // the last flush writes it
  std::vector<store::AuditRecord> records = store_.records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].operation, "RotateKek");
}

}  // namespace
}  // namespace kms::audit
