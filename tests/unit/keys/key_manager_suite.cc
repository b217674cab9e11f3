#include "tests/unit/keys/key_manager_suite.h"

#include <atomic>
#include <latch>
#include <thread>

#include "absl/strings/str_cat.h"
#include "src/keys/blind_index.h"
#include "src/keys/key_ref.h"
#include "src/crypto/mac.h"
#include "src/crypto/raw_aead.h"

namespace kms::keys::suite {

using ::absl::StatusCode;
using Kind = coord::InvalidationEvent::Kind;

void PrintTo(const KeyManagerRigMaker& maker, std::ostream* os) { *os << maker.name; }

std::string KeyManagerRigName(const ::testing::TestParamInfo<KeyManagerRigMaker>& info) {
  return info.param.name;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TenantId T(const std::string& id) { return TenantId::Parse(id).value(); }

EncryptionContext Ctx(const std::vector<ContextPair>& pairs) {
  EncryptionContext ctx;
  for (const auto& [k, v] : pairs) EXPECT_TRUE(ctx.Add(k, v).ok());
  return ctx;
}

void KeyManagerSuiteTest::SetUp() {
  auto rig = GetParam().make(&clock_);
  ASSERT_TRUE(rig.ok()) << rig.status();
  rig_ = std::move(*rig);
  ASSERT_NO_FATAL_FAILURE(Open());
}

void KeyManagerSuiteTest::TearDown() {
  keys_.reset();
  rig_.reset();
}

void KeyManagerSuiteTest::Open(bool auto_create, uint64_t budget) {
  keys_.reset();
  auto keys = KeyManager::Create(&rig_->ring(), &rig_->store(), &clock_,
                                 KeyManagerOptions{.auto_create_tenants = auto_create,
                                                   .dek_encryption_budget = budget});
  ASSERT_TRUE(keys.ok()) << keys.status();
  keys_ = std::move(*keys);
}

void KeyManagerSuiteTest::Restart() {
  keys_.reset();
  absl::Status restarted = rig_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_NO_FATAL_FAILURE(Open());
}

std::unique_ptr<KeyManager> KeyManagerSuiteTest::AnotherReplica() {
  auto keys = KeyManager::Create(&rig_->ring(), &rig_->store(), &clock_, KeyManagerOptions{});
  EXPECT_TRUE(keys.ok()) << keys.status();
  return keys.ok() ? std::move(*keys) : nullptr;
}

std::string KeyManagerSuiteTest::Encrypt(const std::string& tenant, const std::string& plaintext,
                                         std::vector<ContextPair> context) {
  auto result = keys_->Encrypt(T(tenant), Ctx(context), Bytes(plaintext));
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? result->ciphertext : "";
}

absl::StatusOr<std::string> KeyManagerSuiteTest::Decrypt(const std::string& tenant,
                                                         const std::string& ct,
                                                         std::vector<ContextPair> context) {
  KMS_ASSIGN_OR_RETURN(DecryptResult result, keys_->Decrypt(T(tenant), Ctx(context), Bytes(ct)));
  return result.plaintext;
}

uint32_t KeyManagerSuiteTest::EncryptingVersion(KeyManager& keys, const std::string& tenant) {
  auto result = keys.Encrypt(T(tenant), {}, Bytes("probe"));
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? result->dek_version : 0;
}

uint32_t KeyManagerSuiteTest::StoredKekVersion(const std::string& tenant, uint32_t version) {
  auto row = rig_->raw_store().GetTenantDek(tenant, version);
  EXPECT_TRUE(row.ok()) << row.status();
  return row.ok() ? row->dek.kek_version : 0;
}

namespace {

void ExpectDecryptionFailed(const absl::StatusOr<std::string>& r) {
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
  EXPECT_EQ(r.status().message(), "decryption failed");
}

// --- Tenants

TEST_P(KeyManagerSuiteTest, CreatedTenantsCanBeReadAndListed) {
  auto created = keys_->CreateTenant(T("acme"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->tenant.id, "acme");
  EXPECT_EQ(created->tenant.state, store::TenantState::kActive);
  EXPECT_EQ(created->tenant.primary_dek_version, 1u);
  EXPECT_EQ(created->primary_dek_created_at, clock_.UnixSeconds());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());

  auto got = keys_->GetTenant(T("acme"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->tenant.primary_dek_version, 1u);
  EXPECT_EQ(keys_->GetTenant(T("nobody")).status().code(), StatusCode::kNotFound);

  auto page = keys_->ListTenants("", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->tenants.size(), 2u);
  EXPECT_EQ(page->tenants[0].id, "acme");
  EXPECT_EQ(page->tenants[1].id, "globex");
}

TEST_P(KeyManagerSuiteTest, DuplicateTenantIsAlreadyExists) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  EXPECT_EQ(keys_->CreateTenant(T("acme")).status().code(), StatusCode::kAlreadyExists);
}

TEST_P(KeyManagerSuiteTest, UnknownTenantIsNotFound) {
  EXPECT_EQ(keys_->Encrypt(T("nobody"), {}, Bytes("x")).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string acme_ct = Encrypt("acme", "x");
  EXPECT_EQ(Decrypt("nobody", acme_ct).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->RotateTenantDek(T("nobody")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->ShredTenant(T("nobody")).status().code(), StatusCode::kNotFound);
}

TEST_P(KeyManagerSuiteTest, AutoCreateMakesTheTenantOnFirstEncrypt) {
  ASSERT_NO_FATAL_FAILURE(Open(/*auto_create=*/true));
  std::string ct = Encrypt("newco", "hello");
  EXPECT_EQ(Decrypt("newco", ct).value(), "hello");
  EXPECT_TRUE(rig_->raw_store().GetTenant("newco").ok());
}

// --- Encrypt and Decrypt

TEST_P(KeyManagerSuiteTest, RoundTripsWithAndWithoutContext) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string ct = Encrypt("acme", "alice@example.com");
  EXPECT_EQ(Decrypt("acme", ct).value(), "alice@example.com");
  std::vector<ContextPair> ctx = {{"table", "users"}, {"column", "email"}};
  std::string ct2 = Encrypt("acme", "bob@example.com", ctx);
  EXPECT_EQ(Decrypt("acme", ct2, ctx).value(), "bob@example.com");
  EXPECT_NE(Encrypt("acme", "alice@example.com"), ct);  // a fresh nonce every time
}

TEST_P(KeyManagerSuiteTest, CiphertextSurvivesARestart) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::string ct = Encrypt("acme", "+1 555 0100");
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(Decrypt("acme", ct).value(), "+1 555 0100");
  EXPECT_EQ(keys_->primary_kek_version(), 1u);  // no second KEK on restart
}

TEST_P(KeyManagerSuiteTest, AnotherTenantsCiphertextFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  std::string ct = Encrypt("acme", "secret");
  ExpectDecryptionFailed(Decrypt("globex", ct));
}

TEST_P(KeyManagerSuiteTest, WrongOrMissingContextFailsUniformly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  std::vector<ContextPair> ctx = {{"column", "email"}};
  std::string ct = Encrypt("acme", "secret", ctx);
  ExpectDecryptionFailed(Decrypt("acme", ct));
  ExpectDecryptionFailed(Decrypt("acme", ct, {{"column", "phone"}}));
  ExpectDecryptionFailed(Decrypt("acme", ct, {{"column", "email"}, {"table", "users"}}));
  // And a context where there was none.
  std::string plain_ct = Encrypt("acme", "secret");
  ExpectDecryptionFailed(Decrypt("acme", plain_ct, ctx));
}

TEST_P(KeyManagerSuiteTest, UnknownDekVersionTamperingAndGarbageFailUniformly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string ct = Encrypt("acme", "secret");
  std::string other_version = ct;
  other_version[4] = 9;  // DEK version 9 in the header
  ExpectDecryptionFailed(Decrypt("acme", other_version));
  std::string flipped = ct;
  flipped.back() ^= 0x01;
  ExpectDecryptionFailed(Decrypt("acme", flipped));
  ExpectDecryptionFailed(Decrypt("acme", ct.substr(0, ct.size() - 1)));
  ExpectDecryptionFailed(Decrypt("acme", "not a ciphertext at all"));
  ExpectDecryptionFailed(Decrypt("acme", ""));
  EXPECT_EQ(Decrypt("acme", ct).value(), "secret");
}

// --- Rotation and shredding

TEST_P(KeyManagerSuiteTest, DekRotationKeepsOldCiphertextsReadable) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string v1 = Encrypt("acme", "under one");
  auto rotated = keys_->RotateTenantDek(T("acme"));
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->tenant.primary_dek_version, 2u);
  const std::string v2 = Encrypt("acme", "under two");
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());

