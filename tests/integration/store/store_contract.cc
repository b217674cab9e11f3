#include "tests/integration/store/store_contract.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace kms::store::contract {

void PrintTo(const KeyStoreBackend& backend, std::ostream* os) { *os << backend.name; }

std::string KeyStoreBackendName(const ::testing::TestParamInfo<KeyStoreBackend>& info) {
  return info.param.name;
}

void StoreContractTest::SetUp() {
  auto made = GetParam().make();
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_NE(*made, nullptr);
  store_ = std::move(*made);
}

std::vector<uint8_t> TestBlob(uint8_t seed, size_t size) {
  std::vector<uint8_t> blob(size);
  for (size_t i = 0; i < size; ++i) blob[i] = static_cast<uint8_t>(seed * 31 + i * 7);
  blob[size / 2] = 0x00;
  blob[size - 1] = 0xff;
  return blob;
}

KekRecord TestKek(uint32_t version) {
  KekRecord kek;
  kek.version = version;
  kek.wrapped = TestBlob(static_cast<uint8_t>(100 + version), 512);
  kek.state = KekState::kActive;
  kek.created_at = 1700000000 + version;
  return kek;
}

TenantRecord TestTenant(const std::string& id) {
  TenantRecord tenant;
  tenant.id = id;
  tenant.state = TenantState::kActive;
  tenant.primary_dek_version = 1;
  tenant.min_decrypt_version = 1;
  tenant.created_at = 1700000100;
  return tenant;
}

DekRecord TestDek(const std::string& tenant_id, uint32_t version) {
  DekRecord dek;
  dek.tenant_id = tenant_id;
  dek.version = version;
  dek.kek_version = 1;
  dek.wrapped = TestBlob(static_cast<uint8_t>(tenant_id.size() * 13 + version));
  dek.state = DekState::kActive;
  dek.created_at = 1700000200 + version;
  return dek;
}

JwtKeyRecord TestJwtKey(const std::string& kid, int64_t activate_at) {
  JwtKeyRecord key;
  key.kid = kid;
  key.public_jwk = absl::StrCat(R"({"kty":"EC","crv":"P-256","kid":")", kid, R"("})");
  key.wrapped_private = TestBlob(static_cast<uint8_t>(kid.size() * 17 + activate_at % 251), 96);
  key.kek_version = 1;
  key.created_at = activate_at - 300;
  key.activate_at = activate_at;
  key.retire_at = 0;
  key.row_version = 1;
  return key;
}

void WriteReopenSample(KeyStore& store, int64_t* epoch) {
  ASSERT_TRUE(store.InsertKek(TestKek(1)).ok());
  ASSERT_TRUE(store.CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  ASSERT_TRUE(store.RotateDek("acme", 1, TestDek("acme", 2)).ok());
  ASSERT_TRUE(store.AddEncryptions("acme", 2, 17).ok());
  auto current = store.GetEpoch();
  ASSERT_TRUE(current.ok()) << current.status();
  *epoch = *current;
}

void ExpectReopenSample(KeyStore& store, int64_t epoch) {
  auto keks = store.ListKeks();
  ASSERT_TRUE(keks.ok()) << keks.status();
  ASSERT_EQ(keks->size(), 1u);
  EXPECT_EQ((*keks)[0].wrapped, TestKek(1).wrapped);

  auto td = store.GetTenantDek("acme", 0);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_EQ(td->tenant.primary_dek_version, 2u);
  EXPECT_EQ(td->tenant.row_version, 2);
  EXPECT_EQ(td->dek.wrapped, TestDek("acme", 2).wrapped);
  EXPECT_EQ(td->dek.encryptions, 17u);
  // The primary DEK's age as kept on the tenant row (filled by migration 5 from v2).
  auto oldest = store.OldestPrimaryDekCreatedAt();
  ASSERT_TRUE(oldest.ok()) << oldest.status();
  EXPECT_EQ(*oldest, TestDek("acme", 2).created_at);
  EXPECT_EQ(*store.GetEpoch(), epoch);
}

RotationJobRecord TestRotationJob(uint32_t from, uint32_t to, int64_t created_at) {
  RotationJobRecord job;
  job.kind = RotationJobKind::kKekRewrap;
  job.from_kek_version = from;
  job.to_kek_version = to;
  job.progress.total = 100;
  job.created_at = created_at;
  return job;
}

DekRewrap TestRewrap(const std::string& tenant_id, uint32_t version, uint32_t from, uint32_t to,
                     uint8_t seed) {
  DekRewrap r;
  r.tenant_id = tenant_id;
  r.version = version;
  r.from_kek_version = from;
  r.to_kek_version = to;
  r.wrapped = TestBlob(seed, 48);
  return r;
}

absl::Status CreateTestTenant(TenantKeyStore& store, const std::string& id) {
  return store.CreateTenant(TestTenant(id), TestDek(id, 1));
}

int64_t Epoch(StoreHealth& store) {
  auto epoch = store.GetEpoch();
  EXPECT_TRUE(epoch.ok()) << epoch.status();
  return epoch.ok() ? *epoch : -1;
}

void ExpectSameDek(const DekRecord& actual, const DekRecord& expected) {
  EXPECT_EQ(actual.tenant_id, expected.tenant_id);
  EXPECT_EQ(actual.version, expected.version);
  EXPECT_EQ(actual.kek_version, expected.kek_version);
  EXPECT_EQ(actual.wrapped, expected.wrapped);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.created_at, expected.created_at);
  EXPECT_EQ(actual.encryptions, expected.encryptions);
}

void ExpectSameJwtKey(const JwtKeyRecord& actual, const JwtKeyRecord& expected) {
  EXPECT_EQ(actual.kid, expected.kid);
  EXPECT_EQ(actual.public_jwk, expected.public_jwk);
  EXPECT_EQ(actual.wrapped_private, expected.wrapped_private);
  EXPECT_EQ(actual.kek_version, expected.kek_version);
  EXPECT_EQ(actual.created_at, expected.created_at);
  EXPECT_EQ(actual.activate_at, expected.activate_at);
  EXPECT_EQ(actual.retire_at, expected.retire_at);
}

}  // namespace kms::store::contract
