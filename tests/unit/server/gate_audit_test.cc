// CallGate and the audit: the gate notes its decision in the call's CallRecord, the door
// reports the outcome once, and the AuditSink gets one event per decided call: changes
// that succeeded go to RecordAdmin (durable), everything else to RecordData; changes are
// refused while the sink cannot take them.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kms/audit/audit_sink.h"
#include "src/authz/policy.h"
#include "src/server/gate/call_gate.h"
#include "src/server/gate/call_record.h"

namespace kms::server {
namespace {

struct Recorded {
  bool admin;
  std::string identity, operation, tenant, key_versions, request_id;
  absl::StatusCode outcome;
};

class RecordingSink final : public audit::AuditSink {
 public:
  absl::Status AdmitAdmin() override { return admit; }
  void RecordData(const audit::AuditEvent& e) override { Add(false, e); }
  absl::Status RecordAdmin(const audit::AuditEvent& e) override {
    Add(true, e);
    return record_admin;
  }
  void Add(bool admin, const audit::AuditEvent& e) {
    events.push_back({admin, std::string(e.identity), std::string(e.operation),
                      std::string(e.tenant), std::string(e.key_versions),
                      std::string(e.request_id), e.outcome});
  }
  absl::Status admit;
  absl::Status record_admin;
  std::vector<Recorded> events;
};

constexpr std::string_view kPolicy = R"({
  "version": 1,
  "identities": [
    {"identity": "spiffe://kmsd.dev/billing", "operations": ["encrypt"], "tenants": ["acme"]},
    {"identity": "spiffe://kmsd.dev/ops", "operations": ["*"], "tenants": ["*"]}
  ]
})";

class GateAuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto policy = authz::PolicyAuthorizer::FromJson(kPolicy);
    ASSERT_TRUE(policy.ok()) << policy.status();
    policy_ = std::move(*policy);
    gate_ = std::make_unique<CallGate>(*policy_, nullptr, &sink_);
  }
  // What a door does: a scope, the gate's decision, the domain's status, one report.
  absl::Status Call(std::string_view method, std::string_view identity, authz::Operation op,
                    std::string_view tenant, absl::Status domain, std::string keys = "") {
    CallRecord call{.request_id = "req-1", .method = method};
    absl::Status status;
    {
      CallScope scope(&call);
      EXPECT_EQ(CallScope::Current(), &call);
      status = gate_->Admit(identity, op, tenant);
      if (status.ok()) status = domain;
      if (status.ok()) call.key_versions = std::move(keys);
      if (call.gate != nullptr) status = call.gate->Report(call, status);
    }
    EXPECT_EQ(CallScope::Current(), nullptr);
    return status;
  }

  std::unique_ptr<authz::PolicyAuthorizer> policy_;
  RecordingSink sink_;
  std::unique_ptr<CallGate> gate_;
};

TEST_F(GateAuditTest, AnAdmittedDataCallIsOneAggregatedEventWithItsOutcome) {
  EXPECT_TRUE(Call("Encrypt", "spiffe://kmsd.dev/billing", authz::Operation::kEncrypt, "acme",
                   absl::OkStatus(), "dek:3")
                  .ok());
  ASSERT_EQ(sink_.events.size(), 1u);
  const Recorded& e = sink_.events[0];
  EXPECT_FALSE(e.admin);
  EXPECT_EQ(e.identity, "spiffe://kmsd.dev/billing");
  EXPECT_EQ(e.operation, "Encrypt");
  EXPECT_EQ(e.tenant, "acme");
  EXPECT_EQ(e.key_versions, "dek:3");
  EXPECT_EQ(e.request_id, "req-1");
  EXPECT_EQ(e.outcome, absl::StatusCode::kOk);
}

TEST_F(GateAuditTest, ADenialIsRecordedWithItsCode) {
  EXPECT_TRUE(absl::IsPermissionDenied(Call("Encrypt", "spiffe://kmsd.dev/billing",
                                            authz::Operation::kEncrypt, "globex",
                                            absl::OkStatus())));
  ASSERT_EQ(sink_.events.size(), 1u);
  EXPECT_EQ(sink_.events[0].tenant, "globex");
  EXPECT_EQ(sink_.events[0].outcome, absl::StatusCode::kPermissionDenied);
}

TEST_F(GateAuditTest, ASuccessfulChangeIsWrittenDurablyAndAFailedOneIsAggregated) {
  EXPECT_TRUE(Call("ShredTenant", "spiffe://kmsd.dev/ops", authz::Operation::kShred, "acme",
                   absl::OkStatus())
                  .ok());
  EXPECT_TRUE(absl::IsNotFound(Call("ShredTenant", "spiffe://kmsd.dev/ops",
                                    authz::Operation::kShred, "nope",
                                    absl::NotFoundError("tenant nope not found"))));
  ASSERT_EQ(sink_.events.size(), 2u);
  EXPECT_TRUE(sink_.events[0].admin);
  EXPECT_FALSE(sink_.events[1].admin);
  EXPECT_EQ(sink_.events[1].outcome, absl::StatusCode::kNotFound);
}

TEST_F(GateAuditTest, ReadsOfTheAdminPlaneAreAggregated) {
  EXPECT_TRUE(Call("GetStatus", "spiffe://kmsd.dev/ops", authz::Operation::kGetStatus, "",
                   absl::OkStatus())
                  .ok());
  ASSERT_EQ(sink_.events.size(), 1u);
  EXPECT_FALSE(sink_.events[0].admin);
}

TEST_F(GateAuditTest, AChangeIsRefusedWhileTheAuditLogCannotTakeIt) {
  sink_.admit = absl::UnavailableError("audit backlog full");
  EXPECT_TRUE(absl::IsUnavailable(gate_->Admit("spiffe://kmsd.dev/ops",
                                               authz::Operation::kRotate,
                                               CallGate::kEveryTenant)));
  // Reads and data-plane calls still pass.
  EXPECT_TRUE(gate_->Admit("spiffe://kmsd.dev/ops", authz::Operation::kGetStatus, "").ok());
  EXPECT_TRUE(gate_->Admit("spiffe://kmsd.dev/billing", authz::Operation::kEncrypt, "acme").ok());
}

TEST_F(GateAuditTest, AChangeWhoseRecordIsNotStoredInTimeIsNotAcknowledged) {
  sink_.record_admin = absl::UnavailableError("not stored yet");
  EXPECT_TRUE(absl::IsUnavailable(Call("CreateTenant", "spiffe://kmsd.dev/ops",
                                       authz::Operation::kCreateTenant, "acme",
                                       absl::OkStatus())));
}

TEST_F(GateAuditTest, WithoutAScopeTheGateStillDecidesAndRecordsNothing) {
  EXPECT_TRUE(gate_->Admit("spiffe://kmsd.dev/billing", authz::Operation::kEncrypt, "acme").ok());
  EXPECT_TRUE(sink_.events.empty());
}

}  // namespace
}  // namespace kms::server