  auto result = keys_->Encrypt(T("acme"), {}, Bytes("under three"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->dek_version, 3u);
  EXPECT_EQ(keys_->GetTenant(T("acme"))->tenant.primary_dek_version, 3u);
  keys_->cache().Clear();  // read every version back from the store
  auto d1 = keys_->Decrypt(T("acme"), {}, Bytes(v1));
  auto d2 = keys_->Decrypt(T("acme"), {}, Bytes(v2));
  ASSERT_TRUE(d1.ok() && d2.ok()) << d1.status() << " " << d2.status();
  EXPECT_EQ(d1->plaintext, "under one");
  EXPECT_EQ(d1->dek_version, 1u);
  EXPECT_EQ(d2->plaintext, "under two");
  EXPECT_EQ(d2->dek_version, 2u);
}

TEST_P(KeyManagerSuiteTest, ShreddedTenantIsFailedPreconditionForEveryKeyOperation) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  const std::string ct = Encrypt("acme", "gone for good");
  const std::string kept = Encrypt("globex", "still here");
  ASSERT_TRUE(keys_->ShredTenant(T("acme")).ok());

  EXPECT_EQ(keys_->Encrypt(T("acme"), {}, Bytes("x")).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(Decrypt("acme", ct).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(keys_->RotateTenantDek(T("acme")).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(keys_->ShredTenant(T("acme")).ok());  // again: nothing left to do
  EXPECT_EQ(rig_->raw_store().GetTenant("acme")->state, store::TenantState::kShredded);
  // Another replica that never cached the tenant is refused as well.
  auto other = AnotherReplica();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->Decrypt(T("acme"), {}, Bytes(ct)).status().code(),
            StatusCode::kFailedPrecondition);
  // Other tenants are untouched.
  EXPECT_EQ(Decrypt("globex", kept).value(), "still here");
}

TEST_P(KeyManagerSuiteTest, KekRotationSealsNewDeksUnderTheNewKekAndOldOnesStillDecrypt) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string before = Encrypt("acme", "alice@example.com");
  auto rotated = rig_->RotateKek();
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(*rotated, 2u);
  EXPECT_EQ(keys_->primary_kek_version(), 2u);

  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  EXPECT_EQ(StoredKekVersion("globex", 1), 2u);
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  EXPECT_EQ(StoredKekVersion("acme", 2), 2u);
  EXPECT_EQ(StoredKekVersion("acme", 1), 1u);  // not moved by itself
  keys_->cache().Clear();
  EXPECT_EQ(Decrypt("acme", before).value(), "alice@example.com");
}

// --- DEK version states: the minimum decryption version

void ExpectRetired(const absl::Status& status, uint32_t version) {
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(status, RetiredDekVersionError(version));
  EXPECT_NE(status.message().find(absl::StrCat("DEK version ", version, " is retired")),
            std::string_view::npos)
      << status;
}

// HMAC keys per DEK version (the Vault door's hmac/verify): derived, so replicas and
// restarts agree; each version its own; retired and shredded with the DEK.
TEST_P(KeyManagerSuiteTest, HmacKeysFollowTheDekVersions) {
  using crypto::HashAlgorithm;
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  auto v1 = keys_->Hmac(T("acme"), 0, HashAlgorithm::kSha256, Bytes("message"));
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(v1->dek_version, 1u);
  EXPECT_EQ(v1->mac.size(), 32u);
  EXPECT_EQ(keys_->Hmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("message"))->mac, v1->mac);
  EXPECT_EQ(keys_->Hmac(T("acme"), 0, HashAlgorithm::kSha512, Bytes("message"))->mac.size(), 64u);
  EXPECT_NE(keys_->Hmac(T("globex"), 0, HashAlgorithm::kSha256, Bytes("message"))->mac, v1->mac);
  EXPECT_NE(keys_->Hmac(T("acme"), 0, HashAlgorithm::kSha256, Bytes("messagE"))->mac, v1->mac);
  EXPECT_TRUE(*keys_->VerifyHmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("message"), v1->mac));
  EXPECT_FALSE(*keys_->VerifyHmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("messagE"), v1->mac));
  EXPECT_FALSE(*keys_->VerifyHmac(T("acme"), 1, HashAlgorithm::kSha384, Bytes("message"), v1->mac));

  // Another replica and a restart derive the same key.
  auto other = AnotherReplica();
  EXPECT_EQ(other->Hmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("message"))->mac, v1->mac);
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(keys_->Hmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("message"))->mac, v1->mac);

  // A rotation brings a new HMAC key; the old version still verifies until retired.
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  auto v2 = keys_->Hmac(T("acme"), 0, HashAlgorithm::kSha256, Bytes("message"));
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->dek_version, 2u);
  EXPECT_NE(v2->mac, v1->mac);
  EXPECT_TRUE(*keys_->VerifyHmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("message"), v1->mac));
  EXPECT_EQ(keys_->Hmac(T("acme"), 7, HashAlgorithm::kSha256, Bytes("m")).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->VerifyHmac(T("acme"), 0, HashAlgorithm::kSha256, Bytes("m"), v1->mac).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->Hmac(T("nobody"), 0, HashAlgorithm::kSha256, Bytes("m")).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 2).ok());
  EXPECT_EQ(keys_->VerifyHmac(T("acme"), 1, HashAlgorithm::kSha256, Bytes("message"), v1->mac).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(*keys_->PrimaryDekVersion(T("acme")), 2u);
  ASSERT_TRUE(keys_->ShredTenant(T("acme")).ok());
  EXPECT_EQ(keys_->Hmac(T("acme"), 0, HashAlgorithm::kSha256, Bytes("m")).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_P(KeyManagerSuiteTest, SetMinDecryptVersionRetiresOlderVersionsWithTheirOwnStatus) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string v1 = Encrypt("acme", "under one");
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  const std::string v2 = Encrypt("acme", "under two");
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  const std::string v3 = Encrypt("acme", "under three");
  ASSERT_EQ(Decrypt("acme", v1).value(), "under one");  // v1 is cached now

  std::vector<coord::InvalidationEvent> announced;
  keys_->SetChangeListener([&](const coord::InvalidationEvent& e) { announced.push_back(e); });
  auto set = keys_->SetMinDecryptVersion(T("acme"), 3);
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->tenant.min_decrypt_version, 3u);
  EXPECT_EQ(set->tenant.primary_dek_version, 3u);
  ASSERT_EQ(announced.size(), 1u);
  EXPECT_EQ(announced[0].kind, Kind::kTenant);
  EXPECT_EQ(announced[0].tenant_id, "acme");

  // At once on this node, cached or not; not the uniform "decryption failed".
  ExpectRetired(Decrypt("acme", v1).status(), 1);
  ExpectRetired(Decrypt("acme", v2).status(), 2);
  EXPECT_EQ(Decrypt("acme", v3).value(), "under three");
  EXPECT_EQ(keys_->GetTenant(T("acme"))->tenant.min_decrypt_version, 3u);

  auto versions = keys_->ListDekVersions(T("acme"));
  ASSERT_TRUE(versions.ok()) << versions.status();
  ASSERT_EQ(versions->size(), 3u);
  EXPECT_EQ((*versions)[0].state, store::DekState::kRetired);
  EXPECT_EQ((*versions)[1].state, store::DekState::kRetired);
  EXPECT_EQ((*versions)[2].state, store::DekState::kActive);
  for (const store::DekRecord& d : *versions) EXPECT_TRUE(d.wrapped.empty());

  // Another replica that never cached the tenant answers the same.
  auto other = AnotherReplica();
  ASSERT_NE(other, nullptr);
  ExpectRetired(other->Decrypt(T("acme"), {}, Bytes(v1)).status(), 1);
}

