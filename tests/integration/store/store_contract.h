// The KeyStore contract: one suite of behaviour every backend must show.
//
// store_contract.cc holds the TEST_Ps and nothing backend-specific. A backend joins by
// instantiating the suite with a factory, in its own <backend>_contract_test.cc:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, KeyStoreContractTest,
//                            ::testing::Values(KeyStoreBackend{"sqlite", &MakeStore}),
//                            KeyStoreBackendName);
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

#include "gtest/gtest.h"
#include "kms/common/status.h"
#include "kms/store/key_store.h"

namespace kms::store::contract {

struct KeyStoreBackend {
  std::string name;  // a test-name fragment: letters, digits, '_'
  std::function<absl::StatusOr<std::unique_ptr<KeyStore>>()> make;
};

void PrintTo(const KeyStoreBackend& backend, std::ostream* os);
std::string KeyStoreBackendName(const ::testing::TestParamInfo<KeyStoreBackend>& info);

class KeyStoreContractTest : public ::testing::TestWithParam<KeyStoreBackend> {
 protected:
  void SetUp() override;
  void TearDown() override { store_.reset(); }

  KeyStore& store() { return *store_; }

  std::unique_ptr<KeyStore> store_;
};

// Test data: wrapped blobs are not real HSM output, only distinctive bytes (including
// 0x00 and 0xff, so a backend that treats blobs as C strings fails).
std::vector<uint8_t> TestBlob(uint8_t seed, size_t size = 40);
KekRecord TestKek(uint32_t version);
TenantRecord TestTenant(const std::string& id);
DekRecord TestDek(const std::string& tenant_id, uint32_t version);
// A JWT key record `kid`, signing from `activate_at`, not scheduled to retire.
JwtKeyRecord TestJwtKey(const std::string& kid, int64_t activate_at);

// For a backend's reopening test: WriteReopenSample stores KEK 1 and tenant "acme"
// rotated to DEK 2 with 17 encryptions, and gives the epoch after; ExpectReopenSample
// checks that a store reopened on the same database holds exactly that. Both report
// with gtest assertions (wrap them in ASSERT_NO_FATAL_FAILURE).
void WriteReopenSample(KeyStore& store, int64_t* epoch);
void ExpectReopenSample(KeyStore& store, int64_t epoch);

}  // namespace kms::store::contract
