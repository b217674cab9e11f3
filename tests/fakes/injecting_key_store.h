// InjectingKeyStore: wraps a real KeyStore, counts the reads the data path makes, and
// fails every call with UNAVAILABLE while told to (the database is down). It forwards
// every method of every store seam (include/kms/store/key_store.h), grouped per seam.
#pragma once

#include <atomic>
#include <functional>
#include <utility>
#include <span>
#include <string>
#include <vector>

#include "kms/store/key_store.h"

namespace kms::testing {

class InjectingKeyStore : public store::KeyStore {
 public:
  explicit InjectingKeyStore(store::KeyStore* inner) : inner_(inner) {}

  void SetUnavailable(bool down) { down_ = down; }
  // Runs right before the next InsertKek reaches the inner store (a racing replica).
  void BeforeNextInsertKek(std::function<void()> hook) { before_insert_kek_ = std::move(hook); }
  // The next InsertKek fails with this status without reaching the inner store.
  void FailNextInsertKek(absl::Status status) { fail_insert_kek_ = std::move(status); }
  uint64_t tenant_dek_reads() const { return tenant_dek_reads_; }

  // --- KekStore
  absl::StatusOr<std::vector<store::KekRecord>> ListKeks() override {
    if (down_) return Down();
    return inner_->ListKeks();
  }
  absl::Status InsertKek(const store::KekRecord& kek) override {
    if (down_) return Down();
    if (before_insert_kek_) std::exchange(before_insert_kek_, nullptr)();
    if (!fail_insert_kek_.ok()) return std::exchange(fail_insert_kek_, absl::OkStatus());
    return inner_->InsertKek(kek);
  }
  absl::Status UpdateKekState(uint32_t v, store::KekState from, store::KekState to) override {
    if (down_) return Down();
    return inner_->UpdateKekState(v, from, to);
  }
  absl::StatusOr<std::vector<store::KekUsage>> ListKekUsage() override {
    if (down_) return Down();
    return inner_->ListKekUsage();
  }
  absl::StatusOr<std::vector<store::KekUsage>> ListKekUsageExcept(uint32_t v) override {
    if (down_) return Down();
    return inner_->ListKekUsageExcept(v);
  }
  absl::Status RetireKek(uint32_t v, int64_t retired_at) override {
    if (down_) return Down();
    return inner_->RetireKek(v, retired_at);
  }
  absl::StatusOr<std::vector<uint32_t>> DestroyRetiredKeks(int64_t retired_before) override {
    if (down_) return Down();
    return inner_->DestroyRetiredKeks(retired_before);
  }

  // --- TenantKeyStore
  absl::Status CreateTenant(const store::TenantRecord& t, const store::DekRecord& d) override {
    if (down_) return Down();
    return inner_->CreateTenant(t, d);
  }
  absl::StatusOr<std::vector<store::CreateTenantResult>> CreateTenants(
      std::span<const store::NewTenant> tenants) override {
    if (down_) return Down();
    return inner_->CreateTenants(tenants);
  }
  absl::StatusOr<store::TenantRecord> GetTenant(const std::string& id) override {
    if (down_) return Down();
    return inner_->GetTenant(id);
  }
  absl::StatusOr<store::TenantPage> ListTenants(const std::string& after, int limit) override {
    if (down_) return Down();
    return inner_->ListTenants(after, limit);
  }
  absl::StatusOr<uint64_t> CountTenants() override {
    if (down_) return Down();
    return inner_->CountTenants();
  }
  absl::StatusOr<int64_t> OldestPrimaryDekCreatedAt() override {
    if (down_) return Down();
    return inner_->OldestPrimaryDekCreatedAt();
  }
  absl::StatusOr<store::TenantDek> GetTenantDek(const std::string& id, uint32_t version) override {
    ++tenant_dek_reads_;
    if (down_) return Down();
    return inner_->GetTenantDek(id, version);
  }
  absl::StatusOr<std::vector<store::DekRecord>> ListDeks(const std::string& id) override {
    if (down_) return Down();
    return inner_->ListDeks(id);
  }
  absl::Status RotateDek(const std::string& id, int64_t expected, const store::DekRecord& d) override {
    if (down_) return Down();
    return inner_->RotateDek(id, expected, d);
  }
  absl::Status SetTenantState(const std::string& id, int64_t expected,
                              store::TenantState state) override {
    if (down_) return Down();
    return inner_->SetTenantState(id, expected, state);
  }
  absl::Status SetMinDecryptVersion(const std::string& id, int64_t expected,
                                    uint32_t min_version) override {
    if (down_) return Down();
    return inner_->SetMinDecryptVersion(id, expected, min_version);
  }
  absl::Status AddEncryptions(const std::string& id, uint32_t v, uint64_t n) override {
    if (down_) return Down();
    return inner_->AddEncryptions(id, v, n);
  }
  absl::Status AddEncryptionsBatch(std::span<const store::EncryptionCount> counts) override {
    if (down_) return Down();
    return inner_->AddEncryptionsBatch(counts);
  }
  absl::StatusOr<store::DekPage> ListDeksWrappedUnder(uint32_t kek_version,
                                                      const store::DekKey& after,
                                                      int limit) override {
    if (down_) return Down();
    return inner_->ListDeksWrappedUnder(kek_version, after, limit);
  }
  absl::StatusOr<std::vector<store::DekRewrapResult>> UpdateDekWrappings(
      std::span<const store::DekRewrap> rewraps) override {
    if (down_) return Down();
    return inner_->UpdateDekWrappings(rewraps);
  }
  absl::StatusOr<store::DueTenantPage> ListTenantsDueForRotation(int64_t now,
                                                                 int64_t default_period,
                                                                 const std::string& after,
                                                                 int limit) override {
    if (down_) return Down();
    return inner_->ListTenantsDueForRotation(now, default_period, after, limit);
  }
  absl::Status SetTenantRotationPeriod(const std::string& id, int64_t period) override {
    if (down_) return Down();
    return inner_->SetTenantRotationPeriod(id, period);
  }
  absl::StatusOr<int64_t> GetTenantRotationPeriod(const std::string& id) override {
    if (down_) return Down();
    return inner_->GetTenantRotationPeriod(id);
  }