TEST_P(KeyManagerSuiteTest, AReplicaThatCachedARetiredVersionRefusesItAfterTheInvalidation) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string v1 = Encrypt("acme", "under one");
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  auto other = AnotherReplica();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->Decrypt(T("acme"), {}, Bytes(v1)).ok());  // cached there
  std::vector<coord::InvalidationEvent> announced;
  keys_->SetChangeListener([&](const coord::InvalidationEvent& e) { announced.push_back(e); });
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 2).ok());
  ASSERT_EQ(announced.size(), 1u);
  other->ApplyInvalidation(announced[0]);
  ExpectRetired(other->Decrypt(T("acme"), {}, Bytes(v1)).status(), 1);
}

TEST_P(KeyManagerSuiteTest, SetMinDecryptVersionRefusesBadValuesAndChangesNothing) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 2).ok());
  int notified = 0;
  keys_->SetChangeListener([&](const coord::InvalidationEvent&) { ++notified; });

  auto above = keys_->SetMinDecryptVersion(T("acme"), 4);
  EXPECT_EQ(above.status().code(), StatusCode::kFailedPrecondition) << above.status();
  EXPECT_NE(above.status().message().find("above the primary"), std::string_view::npos);
  auto below = keys_->SetMinDecryptVersion(T("acme"), 1);
  EXPECT_EQ(below.status().code(), StatusCode::kInvalidArgument) << below.status();
  EXPECT_EQ(keys_->SetMinDecryptVersion(T("acme"), 0).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->SetMinDecryptVersion(T("nobody"), 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(notified, 0);
  auto tenant = keys_->GetTenant(T("acme"));
  ASSERT_TRUE(tenant.ok());
  EXPECT_EQ(tenant->tenant.min_decrypt_version, 2u);

  // The primary itself may be the minimum: everything older is retired.
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 3).ok());
  ASSERT_TRUE(keys_->ShredTenant(T("acme")).ok());
  EXPECT_EQ(keys_->SetMinDecryptVersion(T("acme"), 3).status().code(),
            StatusCode::kFailedPrecondition);
}

// --- ReEncrypt

TEST_P(KeyManagerSuiteTest, ReEncryptMovesAnOldCiphertextToThePrimaryVersion) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string v1 = Encrypt("acme", "alice@example.com", {{"column", "email"}});
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());

  auto moved = keys_->ReEncrypt(T("acme"), Ctx({{"column", "email"}}), Bytes(v1));
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->source_dek_version, 1u);
  EXPECT_EQ(moved->dek_version, 3u);
  EXPECT_EQ(Decrypt("acme", moved->ciphertext, {{"column", "email"}}).value(), "alice@example.com");
  EXPECT_EQ(keys_->Decrypt(T("acme"), Ctx({{"column", "email"}}), Bytes(moved->ciphertext))
                ->dek_version,
            3u);
  EXPECT_EQ(keys_->stats().reencryptions, 1u);

  // Once the old versions are retired, the moved ciphertext still decrypts.
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 3).ok());
  EXPECT_EQ(Decrypt("acme", moved->ciphertext, {{"column", "email"}}).value(), "alice@example.com");
  ExpectRetired(Decrypt("acme", v1, {{"column", "email"}}).status(), 1);
}

