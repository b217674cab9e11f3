#include "src/keys/guarded_backends.h"

#include <utility>

namespace kms::keys {

// --- GuardedHsm

absl::StatusOr<std::vector<uint8_t>> GuardedHsm::CreateKek(uint32_t kek_version) {
  return exec_->Run<absl::StatusOr<std::vector<uint8_t>>>(
      [inner = inner_, kek_version] { return inner->CreateKek(kek_version); });
}

absl::Status GuardedHsm::LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) {
  return exec_->Run<absl::Status>(
      [inner = inner_, kek_version, blob = std::vector<uint8_t>(wrapped_kek.begin(), wrapped_kek.end())] {
        return inner->LoadKek(kek_version, blob);
      });
}

absl::Status GuardedHsm::UnloadKek(uint32_t kek_version) {
  return exec_->Run<absl::Status>([inner = inner_, kek_version] { return inner->UnloadKek(kek_version); });
}

absl::StatusOr<std::vector<uint8_t>> GuardedHsm::Seal(uint32_t kek_version,
                                                      std::span<const uint8_t> plaintext,
                                                      std::span<const uint8_t> aad) {
  // The plaintext is key material (a DEK, a JWT private key): a wiped copy.
  auto secret = std::make_shared<SecretBytes>(plaintext.size());
  std::copy(plaintext.begin(), plaintext.end(), secret->data());
  return exec_->Run<absl::StatusOr<std::vector<uint8_t>>>(
      [inner = inner_, kek_version, secret, aad = std::vector<uint8_t>(aad.begin(), aad.end())] {
        return inner->Seal(kek_version, secret->span(), aad);
      });
}

absl::StatusOr<SecretBytes> GuardedHsm::Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                             std::span<const uint8_t> aad) {
  return exec_->Run<absl::StatusOr<SecretBytes>>(
      [inner = inner_, kek_version, sealed = std::vector<uint8_t>(sealed.begin(), sealed.end()),
       aad = std::vector<uint8_t>(aad.begin(), aad.end())] {
        return inner->Open(kek_version, sealed, aad);
      });
}

absl::Status GuardedHsm::Ping() {
  return exec_->Run<absl::Status>([inner = inner_] { return inner->Ping(); });
}

// --- GuardedKeyStore

absl::StatusOr<std::vector<store::KekRecord>> GuardedKeyStore::ListKeks() {
  return exec_->Run<absl::StatusOr<std::vector<store::KekRecord>>>(
      [=, inner = inner_]() { return inner->ListKeks(); });
}

absl::Status GuardedKeyStore::InsertKek(const store::KekRecord& kek) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->InsertKek(kek); });
}

absl::Status GuardedKeyStore::UpdateKekState(uint32_t version, store::KekState from, store::KekState to) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->UpdateKekState(version, from, to); });
}

absl::StatusOr<std::vector<store::KekUsage>> GuardedKeyStore::ListKekUsage() {
  return exec_->Run<absl::StatusOr<std::vector<store::KekUsage>>>(
      [=, inner = inner_]() { return inner->ListKekUsage(); });
}

absl::StatusOr<std::vector<store::KekUsage>> GuardedKeyStore::ListKekUsageExcept(uint32_t kek_version) {
  return exec_->Run<absl::StatusOr<std::vector<store::KekUsage>>>(
      [=, inner = inner_]() { return inner->ListKekUsageExcept(kek_version); });
}

absl::Status GuardedKeyStore::RetireKek(uint32_t version, int64_t retired_at) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->RetireKek(version, retired_at); });
}

absl::StatusOr<std::vector<uint32_t>> GuardedKeyStore::DestroyRetiredKeks(int64_t retired_before) {
  return exec_->Run<absl::StatusOr<std::vector<uint32_t>>>(
      [=, inner = inner_]() { return inner->DestroyRetiredKeks(retired_before); });
}

absl::Status GuardedKeyStore::CreateTenant(const store::TenantRecord& tenant, const store::DekRecord& first_dek) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->CreateTenant(tenant, first_dek); });
}

absl::StatusOr<std::vector<store::CreateTenantResult>> GuardedKeyStore::CreateTenants(
    std::span<const store::NewTenant> tenants) {
  return exec_->Run<absl::StatusOr<std::vector<store::CreateTenantResult>>>(
      [inner = inner_, copy = std::vector<store::NewTenant>(tenants.begin(), tenants.end())] {
        return inner->CreateTenants(copy);
      });
}

absl::StatusOr<store::TenantRecord> GuardedKeyStore::GetTenant(const std::string& tenant_id) {
  return exec_->Run<absl::StatusOr<store::TenantRecord>>(
      [=, inner = inner_]() { return inner->GetTenant(tenant_id); });
}

