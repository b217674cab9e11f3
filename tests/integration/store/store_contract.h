// The store contract: one suite of behaviour every backend must show, split like the
// seams (include/kms/store):
//   kek_store_contract.cc         KekStoreContractTest
//   tenant_key_store_contract.cc  TenantKeyStoreContractTest
//   jwt_key_store_contract.cc     JwtKeyStoreContractTest
//   rotation_job_contract.cc      RotationJobStoreContractTest
//   store_health_contract.cc      StoreHealthContractTest (the epoch across all seams)
//   audit_store_contract.cc       AuditStoreContractTest (the backend's AuditStore side)
// Each fixture's store() is its seam only, so a test shows what the seam promises;
// keys() is the whole KeyStore, for setting up what another seam owns.
//
// The files hold TEST_Ps and nothing backend-specific. A backend joins by instantiating
// every suite with a factory, in its own <backend>_contract_test.cc:
//
//   KMS_INSTANTIATE_STORE_CONTRACT(Sqlite, KeyStoreBackend{"sqlite", &MakeStore});
//
// `make` is called once per test and must return a fresh, empty store (a new temp dir,
// a new database or schema). The suite never closes and reopens a store: persistence
// is backend-specific and tested next to the INSTANTIATE.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kms/common/status.h"
#include "kms/store/audit_store.h"
#include "kms/store/key_store.h"

namespace kms::store {
// Readable names in gtest messages.
inline void PrintTo(DekRewrapResult r, std::ostream* os) {
  switch (r) {
    case DekRewrapResult::kUpdated: *os << "kUpdated"; return;
    case DekRewrapResult::kSkipped: *os << "kSkipped"; return;
    case DekRewrapResult::kNotFound: *os << "kNotFound"; return;
  }
  *os << "DekRewrapResult(" << static_cast<int>(r) << ")";
}
}  // namespace kms::store

namespace kms::store::contract {

#define KMS_EXPECT_OK(expr)                \
  do {                                     \
    const ::absl::Status kms_st_ = (expr); \
    EXPECT_TRUE(kms_st_.ok()) << kms_st_;  \
  } while (0)
#define KMS_ASSERT_OK(expr)                \
  do {                                     \
    const ::absl::Status kms_st_ = (expr); \
    ASSERT_TRUE(kms_st_.ok()) << kms_st_;  \
  } while (0)

struct KeyStoreBackend {
  std::string name;  // a test-name fragment: letters, digits, '_'
  std::function<absl::StatusOr<std::unique_ptr<KeyStore>>()> make;
};

void PrintTo(const KeyStoreBackend& backend, std::ostream* os);
std::string KeyStoreBackendName(const ::testing::TestParamInfo<KeyStoreBackend>& info);

// Makes a fresh store per test.
class StoreContractTest : public ::testing::TestWithParam<KeyStoreBackend> {
 protected:
  void SetUp() override;
  void TearDown() override { store_.reset(); }

  KeyStore& keys() { return *store_; }
  StoreHealth& health() { return *store_; }

  std::unique_ptr<KeyStore> store_;
};

class KekStoreContractTest : public StoreContractTest {
 protected:
  KekStore& store() { return *store_; }
};
class TenantKeyStoreContractTest : public StoreContractTest {
 protected:
  TenantKeyStore& store() { return *store_; }
};
class JwtKeyStoreContractTest : public StoreContractTest {
 protected:
  JwtKeyStore& store() { return *store_; }
};
class RotationJobStoreContractTest : public StoreContractTest {
 protected:
  RotationJobStore& store() { return *store_; }
};
class StoreHealthContractTest : public StoreContractTest {
 protected:
  StoreHealth& store() { return *store_; }
};
// Every backend's KeyStore class is also its AuditStore (audit_store.h).
class AuditStoreContractTest : public StoreContractTest {
 protected:
  AuditStore& store() { return dynamic_cast<AuditStore&>(*store_); }
};

// Instantiates every suite above for the backends in `...` (KeyStoreBackend values).
// gtest pastes the suite names into identifiers, so they must be unqualified here: use
// it inside namespace kms::store::contract, or after `using` declarations of the five
// fixtures.
#define KMS_INSTANTIATE_STORE_CONTRACT(prefix, ...)                                    \
  INSTANTIATE_TEST_SUITE_P(prefix, KekStoreContractTest, ::testing::Values(__VA_ARGS__), \
                           ::kms::store::contract::KeyStoreBackendName);               \
  INSTANTIATE_TEST_SUITE_P(prefix, TenantKeyStoreContractTest,                          \
                           ::testing::Values(__VA_ARGS__),                             \
                           ::kms::store::contract::KeyStoreBackendName);               \
  INSTANTIATE_TEST_SUITE_P(prefix, JwtKeyStoreContractTest,                             \
                           ::testing::Values(__VA_ARGS__),                             \
                           ::kms::store::contract::KeyStoreBackendName);               \
  INSTANTIATE_TEST_SUITE_P(prefix, RotationJobStoreContractTest,                        \
                           ::testing::Values(__VA_ARGS__),                             \
                           ::kms::store::contract::KeyStoreBackendName);               \
  INSTANTIATE_TEST_SUITE_P(prefix, StoreHealthContractTest,                             \
                           ::testing::Values(__VA_ARGS__),                             \
                           ::kms::store::contract::KeyStoreBackendName);               \
  INSTANTIATE_TEST_SUITE_P(prefix, AuditStoreContractTest,                              \
                           ::testing::Values(__VA_ARGS__),                             \
                           ::kms::store::contract::KeyStoreBackendName)

// Test data: wrapped blobs are not real HSM output, only distinctive bytes (including
// 0x00 and 0xff, so a backend that treats blobs as C strings fails).
std::vector<uint8_t> TestBlob(uint8_t seed, size_t size = 40);
KekRecord TestKek(uint32_t version);
TenantRecord TestTenant(const std::string& id);
DekRecord TestDek(const std::string& tenant_id, uint32_t version);
// A JWT key record `kid`, signing from `activate_at`, not scheduled to retire.
JwtKeyRecord TestJwtKey(const std::string& kid, int64_t activate_at);
// A new KEK re-wrap job from KEK version `from` to `to`, created at `created_at`.
RotationJobRecord TestRotationJob(uint32_t from, uint32_t to, int64_t created_at);
// A re-wrap of DEK (tenant_id, version) from KEK `from` to `to`, with a blob of `seed`.
DekRewrap TestRewrap(const std::string& tenant_id, uint32_t version, uint32_t from, uint32_t to,
                     uint8_t seed);

// Creates tenant `id` with DEK version 1 (under KEK 1).
absl::Status CreateTestTenant(TenantKeyStore& store, const std::string& id);
// The epoch, or -1 after a failed test expectation.
int64_t Epoch(StoreHealth& store);
void ExpectSameDek(const DekRecord& actual, const DekRecord& expected);
void ExpectSameJwtKey(const JwtKeyRecord& actual, const JwtKeyRecord& expected);

// For a backend's reopening test: WriteReopenSample stores KEK 1 and tenant "acme"
// rotated to DEK 2 with 17 encryptions, and gives the epoch after; ExpectReopenSample
// checks that a store reopened on the same database holds exactly that. Both report
// with gtest assertions (wrap them in ASSERT_NO_FATAL_FAILURE).
void WriteReopenSample(KeyStore& store, int64_t* epoch);
void ExpectReopenSample(KeyStore& store, int64_t epoch);

}  // namespace kms::store::contract