TEST_P(KeyManagerSuiteTest, ReEncryptUnderThePrimaryReSealsWithAFreshNonceAndCanChangeTheContext) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string ct = Encrypt("acme", "secret", {{"row", "1"}});
  auto same = keys_->ReEncrypt(T("acme"), Ctx({{"row", "1"}}), Bytes(ct));
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->source_dek_version, 1u);
  EXPECT_EQ(same->dek_version, 1u);
  EXPECT_NE(same->ciphertext, ct);
  EXPECT_NE(same->ciphertext.substr(5, 12), ct.substr(5, 12));  // the nonce
  EXPECT_EQ(Decrypt("acme", same->ciphertext, {{"row", "1"}}).value(), "secret");

  const EncryptionContext moved_to = Ctx({{"row", "2"}, {"table", "users"}});
  auto rebound = keys_->ReEncrypt(T("acme"), Ctx({{"row", "1"}}), Bytes(ct), &moved_to);
  ASSERT_TRUE(rebound.ok()) << rebound.status();
  EXPECT_EQ(Decrypt("acme", rebound->ciphertext, {{"table", "users"}, {"row", "2"}}).value(),
            "secret");
  ExpectDecryptionFailed(Decrypt("acme", rebound->ciphertext, {{"row", "1"}}));

  // A new context with a duplicate key is refused, nothing sealed.
  const EncryptionContext duplicate = Ctx({{"k", "a"}, {"k", "b"}});
  EXPECT_EQ(keys_->ReEncrypt(T("acme"), Ctx({{"row", "1"}}), Bytes(ct), &duplicate).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(KeyManagerSuiteTest, ReEncryptFailsLikeDecryptForOtherTenantsContextsAndGarbage) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  const std::string theirs = Encrypt("globex", "globex data");
  const std::string ours = Encrypt("acme", "acme data", {{"row", "1"}});
  auto expect_failed = [](const absl::StatusOr<ReEncryptResult>& r) {
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status();
    EXPECT_EQ(r.status().message(), "decryption failed");
  };
  expect_failed(keys_->ReEncrypt(T("acme"), {}, Bytes(theirs)));
  expect_failed(keys_->ReEncrypt(T("acme"), Ctx({{"row", "2"}}), Bytes(ours)));
  expect_failed(keys_->ReEncrypt(T("acme"), {}, Bytes("not a ciphertext")));
  std::string unknown_version = ours;
  unknown_version[4] = 9;
  expect_failed(keys_->ReEncrypt(T("acme"), Ctx({{"row", "1"}}), Bytes(unknown_version)));
  EXPECT_EQ(keys_->ReEncrypt(T("nobody"), {}, Bytes(ours)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(keys_->stats().reencryptions, 0u);
  // The tenant still works.
  EXPECT_TRUE(keys_->ReEncrypt(T("acme"), Ctx({{"row", "1"}}), Bytes(ours)).ok());
}

TEST_P(KeyManagerSuiteTest, ReEncryptRefusesARetiredVersionAndAShreddedTenant) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string v1 = Encrypt("acme", "old");
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 2).ok());
  ExpectRetired(keys_->ReEncrypt(T("acme"), {}, Bytes(v1)).status(), 1);
  const std::string v2 = Encrypt("acme", "new");
  ASSERT_TRUE(keys_->ShredTenant(T("acme")).ok());
  EXPECT_EQ(keys_->ReEncrypt(T("acme"), {}, Bytes(v2)).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_P(KeyManagerSuiteTest, ShredTenantNamesEveryDestroyedVersion) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("acme"), 2).ok());
  clock_.Advance(std::chrono::seconds(5));
  auto shred = keys_->ShredTenant(T("acme"));
  ASSERT_TRUE(shred.ok()) << shred.status();
  EXPECT_EQ(shred->destroyed_dek_versions, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(shred->shredded_at, clock_.UnixSeconds());
  EXPECT_FALSE(shred->already_shredded);
  auto again = keys_->ShredTenant(T("acme"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_shredded);
  EXPECT_EQ(again->destroyed_dek_versions, (std::vector<uint32_t>{1, 2, 3}));
  auto versions = keys_->ListDekVersions(T("acme"));
  ASSERT_TRUE(versions.ok());
  for (const store::DekRecord& d : *versions) EXPECT_EQ(d.state, store::DekState::kDestroyed);
}

// --- Coherence between replicas

TEST_P(KeyManagerSuiteTest, ATenantInvalidationDropsThatTenantOnly) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  ASSERT_EQ(EncryptingVersion(*keys_, "acme"), 1u);  // cached here
  ASSERT_EQ(EncryptingVersion(*keys_, "globex"), 1u);
  auto other = AnotherReplica();
  ASSERT_NE(other, nullptr);
  std::vector<coord::InvalidationEvent> announced;
  other->SetChangeListener([&](const coord::InvalidationEvent& e) { announced.push_back(e); });
  ASSERT_TRUE(other->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(other->RotateTenantDek(T("globex")).ok());
  ASSERT_EQ(announced.size(), 2u);
  EXPECT_EQ(announced[0].kind, Kind::kTenant);
  EXPECT_EQ(announced[0].tenant_id, "acme");

  EXPECT_EQ(EncryptingVersion(*keys_, "acme"), 1u);  // not told yet: its cache holds
  keys_->ApplyInvalidation(announced[0]);
  EXPECT_EQ(EncryptingVersion(*keys_, "acme"), 2u);
  EXPECT_EQ(EncryptingVersion(*keys_, "globex"), 1u);  // another tenant's event is not this one's
}

// A cache-wide flush keeps the entries (marked stale, so nothing is lost while the store
// is down: issue 9) and every next use reloads them.
TEST_P(KeyManagerSuiteTest, AnInvalidationOfAllRevalidatesEveryCachedDek) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  ASSERT_EQ(EncryptingVersion(*keys_, "acme"), 1u);
  ASSERT_EQ(EncryptingVersion(*keys_, "globex"), 1u);
  auto other = AnotherReplica();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->RotateTenantDek(T("acme")).ok());
  ASSERT_TRUE(other->RotateTenantDek(T("globex")).ok());
  keys_->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kAll});
  EXPECT_EQ(keys_->cached_deks(), 2u);  // kept, stale
  EXPECT_EQ(EncryptingVersion(*keys_, "acme"), 2u);
  EXPECT_EQ(EncryptingVersion(*keys_, "globex"), 2u);
}

TEST_P(KeyManagerSuiteTest, AKekInvalidationRefreshesTheRingAndKeepsCachedDeks) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const std::string ct = Encrypt("acme", "cached");
  auto rotated = rig_->RotateKekOnAnotherReplica();
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  ASSERT_EQ(*rotated, 2u);
  EXPECT_EQ(keys_->primary_kek_version(), 1u);  // not told yet

  const uint64_t reads = rig_->store().tenant_dek_reads();
  keys_->ApplyInvalidation(coord::InvalidationEvent{.kind = Kind::kKek});
  EXPECT_EQ(keys_->primary_kek_version(), 2u);
  EXPECT_EQ(Decrypt("acme", ct).value(), "cached");
  EXPECT_EQ(rig_->store().tenant_dek_reads(), reads);  // the DEK was still cached
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  EXPECT_EQ(StoredKekVersion("globex", 1), 2u);
}

// --- The data path under load and outages