absl::StatusOr<store::TenantPage> GuardedKeyStore::ListTenants(const std::string& after, int limit) {
  return exec_->Run<absl::StatusOr<store::TenantPage>>(
      [=, inner = inner_]() { return inner->ListTenants(after, limit); });
}

absl::StatusOr<uint64_t> GuardedKeyStore::CountTenants() {
  return exec_->Run<absl::StatusOr<uint64_t>>(
      [=, inner = inner_]() { return inner->CountTenants(); });
}

absl::StatusOr<int64_t> GuardedKeyStore::OldestPrimaryDekCreatedAt() {
  return exec_->Run<absl::StatusOr<int64_t>>(
      [=, inner = inner_]() { return inner->OldestPrimaryDekCreatedAt(); });
}

absl::StatusOr<store::TenantDek> GuardedKeyStore::GetTenantDek(const std::string& tenant_id, uint32_t version) {
  return exec_->Run<absl::StatusOr<store::TenantDek>>(
      [=, inner = inner_]() { return inner->GetTenantDek(tenant_id, version); });
}

absl::StatusOr<std::vector<store::DekRecord>> GuardedKeyStore::ListDeks(const std::string& tenant_id) {
  return exec_->Run<absl::StatusOr<std::vector<store::DekRecord>>>(
      [=, inner = inner_]() { return inner->ListDeks(tenant_id); });
}

absl::Status GuardedKeyStore::RotateDek(const std::string& tenant_id, int64_t expected_row_version, const store::DekRecord& new_dek) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->RotateDek(tenant_id, expected_row_version, new_dek); });
}

absl::Status GuardedKeyStore::SetTenantState(const std::string& tenant_id, int64_t expected_row_version, store::TenantState state) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->SetTenantState(tenant_id, expected_row_version, state); });
}

absl::Status GuardedKeyStore::SetMinDecryptVersion(const std::string& tenant_id, int64_t expected_row_version, uint32_t min_version) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->SetMinDecryptVersion(tenant_id, expected_row_version, min_version); });
}

absl::Status GuardedKeyStore::AddEncryptions(const std::string& tenant_id, uint32_t version, uint64_t count) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->AddEncryptions(tenant_id, version, count); });
}

absl::Status GuardedKeyStore::AddEncryptionsBatch(std::span<const store::EncryptionCount> counts) {
  // Copied: a call that outlives its deadline still runs on the store's pool.
  return exec_->Run<absl::Status>(
      [copy = std::vector<store::EncryptionCount>(counts.begin(), counts.end()), inner = inner_]() {
        return inner->AddEncryptionsBatch(copy);
      });
}

absl::StatusOr<store::DekPage> GuardedKeyStore::ListDeksWrappedUnder(uint32_t kek_version, const store::DekKey& after, int limit) {
  return exec_->Run<absl::StatusOr<store::DekPage>>(
      [=, inner = inner_]() { return inner->ListDeksWrappedUnder(kek_version, after, limit); });
}

absl::StatusOr<store::DueTenantPage> GuardedKeyStore::ListTenantsDueForRotation( int64_t now, int64_t default_period_seconds, const std::string& after, int limit) {
  return exec_->Run<absl::StatusOr<store::DueTenantPage>>(
      [=, inner = inner_]() { return inner->ListTenantsDueForRotation(now, default_period_seconds, after, limit); });
}

absl::Status GuardedKeyStore::SetTenantRotationPeriod(const std::string& tenant_id, int64_t period_seconds) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->SetTenantRotationPeriod(tenant_id, period_seconds); });
}

absl::StatusOr<int64_t> GuardedKeyStore::GetTenantRotationPeriod(const std::string& tenant_id) {
  return exec_->Run<absl::StatusOr<int64_t>>(
      [=, inner = inner_]() { return inner->GetTenantRotationPeriod(tenant_id); });
}

absl::StatusOr<std::vector<store::JwtKeyRecord>> GuardedKeyStore::ListJwtKeys() {
  return exec_->Run<absl::StatusOr<std::vector<store::JwtKeyRecord>>>(
      [=, inner = inner_]() { return inner->ListJwtKeys(); });
}

absl::Status GuardedKeyStore::InsertFirstJwtKey(const store::JwtKeyRecord& key) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->InsertFirstJwtKey(key); });
}

absl::Status GuardedKeyStore::RotateJwtKey(const std::string& current_kid, int64_t expected_row_version, int64_t current_retire_at, const store::JwtKeyRecord& next) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->RotateJwtKey(current_kid, expected_row_version, current_retire_at, next); });
}

