// InjectingKeyStore: wraps a real KeyStore, counts the reads the data path makes, and
// fails every call with UNAVAILABLE while told to (the database is down).
#pragma once

#include <atomic>

#include "kms/store/key_store.h"

namespace kms::testing {

class InjectingKeyStore final : public store::KeyStore {
 public:
  explicit InjectingKeyStore(store::KeyStore* inner) : inner_(inner) {}

  void SetUnavailable(bool down) { down_ = down; }
  uint64_t tenant_dek_reads() const { return tenant_dek_reads_; }

  std::string_view backend_name() const override { return inner_->backend_name(); }
  absl::StatusOr<std::vector<store::KekRecord>> ListKeks() override {
    if (down_) return Down();
    return inner_->ListKeks();
  }
  absl::Status InsertKek(const store::KekRecord& kek) override {
    if (down_) return Down();
    return inner_->InsertKek(kek);
  }
  absl::Status UpdateKekState(uint32_t v, store::KekState from, store::KekState to) override {
    if (down_) return Down();
    return inner_->UpdateKekState(v, from, to);
  }
  absl::Status CreateTenant(const store::TenantRecord& t, const store::DekRecord& d) override {
    if (down_) return Down();
    return inner_->CreateTenant(t, d);
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
  absl::StatusOr<TenantDek> GetTenantDek(const std::string& id, uint32_t version) override {
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
  absl::Status AddEncryptions(const std::string& id, uint32_t v, uint64_t n) override {
    if (down_) return Down();
    return inner_->AddEncryptions(id, v, n);
  }
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
  absl::StatusOr<int64_t> GetEpoch() override {
    if (down_) return Down();
    return inner_->GetEpoch();
  }
  absl::Status Ping() override { return down_ ? Down() : inner_->Ping(); }

 private:
  static absl::Status Down() { return absl::UnavailableError("store is down (injected)"); }
  store::KeyStore* inner_;
  std::atomic<bool> down_{false};
  std::atomic<uint64_t> tenant_dek_reads_{0};
};

}  // namespace kms::testing
