// gMock doubles of the store seams (include/kms/store/*.h): one mock per aggregate seam
// (MockKekStore, MockTenantKeyStore, MockJwtKeyStore, MockRotationJobStore,
// MockStoreHealth) and MockKeyStore, all of them at once, for a consumer that still
// takes the combined store::KeyStore. Each seam's methods are declared once, in a macro
// the per-seam mock and MockKeyStore share, so a seam change is made in one place. For
// behaviour use a real SQLite ":memory:" store, wrapped by
// tests/fakes/injecting_key_store.h for outages.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "kms/store/key_store.h"

#define KMS_MOCK_KEK_STORE_METHODS                                                          \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::KekRecord>>, ListKeks, (), (override)); \
  MOCK_METHOD(absl::Status, InsertKek, (const ::kms::store::KekRecord& kek), (override));     \
  MOCK_METHOD(absl::Status, UpdateKekState,                                                 \
              (uint32_t version, ::kms::store::KekState from, ::kms::store::KekState to),   \
              (override));                                                                  \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::KekUsage>>, ListKekUsage, (), (override)); \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::KekUsage>>, ListKekUsageExcept,       \
              (uint32_t kek_version), (override));                                           \
  MOCK_METHOD(absl::Status, RetireKek, (uint32_t version, int64_t retired_at), (override));   \
  MOCK_METHOD(absl::StatusOr<std::vector<uint32_t>>, DestroyRetiredKeks,                    \
              (int64_t retired_before), (override))

#define KMS_MOCK_TENANT_KEY_STORE_METHODS                                                    \
  MOCK_METHOD(absl::Status, CreateTenant,                                                    \
              (const ::kms::store::TenantRecord& tenant,                                     \
               const ::kms::store::DekRecord& first_dek),                                    \
              (override));                                                                   \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::CreateTenantResult>>, CreateTenants, \
              (std::span<const ::kms::store::NewTenant> tenants), (override));               \
  MOCK_METHOD(absl::StatusOr<::kms::store::TenantRecord>, GetTenant,                         \
              (const std::string& tenant_id), (override));                                   \
  MOCK_METHOD(absl::StatusOr<::kms::store::TenantPage>, ListTenants,                         \
              (const std::string& after, int limit), (override));                            \
  MOCK_METHOD(absl::StatusOr<uint64_t>, CountTenants, (), (override));                       \
  MOCK_METHOD(absl::StatusOr<int64_t>, OldestPrimaryDekCreatedAt, (), (override));           \
  MOCK_METHOD(absl::StatusOr<::kms::store::TenantDek>, GetTenantDek,                         \
              (const std::string& tenant_id, uint32_t version), (override));                 \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::DekRecord>>, ListDeks,                \
              (const std::string& tenant_id), (override));                                   \
  MOCK_METHOD(absl::Status, RotateDek,                                                       \
              (const std::string& tenant_id, int64_t expected_row_version,                   \
               const ::kms::store::DekRecord& new_dek),                                      \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, SetTenantState,                                                  \
              (const std::string& tenant_id, int64_t expected_row_version,                   \
               ::kms::store::TenantState state),                                             \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, SetMinDecryptVersion,                                            \
              (const std::string& tenant_id, int64_t expected_row_version,                   \
               uint32_t min_version),                                                        \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, AddEncryptions,                                                  \
              (const std::string& tenant_id, uint32_t version, uint64_t count), (override)); \
  MOCK_METHOD(absl::Status, AddEncryptionsBatch,                                             \
              (std::span<const ::kms::store::EncryptionCount> counts), (override));          \
  MOCK_METHOD(absl::StatusOr<::kms::store::DekPage>, ListDeksWrappedUnder,                   \
              (uint32_t kek_version, const ::kms::store::DekKey& after, int limit),          \
              (override));                                                                   \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::DekRewrapResult>>,                    \
              UpdateDekWrappings, (std::span<const ::kms::store::DekRewrap> rewraps),        \
              (override));                                                                   \
  MOCK_METHOD(absl::StatusOr<::kms::store::DueTenantPage>, ListTenantsDueForRotation,        \
              (int64_t now, int64_t default_period_seconds, const std::string& after,        \
               int limit),                                                                   \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, SetTenantRotationPeriod,                                         \
              (const std::string& tenant_id, int64_t period_seconds), (override));           \
  MOCK_METHOD(absl::StatusOr<int64_t>, GetTenantRotationPeriod,                              \
              (const std::string& tenant_id), (override))