absl::Status GuardedKeyStore::UpdateJwtKeyWrapping(const std::string& kid, int64_t expected_row_version, uint32_t kek_version, const std::vector<uint8_t>& wrapped_private) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->UpdateJwtKeyWrapping(kid, expected_row_version, kek_version, wrapped_private); });
}

absl::StatusOr<store::RotationJobRecord> GuardedKeyStore::CreateRotationJob( const store::RotationJobRecord& job) {
  return exec_->Run<absl::StatusOr<store::RotationJobRecord>>(
      [=, inner = inner_]() { return inner->CreateRotationJob(job); });
}

absl::StatusOr<store::RotationJobRecord> GuardedKeyStore::GetRotationJob(int64_t id) {
  return exec_->Run<absl::StatusOr<store::RotationJobRecord>>(
      [=, inner = inner_]() { return inner->GetRotationJob(id); });
}

absl::StatusOr<store::RotationJobRecord> GuardedKeyStore::GetRunningRotationJob( store::RotationJobKind kind) {
  return exec_->Run<absl::StatusOr<store::RotationJobRecord>>(
      [=, inner = inner_]() { return inner->GetRunningRotationJob(kind); });
}

absl::StatusOr<std::vector<store::RotationJobRecord>> GuardedKeyStore::ListRotationJobs(int64_t before_id, int limit) {
  return exec_->Run<absl::StatusOr<std::vector<store::RotationJobRecord>>>(
      [=, inner = inner_]() { return inner->ListRotationJobs(before_id, limit); });
}

absl::Status GuardedKeyStore::UpdateRotationJobProgress(int64_t id, int64_t expected_row_version, const store::RotationJobProgress& progress, int64_t updated_at) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->UpdateRotationJobProgress(id, expected_row_version, progress, updated_at); });
}

absl::Status GuardedKeyStore::FinishRotationJob(int64_t id, int64_t expected_row_version, store::RotationJobState state, const store::RotationJobProgress& progress, const std::string& error, int64_t finished_at) {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->FinishRotationJob(id, expected_row_version, state, progress, error, finished_at); });
}

absl::StatusOr<int64_t> GuardedKeyStore::GetEpoch() {
  return exec_->Run<absl::StatusOr<int64_t>>(
      [=, inner = inner_]() { return inner->GetEpoch(); });
}

absl::Status GuardedKeyStore::Ping() {
  return exec_->Run<absl::Status>(
      [=, inner = inner_]() { return inner->Ping(); });
}

absl::StatusOr<std::vector<store::DekRewrapResult>> GuardedKeyStore::UpdateDekWrappings(
    std::span<const store::DekRewrap> rewraps) {
  return exec_->Run<absl::StatusOr<std::vector<store::DekRewrapResult>>>(
      [inner = inner_, copy = std::vector<store::DekRewrap>(rewraps.begin(), rewraps.end())] {
        return inner->UpdateDekWrappings(copy);
      });
}

namespace {
absl::Status NoAudit() { return absl::FailedPreconditionError("the key store keeps no audit log"); }
}  // namespace

absl::Status GuardedKeyStore::AppendAudit(std::span<const store::AuditRecord> records) {
  if (audit_ == nullptr) return NoAudit();
  return exec_->Run<absl::Status>(
      [audit = audit_, copy = std::vector<store::AuditRecord>(records.begin(), records.end())] {
        return audit->AppendAudit(copy);
      });
}

absl::StatusOr<std::vector<store::AuditRecord>> GuardedKeyStore::ReadAudit(
    int64_t after_id, int limit, const std::string& node) {
  if (audit_ == nullptr) return NoAudit();
  return exec_->Run<absl::StatusOr<std::vector<store::AuditRecord>>>(
      [audit = audit_, after_id, limit, node] { return audit->ReadAudit(after_id, limit, node); });
}

absl::StatusOr<std::vector<store::AuditRecord>> GuardedKeyStore::TailAudit(
    int count, const std::string& node) {
  if (audit_ == nullptr) return NoAudit();
  return exec_->Run<absl::StatusOr<std::vector<store::AuditRecord>>>(
      [audit = audit_, count, node] { return audit->TailAudit(count, node); });
}

absl::StatusOr<store::AuditRecord> GuardedKeyStore::LastAudit(const std::string& node) {
  if (audit_ == nullptr) return NoAudit();
  return exec_->Run<absl::StatusOr<store::AuditRecord>>(
      [audit = audit_, node] { return audit->LastAudit(node); });
}

absl::StatusOr<int64_t> GuardedKeyStore::DeleteAuditBefore(int64_t before_ms) {
  if (audit_ == nullptr) return NoAudit();
  return exec_->Run<absl::StatusOr<int64_t>>(
      [audit = audit_, before_ms] { return audit->DeleteAuditBefore(before_ms); });
}

}  // namespace kms::keys
