// The backend seams behind a BackendExecutor (backend_executor.h): GuardedHsm (hsm::Hsm)
// and GuardedKeyStore (store::KeyStore) forward every call to the real backend through
// the backend's executor, so every user of the seam (KeyManager's miss path, the admin
// RPCs, the scheduler's jobs, the health probe, and any RPC added later) gets a pool of
// its own, a per-call deadline and the fail-fast circuit without code of its own. The
// server wires these in place of the real backends.
//
// Arguments are copied into the call (it may outlive the caller's wait); key material
// (Seal's plaintext) is copied into a SecretBytes, wiped when the call ends.
//
// Thread-safe (as the backends they wrap). A seam method added to the store or the HSM
// needs its forwarding line here.
#pragma once

#include <memory>

#include "kms/hsm/hsm.h"
#include "kms/store/audit_store.h"
#include "kms/store/key_store.h"
#include "src/keys/backend_executor.h"

namespace kms::keys {

class GuardedHsm final : public hsm::Hsm {
 public:
  // `inner` must outlive this; `executor` too.
  GuardedHsm(hsm::Hsm* inner, BackendExecutor* executor) : inner_(inner), exec_(executor) {}

  hsm::MasterKeyKind master_key_kind() const override { return inner_->master_key_kind(); }
  absl::StatusOr<std::vector<uint8_t>> CreateKek(uint32_t kek_version) override;
  absl::Status LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) override;
  bool HasKek(uint32_t kek_version) const override { return inner_->HasKek(kek_version); }
  absl::Status UnloadKek(uint32_t kek_version) override;
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version,
                                            std::span<const uint8_t> plaintext,
                                            std::span<const uint8_t> aad) override;
  absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad) override;
  absl::Status Ping() override;
  std::string DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const override {
    return inner_->DescribeWrappedKek(wrapped_kek);
  }

 private:
  hsm::Hsm* const inner_;
  BackendExecutor* const exec_;
};

// Also the AuditStore of `inner` when it has one (the audit log's writes get the same
// deadlines); without one, the audit calls fail FAILED_PRECONDITION.
class GuardedKeyStore final : public store::KeyStore, public store::AuditStore {
 public:
  GuardedKeyStore(store::KeyStore* inner, BackendExecutor* executor)
      : inner_(inner), audit_(dynamic_cast<store::AuditStore*>(inner)), exec_(executor) {}
  bool has_audit() const { return audit_ != nullptr; }

  // KekStore
  absl::StatusOr<std::vector<store::KekRecord>> ListKeks() override;
  absl::Status InsertKek(const store::KekRecord& kek) override;
  absl::Status UpdateKekState(uint32_t version, store::KekState from, store::KekState to) override;
  absl::StatusOr<std::vector<store::KekUsage>> ListKekUsage() override;
  absl::StatusOr<std::vector<store::KekUsage>> ListKekUsageExcept(uint32_t kek_version) override;
  absl::Status RetireKek(uint32_t version, int64_t retired_at) override;
  absl::StatusOr<std::vector<uint32_t>> DestroyRetiredKeks(int64_t retired_before) override;
  // TenantKeyStore
  absl::Status CreateTenant(const store::TenantRecord& tenant,
                            const store::DekRecord& first_dek) override;
  absl::StatusOr<std::vector<store::CreateTenantResult>> CreateTenants(
      std::span<const store::NewTenant> tenants) override;
  absl::StatusOr<store::TenantRecord> GetTenant(const std::string& tenant_id) override;
  absl::StatusOr<store::TenantPage> ListTenants(const std::string& after, int limit) override;
  absl::StatusOr<uint64_t> CountTenants() override;
  absl::StatusOr<int64_t> OldestPrimaryDekCreatedAt() override;
  absl::StatusOr<store::TenantDek> GetTenantDek(const std::string& tenant_id,
                                                uint32_t version) override;
  absl::StatusOr<std::vector<store::DekRecord>> ListDeks(const std::string& tenant_id) override;
  absl::Status RotateDek(const std::string& tenant_id, int64_t expected_row_version,
                         const store::DekRecord& new_dek) override;
  absl::Status SetTenantState(const std::string& tenant_id, int64_t expected_row_version,
                              store::TenantState state) override;
  absl::Status SetMinDecryptVersion(const std::string& tenant_id, int64_t expected_row_version,
                                    uint32_t min_version) override;
  absl::Status AddEncryptions(const std::string& tenant_id, uint32_t version,
                              uint64_t count) override;
  absl::Status AddEncryptionsBatch(std::span<const store::EncryptionCount> counts) override;
  absl::StatusOr<store::DekPage> ListDeksWrappedUnder(uint32_t kek_version,
                                                      const store::DekKey& after,
                                                      int limit) override;
  absl::StatusOr<std::vector<store::DekRewrapResult>> UpdateDekWrappings(
      std::span<const store::DekRewrap> rewraps) override;
  absl::StatusOr<store::DueTenantPage> ListTenantsDueForRotation(
      int64_t now, int64_t default_period_seconds, const std::string& after, int limit) override;
  absl::Status SetTenantRotationPeriod(const std::string& tenant_id,
                                       int64_t period_seconds) override;
  absl::StatusOr<int64_t> GetTenantRotationPeriod(const std::string& tenant_id) override;
  // JwtKeyStore
  absl::StatusOr<std::vector<store::JwtKeyRecord>> ListJwtKeys() override;
  absl::Status InsertFirstJwtKey(const store::JwtKeyRecord& key) override;
  absl::Status RotateJwtKey(const std::string& current_kid, int64_t expected_row_version,
                            int64_t current_retire_at, const store::JwtKeyRecord& next) override;
  absl::Status UpdateJwtKeyWrapping(const std::string& kid, int64_t expected_row_version,
                                    uint32_t kek_version,
                                    const std::vector<uint8_t>& wrapped_private) override;
  // RotationJobStore
  absl::StatusOr<store::RotationJobRecord> CreateRotationJob(
      const store::RotationJobRecord& job) override;
  absl::StatusOr<store::RotationJobRecord> GetRotationJob(int64_t id) override;
  absl::StatusOr<store::RotationJobRecord> GetRunningRotationJob(
      store::RotationJobKind kind) override;
  absl::StatusOr<std::vector<store::RotationJobRecord>> ListRotationJobs(int64_t before_id,
                                                                        int limit) override;
  absl::Status UpdateRotationJobProgress(int64_t id, int64_t expected_row_version,
                                         const store::RotationJobProgress& progress,
                                         int64_t updated_at) override;
  absl::Status FinishRotationJob(int64_t id, int64_t expected_row_version,
                                 store::RotationJobState state,
                                 const store::RotationJobProgress& progress,
                                 const std::string& error, int64_t finished_at) override;
  // StoreHealth
  std::string_view backend_name() const override { return inner_->backend_name(); }
  absl::StatusOr<int64_t> GetEpoch() override;
  absl::Status Ping() override;
  // AuditStore
  absl::Status AppendAudit(std::span<const store::AuditRecord> records) override;
  absl::StatusOr<std::vector<store::AuditRecord>> ReadAudit(int64_t after_id, int limit,
                                                            const std::string& node) override;
  absl::StatusOr<std::vector<store::AuditRecord>> TailAudit(int count,
                                                            const std::string& node) override;
  absl::StatusOr<store::AuditRecord> LastAudit(const std::string& node) override;
  absl::StatusOr<int64_t> DeleteAuditBefore(int64_t before_ms) override;

 private:
  store::KeyStore* const inner_;
  store::AuditStore* const audit_;
  BackendExecutor* const exec_;
};

}  // namespace kms::keys