#define KMS_MOCK_JWT_KEY_STORE_METHODS                                                       \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::JwtKeyRecord>>, ListJwtKeys, (),      \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, InsertFirstJwtKey, (const ::kms::store::JwtKeyRecord& key),      \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, RotateJwtKey,                                                    \
              (const std::string& current_kid, int64_t expected_row_version,                 \
               int64_t current_retire_at, const ::kms::store::JwtKeyRecord& next),           \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, UpdateJwtKeyWrapping,                                            \
              (const std::string& kid, int64_t expected_row_version, uint32_t kek_version,   \
               const std::vector<uint8_t>& wrapped_private),                                 \
              (override))

#define KMS_MOCK_ROTATION_JOB_STORE_METHODS                                                  \
  MOCK_METHOD(absl::StatusOr<::kms::store::RotationJobRecord>, CreateRotationJob,            \
              (const ::kms::store::RotationJobRecord& job), (override));                     \
  MOCK_METHOD(absl::StatusOr<::kms::store::RotationJobRecord>, GetRotationJob, (int64_t id), \
              (override));                                                                   \
  MOCK_METHOD(absl::StatusOr<::kms::store::RotationJobRecord>, GetRunningRotationJob,        \
              (::kms::store::RotationJobKind kind), (override));                             \
  MOCK_METHOD(absl::StatusOr<std::vector<::kms::store::RotationJobRecord>>,                  \
              ListRotationJobs, (int64_t before_id, int limit), (override));                 \
  MOCK_METHOD(absl::Status, UpdateRotationJobProgress,                                       \
              (int64_t id, int64_t expected_row_version,                                     \
               const ::kms::store::RotationJobProgress& progress, int64_t updated_at),       \
              (override));                                                                   \
  MOCK_METHOD(absl::Status, FinishRotationJob,                                               \
              (int64_t id, int64_t expected_row_version,                                     \
               ::kms::store::RotationJobState state,                                         \
               const ::kms::store::RotationJobProgress& progress, const std::string& error,  \
               int64_t finished_at),                                                         \
              (override))

#define KMS_MOCK_STORE_HEALTH_METHODS                                       \
  MOCK_METHOD(std::string_view, backend_name, (), (const, override));       \
  MOCK_METHOD(absl::StatusOr<int64_t>, GetEpoch, (), (override));           \
  MOCK_METHOD(absl::Status, Ping, (), (override))

namespace kms::testing {

class MockKekStore : public store::KekStore {
 public:
  KMS_MOCK_KEK_STORE_METHODS;
};

class MockTenantKeyStore : public store::TenantKeyStore {
 public:
  KMS_MOCK_TENANT_KEY_STORE_METHODS;
};

class MockJwtKeyStore : public store::JwtKeyStore {
 public:
  KMS_MOCK_JWT_KEY_STORE_METHODS;
};

class MockRotationJobStore : public store::RotationJobStore {
 public:
  KMS_MOCK_ROTATION_JOB_STORE_METHODS;
};

class MockStoreHealth : public store::StoreHealth {
 public:
  KMS_MOCK_STORE_HEALTH_METHODS;
};

// Every seam at once, as one backend object implements them.
class MockKeyStore : public store::KeyStore {
 public:
  KMS_MOCK_KEK_STORE_METHODS;
  KMS_MOCK_TENANT_KEY_STORE_METHODS;
  KMS_MOCK_JWT_KEY_STORE_METHODS;
  KMS_MOCK_ROTATION_JOB_STORE_METHODS;
  KMS_MOCK_STORE_HEALTH_METHODS;
};

}  // namespace kms::testing