TEST_P(KeyManagerSuiteTest, BurstOfConcurrentEncryptsForAnUncachedTenantLoadsTheDekOnce) {
  ASSERT_TRUE(keys_->CreateTenant(T("burst")).ok());
  keys_->cache().Clear();
  const uint64_t reads_before = rig_->store().tenant_dek_reads();
  const uint64_t opens_before = rig_->hsm_opens();
  constexpr int kRequests = 1000;
  std::latch start(kRequests);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  threads.reserve(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      if (keys_->Encrypt(T("burst"), {}, Bytes("555-0100")).ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(rig_->store().tenant_dek_reads() - reads_before, 1u);
  EXPECT_EQ(rig_->hsm_opens() - opens_before, 1u);
}

TEST_P(KeyManagerSuiteTest, StoreOutageServesCachedTenantsAndFailsFastForOthers) {
  ASSERT_TRUE(keys_->CreateTenant(T("cached")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("cold")).ok());
  std::string ct = Encrypt("cached", "still here");
  keys_->cache().InvalidateTenant("cold");
  rig_->store().SetUnavailable(true);
  EXPECT_EQ(Decrypt("cached", ct).value(), "still here");
  Encrypt("cached", "new write");
  EXPECT_EQ(keys_->Encrypt(T("cold"), {}, Bytes("x")).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(keys_->CreateTenant(T("new")).status().code(), StatusCode::kUnavailable);
  // Past the 1 h TTL the cached DEK is still served while the store is down.
  clock_.Advance(std::chrono::hours(2));
  EXPECT_EQ(Decrypt("cached", ct).value(), "still here");
  rig_->store().SetUnavailable(false);
  EXPECT_TRUE(keys_->Encrypt(T("cold"), {}, Bytes("x")).ok());
}

// --- Encryption counts and the budget

TEST_P(KeyManagerSuiteTest, EncryptionCountsReachTheStoreAndABudgetRotatesTheDek) {
  ASSERT_NO_FATAL_FAILURE(Open(/*auto_create=*/false, /*budget=*/10));
  ASSERT_TRUE(keys_->CreateTenant(T("counted")).ok());
  for (int i = 0; i < 6; ++i) Encrypt("counted", "x");
  ASSERT_EQ(keys_->FlushEncryptionCounts(/*all=*/true).value(), 0);
  EXPECT_EQ(rig_->raw_store().GetTenantDek("counted", 1)->dek.encryptions, 6u);
  EXPECT_EQ(keys_->FlushEncryptionCounts(/*all=*/true).value(), 0);  // nothing new: nothing added
  EXPECT_EQ(rig_->raw_store().GetTenantDek("counted", 1)->dek.encryptions, 6u);

  for (int i = 0; i < 5; ++i) Encrypt("counted", "x");  // 11 > budget of 10
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 1);
  EXPECT_EQ(rig_->raw_store().GetTenant("counted")->primary_dek_version, 2u);
  EXPECT_EQ(EncryptingVersion(*keys_, "counted"), 2u);
}

TEST_P(KeyManagerSuiteTest, CountsOfEntriesThatLeftTheCacheAreStillFlushed) {
  ASSERT_TRUE(keys_->CreateTenant(T("evicted")).ok());
  for (int i = 0; i < 3; ++i) Encrypt("evicted", "x");
  keys_->cache().InvalidateTenant("evicted");  // as an epoch change or a bus event would
  for (int i = 0; i < 2; ++i) Encrypt("evicted", "x");
  keys_->cache().Clear();
  // Left the cache: the counts are kept without the key and follow the same policy
  // (a few wait for their max age), then reach the store.
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(rig_->raw_store().GetTenantDek("evicted", 1)->dek.encryptions, 0u);
  clock_.Advance(std::chrono::seconds(301));
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(rig_->raw_store().GetTenantDek("evicted", 1)->dek.encryptions, 5u);
  ASSERT_TRUE(keys_->FlushEncryptionCounts(/*all=*/true).ok());
  EXPECT_EQ(rig_->raw_store().GetTenantDek("evicted", 1)->dek.encryptions, 5u);  // once
}

// A DEK that leaves the cache with many pending counts has them written at the next
// flush; one reloaded meanwhile keeps counting apart, and nothing is counted twice.
TEST_P(KeyManagerSuiteTest, AnEvictedDeksCountsAndItsReloadsCountsAddUp) {
  ASSERT_TRUE(keys_->CreateTenant(T("churn")).ok());
  for (int i = 0; i < 1000; ++i) Encrypt("churn", "x");
  keys_->cache().InvalidateTenant("churn");
  for (int i = 0; i < 7; ++i) Encrypt("churn", "x");  // reloaded
  keys_->cache().InvalidateTenant("churn");
  Encrypt("churn", "x");  // reloaded again
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(rig_->raw_store().GetTenantDek("churn", 1)->dek.encryptions, 1007u);
  ASSERT_TRUE(keys_->FlushEncryptionCounts(/*all=*/true).ok());
  EXPECT_EQ(rig_->raw_store().GetTenantDek("churn", 1)->dek.encryptions, 1008u);
}

TEST_P(KeyManagerSuiteTest, CountsSurviveAStoreOutageUntilTheNextFlush) {
  ASSERT_TRUE(keys_->CreateTenant(T("outage")).ok());
  for (int i = 0; i < 3; ++i) Encrypt("outage", "x");
  rig_->store().SetUnavailable(true);
  EXPECT_FALSE(keys_->FlushEncryptionCounts(/*all=*/true).ok());
  rig_->store().SetUnavailable(false);
  ASSERT_TRUE(keys_->FlushEncryptionCounts(/*all=*/true).ok());
  EXPECT_EQ(rig_->raw_store().GetTenantDek("outage", 1)->dek.encryptions, 3u);
}

// The budget holds for counts held after their DEK left the cache: the flush that writes
// them rotates the tenant when they take the DEK past its budget.
TEST_P(KeyManagerSuiteTest, ABudgetCrossedByTheCountsOfAnEvictedDekRotatesIt) {
  ASSERT_NO_FATAL_FAILURE(Open(/*auto_create=*/false, /*budget=*/10));
  ASSERT_TRUE(keys_->CreateTenant(T("evicted")).ok());
  for (int i = 0; i < 6; ++i) Encrypt("evicted", "x");
  ASSERT_EQ(keys_->FlushEncryptionCounts(/*all=*/true).value(), 0);
  for (int i = 0; i < 5; ++i) Encrypt("evicted", "x");  // 11 > budget of 10
  keys_->cache().Clear();
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 1) << "near the budget: written and rotated";
  EXPECT_EQ(rig_->raw_store().GetTenantDek("evicted", 1)->dek.encryptions, 11u);
  EXPECT_EQ(rig_->raw_store().GetTenant("evicted")->primary_dek_version, 2u);
}

// A flush that fails leaves a cached DEK's count on its entry, so the entry's budget
// check still sees everything it has counted.
TEST_P(KeyManagerSuiteTest, AFailedFlushKeepsACachedDeksCountOnItsEntry) {
  ASSERT_NO_FATAL_FAILURE(Open(/*auto_create=*/false, /*budget=*/10));
  ASSERT_TRUE(keys_->CreateTenant(T("outage")).ok());
  for (int i = 0; i < 6; ++i) Encrypt("outage", "x");
  rig_->store().SetUnavailable(true);
  EXPECT_FALSE(keys_->FlushEncryptionCounts(/*all=*/true).ok());
  rig_->store().SetUnavailable(false);
  ASSERT_EQ(keys_->FlushEncryptionCounts().value(), 0);  // due at once after the failure
  EXPECT_EQ(rig_->raw_store().GetTenantDek("outage", 1)->dek.encryptions, 6u);
  for (int i = 0; i < 5; ++i) Encrypt("outage", "x");  // 11 > budget of 10
  EXPECT_EQ(keys_->FlushEncryptionCounts().value(), 1);
  EXPECT_EQ(rig_->raw_store().GetTenant("outage")->primary_dek_version, 2u);
}

// The usage flush policy (KeyManagerOptions): a count of 1000 or more is written at the
// next flush, a smaller one once its max age (300 s) has passed, each then again only
// after another max age; a flush with `all` (shutdown) writes everything. At 100,000
// tenants a flush every 10 s wrote nearly every DEK row each time.
TEST_P(KeyManagerSuiteTest, ASmallCountWaitsForItsMaxAgeAndALargeOneIsWrittenAtTheNextFlush) {
  ASSERT_TRUE(keys_->CreateTenant(T("few")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("many")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("quiet")).ok());
  auto stored = [this](const std::string& tenant) {
    return rig_->raw_store().GetTenantDek(tenant, 1)->dek.encryptions;
  };
  for (int i = 0; i < 5; ++i) Encrypt("few", "x");
  for (int i = 0; i < 1000; ++i) Encrypt("many", "x");
  Encrypt("quiet", "x");
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(stored("few"), 0u);
  EXPECT_EQ(stored("many"), 1000u);
  EXPECT_EQ(stored("quiet"), 0u);

  clock_.Advance(std::chrono::seconds(301));
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(stored("few"), 5u);
  EXPECT_EQ(stored("quiet"), 1u);

  for (int i = 0; i < 3; ++i) Encrypt("few", "x");
  clock_.Advance(std::chrono::seconds(10));
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(stored("few"), 5u) << "written 10 s ago: waits for its max age again";
  clock_.Advance(std::chrono::seconds(291));
  ASSERT_TRUE(keys_->FlushEncryptionCounts().ok());
  EXPECT_EQ(stored("few"), 8u);

  Encrypt("quiet", "x");
  ASSERT_TRUE(keys_->FlushEncryptionCounts(/*all=*/true).ok());
  EXPECT_EQ(stored("quiet"), 2u);
}

// --- Named keys and data keys (issue 13)

KeyRef Named(const std::string& name) { return KeyRef::ForNamedKey(name).value(); }

TEST_P(KeyManagerSuiteTest, NamedKeyAndTenantOfTheSameNameAreDifferentKeySets) {
  const KeyRef named = Named("acme");
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  auto created = keys_->CreateTenant(named.storage_id());
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->tenant.id, "key:acme");
  auto tenant_ct = keys_->Encrypt(T("acme"), {}, Bytes("x"));
  ASSERT_TRUE(tenant_ct.ok());
  EXPECT_EQ(keys_->Decrypt(named.storage_id(), {}, Bytes(tenant_ct->ciphertext)).status().code(),
            StatusCode::kInvalidArgument);
  auto named_ct = keys_->Encrypt(named.storage_id(), {}, Bytes("x"));
  ASSERT_TRUE(named_ct.ok());
  EXPECT_EQ(keys_->Decrypt(T("acme"), {}, Bytes(named_ct->ciphertext)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->Decrypt(named.storage_id(), {}, Bytes(named_ct->ciphertext))->plaintext, "x");
}

TEST_P(KeyManagerSuiteTest, AutoCreateNeverMakesANamedKey) {
  ASSERT_NO_FATAL_FAILURE(Open(/*auto_create=*/true));
  EXPECT_EQ(keys_->GenerateDataKey(Named("backup").storage_id(), {}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(rig_->raw_store().GetTenant("key:backup").status().code(), StatusCode::kNotFound);
}

TEST_P(KeyManagerSuiteTest, DataKeyIsThirtyTwoRandomBytesWrappedAsAFieldCiphertext) {
  const TenantId backup = Named("backup").storage_id();
  ASSERT_TRUE(keys_->CreateTenant(backup).ok());
  const EncryptionContext ctx = Ctx({{"job", "nightly"}});
  auto a = keys_->GenerateDataKey(backup, ctx);
  auto b = keys_->GenerateDataKey(backup, ctx);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  ASSERT_EQ(a->plaintext.size(), kDataKeySize);
  EXPECT_NE(std::string(a->plaintext.span().begin(), a->plaintext.span().end()),
            std::string(b->plaintext.span().begin(), b->plaintext.span().end()));
  EXPECT_EQ(a->wrapped.size(), kDataKeySize + kCiphertextOverhead);
  // The wrapped form is Encrypt's output: Decrypt opens it to the key bytes.
  auto opened = keys_->Decrypt(backup, ctx, Bytes(a->wrapped));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->plaintext, std::string(a->plaintext.span().begin(), a->plaintext.span().end()));
  auto unwrapped = keys_->DecryptDataKey(backup, ctx, Bytes(a->wrapped));
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
  EXPECT_TRUE(std::equal(unwrapped->plaintext.span().begin(), unwrapped->plaintext.span().end(),
                         a->plaintext.span().begin(), a->plaintext.span().end()));
  EXPECT_EQ(unwrapped->dek_version, a->dek_version);

  auto without = keys_->GenerateDataKey(backup, ctx, /*with_plaintext=*/false);
  ASSERT_TRUE(without.ok());
  EXPECT_TRUE(without->plaintext.empty());
  EXPECT_TRUE(keys_->DecryptDataKey(backup, ctx, Bytes(without->wrapped)).ok());
}

TEST_P(KeyManagerSuiteTest, DecryptDataKeyRefusesAnotherKeySetContextOrANonKeyCiphertext) {
  const TenantId backup = Named("backup").storage_id();
  ASSERT_TRUE(keys_->CreateTenant(backup).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const EncryptionContext ctx = Ctx({{"job", "nightly"}});
  auto key = keys_->GenerateDataKey(backup, ctx);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(keys_->DecryptDataKey(T("acme"), ctx, Bytes(key->wrapped)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->DecryptDataKey(backup, Ctx({{"job", "other"}}), Bytes(key->wrapped))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(keys_->DecryptDataKey(backup, {}, Bytes(key->wrapped)).status().code(),
            StatusCode::kInvalidArgument);
  // A field ciphertext of something that is not a 32-byte key is no data key.
  auto field = keys_->Encrypt(backup, ctx, Bytes("not a key"));
  ASSERT_TRUE(field.ok());
  absl::Status not_key = keys_->DecryptDataKey(backup, ctx, Bytes(field->ciphertext)).status();
  EXPECT_EQ(not_key.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(not_key.message(), "decryption failed");
  EXPECT_EQ(keys_->DecryptDataKey(Named("nobody").storage_id(), ctx, Bytes(key->wrapped))
                .status()
                .code(),
            StatusCode::kNotFound);
}

TEST_P(KeyManagerSuiteTest, NamedKeyDataKeysSurviveRotationAndDieWithAShred) {
  const TenantId backup = Named("backup").storage_id();
  ASSERT_TRUE(keys_->CreateTenant(backup).ok());
  auto key = keys_->GenerateDataKey(backup, {});
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(keys_->RotateTenantDek(backup).ok());
  auto after = keys_->DecryptDataKey(backup, {}, Bytes(key->wrapped));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->dek_version, 1u);
  EXPECT_EQ(keys_->GenerateDataKey(backup, {})->dek_version, 2u);
  ASSERT_TRUE(keys_->ShredTenant(backup).ok());
  EXPECT_EQ(keys_->DecryptDataKey(backup, {}, Bytes(key->wrapped)).status().code(),
            StatusCode::kFailedPrecondition);
}

// --- Blind-index keys (issue 13)

std::string IndexOf(KeyManager& keys, const KeyRef& ref, const std::string& value,
                    uint32_t* version = nullptr, std::string* previous = nullptr) {
  auto index_keys = keys.GetBlindIndexKeys(ref);
  EXPECT_TRUE(index_keys.ok()) << index_keys.status();
  if (!index_keys.ok()) return "";
  auto n = NormalizeForIndex("email", value);
  auto index = ComputeBlindIndex(*index_keys->current->mac_key, "email", *n);
  if (version != nullptr) *version = index_keys->current->version;
  if (previous != nullptr) {
    previous->clear();
    if (index_keys->previous != nullptr) {
      auto old = ComputeBlindIndex(*index_keys->previous->mac_key, "email", *n);
      previous->assign(old->begin(), old->end());
    }
  }
  return std::string(index->begin(), index->end());
}

TEST_P(KeyManagerSuiteTest, BlindIndexKeysArePerKeySetStableAndKeptApartFromDeks) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  const KeyRef acme = KeyRef::ForTenant("acme").value();
  const KeyRef globex = KeyRef::ForTenant("globex").value();
  const std::string a1 = IndexOf(*keys_, acme, " Alice@Example.COM ");
  EXPECT_EQ(a1.size(), kBlindIndexSize);
  EXPECT_EQ(IndexOf(*keys_, acme, "alice@example.com"), a1);
  EXPECT_NE(IndexOf(*keys_, globex, "alice@example.com"), a1);
  // Stored wrapped like a DEK in a row of its own, never due for scheduled rotation,
  // and the tenant's DEK versions are untouched.
  EXPECT_EQ(rig_->raw_store().GetTenant("bidx:acme")->primary_dek_version, 1u);
  EXPECT_GT(*rig_->raw_store().GetTenantRotationPeriod("bidx:acme"), int64_t{50} * 365 * 86400);
  EXPECT_EQ(rig_->raw_store().ListDeks("acme")->size(), 1u);
  // The same after a restart (a new cache, the key unwrapped again) and a DEK rotation.
  ASSERT_TRUE(keys_->RotateTenantDek(T("acme")).ok());
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(IndexOf(*keys_, acme, "alice@example.com"), a1);
  // Unknown key sets are not given one.
  EXPECT_EQ(keys_->GetBlindIndexKeys(KeyRef::ForTenant("nobody").value()).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(rig_->raw_store().GetTenant("bidx:nobody").status().code(), StatusCode::kNotFound);
}

TEST_P(KeyManagerSuiteTest, BlindIndexRotationReturnsOldAndNewUntilFinished) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const KeyRef acme = KeyRef::ForTenant("acme").value();
  uint32_t version = 0;
  std::string previous;
  const std::string v1 = IndexOf(*keys_, acme, "alice@example.com", &version, &previous);
  EXPECT_EQ(version, 1u);
  EXPECT_TRUE(previous.empty());
  EXPECT_EQ(keys_->FinishBlindIndexRotation(acme).status().code(),
            StatusCode::kFailedPrecondition);

  auto rotated = keys_->RotateBlindIndexKey(acme);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  EXPECT_EQ(rotated->current, 2u);
  EXPECT_EQ(rotated->previous, 1u);
  const std::string v2 = IndexOf(*keys_, acme, "alice@example.com", &version, &previous);
  EXPECT_EQ(version, 2u);
  EXPECT_NE(v2, v1);
  EXPECT_EQ(previous, v1);  // the re-index window: the old index still comes back
  // Another replica sees the window too.
  auto other = AnotherReplica();
  EXPECT_EQ(IndexOf(*other, acme, "alice@example.com", &version, &previous), v2);
  EXPECT_EQ(previous, v1);
  EXPECT_EQ(keys_->RotateBlindIndexKey(acme).status().code(), StatusCode::kFailedPrecondition);

  auto finished = keys_->FinishBlindIndexRotation(acme);
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->current, 2u);
  EXPECT_EQ(IndexOf(*keys_, acme, "alice@example.com", &version, &previous), v2);
  EXPECT_TRUE(previous.empty());
}

TEST_P(KeyManagerSuiteTest, ShreddingAKeySetShredsItsBlindIndexKeys) {
  ASSERT_TRUE(keys_->CreateTenant(T("acme")).ok());
  const KeyRef acme = KeyRef::ForTenant("acme").value();
  IndexOf(*keys_, acme, "alice@example.com");
  ASSERT_TRUE(keys_->ShredTenant(T("acme")).ok());
  EXPECT_EQ(rig_->raw_store().GetTenant("bidx:acme")->state, store::TenantState::kShredded);
  EXPECT_EQ(keys_->GetBlindIndexKeys(acme).status().code(), StatusCode::kFailedPrecondition);
  // A key set shredded before its first index gets none.
  ASSERT_TRUE(keys_->CreateTenant(T("globex")).ok());
  ASSERT_TRUE(keys_->ShredTenant(T("globex")).ok());
  EXPECT_EQ(keys_->GetBlindIndexKeys(KeyRef::ForTenant("globex").value()).status().code(),
            StatusCode::kFailedPrecondition);
}


// --- Raw AEAD (src/crypto/raw_aead.h: the XKS proxy API shape)

std::vector<uint8_t> V(const std::string& s) { return {s.begin(), s.end()}; }

RawCiphertextView View(const RawCiphertext& c) {
  return RawCiphertextView{.iv = c.iv, .ciphertext = c.ciphertext, .tag = c.tag, .metadata = c.metadata};
}

TEST_P(KeyManagerSuiteTest, RawCiphertextsRoundTripWithAndWithoutAad) {
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  for (const std::string aad : {std::string(), std::string("project=nile,department=marketing")}) {
    auto sealed = keys_->RawEncrypt(T("xks"), Bytes(aad), Bytes("Hello World!"));
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    EXPECT_EQ(sealed->iv.size(), 12u);
    EXPECT_EQ(sealed->tag.size(), 16u);
    EXPECT_EQ(sealed->ciphertext.size(), 12u);  // as long as the plaintext
    EXPECT_LE(sealed->metadata.size(), 20u);
    EXPECT_NE(std::string(sealed->ciphertext.begin(), sealed->ciphertext.end()), "Hello World!");
    auto opened = keys_->RawDecrypt(T("xks"), Bytes(aad), View(*sealed));
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(opened->plaintext, "Hello World!");
    EXPECT_EQ(opened->dek_version, sealed->dek_version);
  }
}

TEST_P(KeyManagerSuiteTest, RawCiphertextsFollowRotationThroughTheirMetadata) {
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  auto before = keys_->RawEncrypt(T("xks"), Bytes("aad"), Bytes("one"));
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(keys_->RotateTenantDek(T("xks")).ok());
  auto after = keys_->RawEncrypt(T("xks"), Bytes("aad"), Bytes("two"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->dek_version, 1u);
  EXPECT_EQ(after->dek_version, 2u);
  EXPECT_NE(before->metadata, after->metadata);
  EXPECT_EQ(keys_->RawDecrypt(T("xks"), Bytes("aad"), View(*before))->plaintext, "one");
  EXPECT_EQ(keys_->RawDecrypt(T("xks"), Bytes("aad"), View(*after))->plaintext, "two");
  // Retiring version 1 refuses the old ciphertext with the retired status.
  ASSERT_TRUE(keys_->SetMinDecryptVersion(T("xks"), 2).ok());
  auto retired = keys_->RawDecrypt(T("xks"), Bytes("aad"), View(*before));
  EXPECT_EQ(retired.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(keys_->RawDecrypt(T("xks"), Bytes("aad"), View(*after)).ok());
}

TEST_P(KeyManagerSuiteTest, RawDecryptRefusesAnyChangedPieceWithOneAnswer) {
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  ASSERT_TRUE(keys_->CreateTenant(T("other")).ok());
  auto sealed = keys_->RawEncrypt(T("xks"), Bytes("aad"), Bytes("secret bytes"));
  ASSERT_TRUE(sealed.ok());
  const auto expect_failed = [&](const std::string& tenant, const std::string& aad,
                                 const RawCiphertext& c) {
    auto opened = keys_->RawDecrypt(T(tenant), Bytes(aad), View(c));
    EXPECT_EQ(opened.status().code(), StatusCode::kInvalidArgument) << opened.status();
    EXPECT_EQ(opened.status().message(), "decryption failed");
  };
  expect_failed("xks", "AAD", *sealed);    // other AAD
  expect_failed("xks", "", *sealed);       // no AAD
  expect_failed("other", "aad", *sealed);  // another tenant's key
  for (auto field : {&RawCiphertext::iv, &RawCiphertext::ciphertext, &RawCiphertext::tag}) {
    RawCiphertext changed = *sealed;
    (changed.*field)[0] ^= 1;
    expect_failed("xks", "aad", changed);
  }
  RawCiphertext no_metadata = *sealed;
  no_metadata.metadata.clear();
  expect_failed("xks", "aad", no_metadata);
  RawCiphertext other_version = *sealed;
  other_version.metadata = V(std::string("\x01\x00\x00\x00\x07", 5));  // a version never made
  expect_failed("xks", "aad", other_version);
  RawCiphertext garbage = *sealed;
  garbage.metadata = V("key_version=1");
  expect_failed("xks", "aad", garbage);
  // Still intact.
  EXPECT_TRUE(keys_->RawDecrypt(T("xks"), Bytes("aad"), View(*sealed)).ok());
}

TEST_P(KeyManagerSuiteTest, RawMetadataCannotBeMovedIntoTheAad) {
  // The specification's example of why the lengths are in the GCM AAD: encrypt without
  // AAD, then decrypt with the metadata given as AAD and no metadata.
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  auto sealed = keys_->RawEncrypt(T("xks"), {}, Bytes("data key"));
  ASSERT_TRUE(sealed.ok());
  RawCiphertext moved = *sealed;
  moved.metadata.clear();
  EXPECT_FALSE(keys_->RawDecrypt(T("xks"), sealed->metadata, View(moved)).ok());
}

TEST_P(KeyManagerSuiteTest, RawIntegrityValueIsTheSha256OfThePiecesAfterAVerifiedDecrypt) {
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  auto plain = keys_->RawEncrypt(T("xks"), Bytes("aad"), Bytes("data key"));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->integrity_value.empty());
  auto sealed = keys_->RawEncrypt(T("xks"), Bytes("aad"), Bytes("data key"), true);
  ASSERT_TRUE(sealed.ok());
  std::string all = "aad";
  for (const auto* part : {&sealed->metadata, &sealed->iv, &sealed->ciphertext, &sealed->tag}) {
    all.append(part->begin(), part->end());
  }
  const crypto::Sha256Digest expected = crypto::Sha256(all);
  EXPECT_EQ(sealed->integrity_value, std::vector<uint8_t>(expected.begin(), expected.end()));
}

TEST_P(KeyManagerSuiteTest, RawCallsKnowUnknownAndShreddedKeys) {
  auto missing = keys_->RawEncrypt(T("nobody"), {}, Bytes("x"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  auto sealed = keys_->RawEncrypt(T("xks"), {}, Bytes("x"));
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(keys_->RawDecrypt(T("nobody"), {}, View(*sealed)).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(keys_->ShredTenant(T("xks")).ok());
  EXPECT_EQ(keys_->RawEncrypt(T("xks"), {}, Bytes("x")).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(keys_->RawDecrypt(T("xks"), {}, View(*sealed)).status().code(),
            StatusCode::kFailedPrecondition);
  // AAD over the raw limit is the caller's error.
  ASSERT_TRUE(keys_->CreateTenant(T("big")).ok());
  std::string aad(crypto::kMaxRawAadBytes + 1, 'a');
  EXPECT_EQ(keys_->RawEncrypt(T("big"), Bytes(aad), Bytes("x")).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_P(KeyManagerSuiteTest, RawAndFieldCiphertextsDoNotCross) {
  ASSERT_TRUE(keys_->CreateTenant(T("xks")).ok());
  // A field ciphertext cut into raw pieces (v1: 0x01 | u32 version | nonce 12 | ct | tag 16).
  const std::string field = Encrypt("xks", "same plaintext");
  ASSERT_EQ(field.size(), 33u + 14u);
  const std::vector<uint8_t> f(field.begin(), field.end());
  RawCiphertextView view{.iv = std::span<const uint8_t>(f).subspan(5, 12),
                         .ciphertext = std::span<const uint8_t>(f).subspan(17, 14),
                         .tag = std::span<const uint8_t>(f).subspan(31, 16),
                         .metadata = {}};
  const std::vector<uint8_t> metadata = V(std::string("\x01\x00\x00\x00\x01", 5));
  view.metadata = metadata;
  EXPECT_FALSE(keys_->RawDecrypt(T("xks"), {}, view).ok());
  // And a raw ciphertext is no field ciphertext.
  auto sealed = keys_->RawEncrypt(T("xks"), {}, Bytes("same plaintext"));
  ASSERT_TRUE(sealed.ok());
  std::string as_field("\x01\x00\x00\x00\x01", 5);
  as_field.append(sealed->iv.begin(), sealed->iv.end());
  as_field.append(sealed->ciphertext.begin(), sealed->ciphertext.end());
  as_field.append(sealed->tag.begin(), sealed->tag.end());
  EXPECT_FALSE(Decrypt("xks", as_field).ok());
}

}  // namespace
}  // namespace kms::keys::suite