  // --- JwtKeyStore
  absl::StatusOr<std::vector<store::JwtKeyRecord>> ListJwtKeys() override {
    if (down_) return Down();
    return inner_->ListJwtKeys();
  }
  absl::Status InsertFirstJwtKey(const store::JwtKeyRecord& key) override {
    if (down_) return Down();
    return inner_->InsertFirstJwtKey(key);
  }
  absl::Status RotateJwtKey(const std::string& kid, int64_t expected, int64_t retire_at,
                            const store::JwtKeyRecord& next) override {
    if (down_) return Down();
    return inner_->RotateJwtKey(kid, expected, retire_at, next);
  }
  absl::Status UpdateJwtKeyWrapping(const std::string& kid, int64_t expected, uint32_t kek_version,
                                    const std::vector<uint8_t>& wrapped) override {
    if (down_) return Down();
    return inner_->UpdateJwtKeyWrapping(kid, expected, kek_version, wrapped);
  }

  // --- RotationJobStore
  absl::StatusOr<store::RotationJobRecord> CreateRotationJob(
      const store::RotationJobRecord& job) override {
    if (down_) return Down();
    return inner_->CreateRotationJob(job);
  }
  absl::StatusOr<store::RotationJobRecord> GetRotationJob(int64_t id) override {
    if (down_) return Down();
    return inner_->GetRotationJob(id);
  }
  absl::StatusOr<store::RotationJobRecord> GetRunningRotationJob(
      store::RotationJobKind kind) override {
    if (down_) return Down();
    return inner_->GetRunningRotationJob(kind);
  }
  absl::StatusOr<std::vector<store::RotationJobRecord>> ListRotationJobs(int64_t before_id,
                                                                         int limit) override {
    if (down_) return Down();
    return inner_->ListRotationJobs(before_id, limit);
  }
  absl::Status UpdateRotationJobProgress(int64_t id, int64_t expected,
                                         const store::RotationJobProgress& progress,
                                         int64_t updated_at) override {
    if (down_) return Down();
    return inner_->UpdateRotationJobProgress(id, expected, progress, updated_at);
  }
  absl::Status FinishRotationJob(int64_t id, int64_t expected, store::RotationJobState state,
                                 const store::RotationJobProgress& progress,
                                 const std::string& error, int64_t finished_at) override {
    if (down_) return Down();
    return inner_->FinishRotationJob(id, expected, state, progress, error, finished_at);
  }

  // --- StoreHealth
  std::string_view backend_name() const override { return inner_->backend_name(); }
  absl::StatusOr<int64_t> GetEpoch() override {
    if (down_) return Down();
    return inner_->GetEpoch();
  }
  absl::Status Ping() override { return down_ ? Down() : inner_->Ping(); }

 private:
  static absl::Status Down() { return absl::UnavailableError("store is down (injected)"); }
  store::KeyStore* inner_;
  std::function<void()> before_insert_kek_;  // test thread only
  absl::Status fail_insert_kek_;
  std::atomic<bool> down_{false};
  std::atomic<uint64_t> tenant_dek_reads_{0};
};

}  // namespace kms::testing
